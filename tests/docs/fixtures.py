"""What the documentation's fragments assume, for their hidden ``docs-test`` set-up (an importable module,
so it travels to any runtime's processes)."""

from __future__ import annotations

from dataclasses import dataclass

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Image, Integer


@dataclass
class CounterInputs(Inputs):
    integer: Integer = Inputs.field(name="Integer", description="any number")


@dataclass
class CounterOutputs(Outputs):
    integer: Integer = Outputs.field(name="Integer", description="the input plus the requests of its sid so far")


@dataclass
class CounterState(State):
    counter: Integer = State.field(default=Integer(0))


@cell(state=CounterState)
class Counter(Cell):
    """``output = input + n``, n counting this sid's requests."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: CounterInputs) -> CounterOutputs:
        context.state.counter = Integer(context.state.counter + 1)
        return CounterOutputs(integer=Integer(inputs.integer + context.state.counter))


def counter_pipeline(input: str = "input", output: str = "output") -> Pipeline:  # noqa: A002
    """The pipeline the docs call ``pipeline``: input ``"input"``, output ``"output"`` (Integer), or other refs."""
    pf = PipelineFactory(name="MyPipeline")
    counter = pf.add_cell(ref="my-cell", cell=Counter())
    pf.declare_input(ref=input, input=counter.inputs.integer)
    pf.declare_output(ref=output, output=counter.outputs.integer)
    return pf.build()


@dataclass
class FrameInputs(Inputs):
    frame: Image = Inputs.field(name="Frame")


@dataclass
class SizeOutputs(Outputs):
    width: Integer = Outputs.field(name="Width")


class FrameWidth(Cell):
    """``width`` of ``frame``."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameInputs) -> SizeOutputs:
        return SizeOutputs(width=Integer(inputs.frame.shape[1]))


def frame_pipeline() -> Pipeline:
    """Input ``"frame"`` (Image), output ``"width"`` (Integer)."""
    pf = PipelineFactory(name="Frames")
    width = pf.add_cell(ref="width", cell=FrameWidth())
    pf.declare_input(ref="frame", input=width.inputs.frame)
    pf.declare_output(ref="width", output=width.outputs.width)
    return pf.build()
