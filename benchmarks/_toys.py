"""The trivial cell the overhead benchmarks measure: ``y = x + 1`` (importable, so children find it by name)."""

from __future__ import annotations

from dataclasses import dataclass

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Integer


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


class Inc(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        return Out(y=inputs.x + 1)


def inc_chain(length: int, name: str) -> Pipeline:
    """``length`` Inc cells in a chain, input ``x``, output ``y``."""
    pf = PipelineFactory(name=name)
    cells = [pf.add_cell(ref=f"c{i}", cell=Inc()) for i in range(length)]
    pf.declare_input(ref="x", input=cells[0].inputs.x)
    for a, b in zip(cells, cells[1:]):
        pf.connect(a.outputs.y, b.inputs.x)
    pf.declare_output(ref="y", output=cells[-1].outputs.y)
    return pf.build()
