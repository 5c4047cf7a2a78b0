"""A user's script for test_ray_rescale: cell, State and a value type defined in ``__main__``, scaled 1 -> 2."""

import json
import sys
from dataclasses import dataclass

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Integer


class Count(Integer):
    """A value type of the user's own, defined in __main__."""


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    n: Integer = Outputs.field()


@dataclass
class Seen(State):
    n: Count = State.field(default=Count(0))


@cell(state=Seen)
class Counter(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        context.state.n = Count(context.state.n + 1)
        return Out(n=Integer(int(context.state.n)))


pf = PipelineFactory(name="main-rescale")
c = pf.add_cell(ref="c", cell=Counter())
pf.declare_input(ref="x", input=c.inputs.x)
pf.declare_output(ref="n", output=c.outputs.n)
pipeline = pf.build()


def main() -> None:
    sids = [f"m{i}" for i in range(12)]
    with init("ray", num_cpus=2, log_to_driver=False) as rt:
        with rt.start_inference(Inference(pipeline=pipeline)) as proc:
            for sid in sids:
                proc.predict({"x": 0}, sid=sid).result(timeout=60)
            proc.set_replicas(2)
            moved = [sid for sid in sids if proc.replica_for(sid) == 1]
            counts = {sid: int(proc.predict({"x": 0}, sid=sid).result(timeout=60)["n"]) for sid in sids}
    print("REPORT " + json.dumps({"moved": moved, "counts": counts}))


if __name__ == "__main__":  # pytest's doctest collection imports this file: run only as a script
    main()
