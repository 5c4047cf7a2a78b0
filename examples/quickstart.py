"""Quickstart: typed cells with per-stream state, wired into a pipeline and served in-process.

Run it with ``python examples/quickstart.py [--runtime debug|local]`` (``make demo`` runs the whole product).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Float, FloatRange, Integer


@dataclass
class CountInputs(Inputs):
    count: Integer = Inputs.field(name="Object count", description="Objects seen in one frame")


@dataclass
class TotalsOutputs(Outputs):
    total: Integer = Outputs.field(name="Total", description="Objects seen on this stream so far")
    frames: Integer = Outputs.field(name="Frames", description="Frames seen on this stream so far")


@dataclass
class Totals(State):
    total: Integer = State.field(default=Integer(0))
    frames: Integer = State.field(default=Integer(0))


@cell(state=Totals)
class RunningTotal(Cell):
    """Adds up the counts of one stream; each sid keeps its own totals."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: CountInputs) -> TotalsOutputs:
        state = context.state
        state.total = Integer(state.total + inputs.count)
        state.frames = Integer(state.frames + 1)
        return TotalsOutputs(total=state.total, frames=state.frames)


@dataclass
class MeanInputs(Inputs):
    total: Integer = Inputs.field()
    frames: Integer = Inputs.field()


@dataclass
class MeanParameters(Parameters):
    alarm_above: FloatRange = Parameters.field(
        name="Alarm threshold", description="Raise the alarm above this mean", default=FloatRange(4.0, min=0.0)
    )


@dataclass
class MeanOutputs(Outputs):
    mean: Float = Outputs.field(name="Mean per frame")
    alarm: Integer = Outputs.field(name="Alarm", description="1 when the mean is above the threshold")


class Mean(Cell):
    """Mean objects per frame, and an alarm flag above a threshold parameter."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: MeanParameters, inputs: MeanInputs) -> MeanOutputs:
        mean = inputs.total / inputs.frames
        return MeanOutputs(mean=mean, alarm=int(mean > parameters.alarm_above))


def build_pipeline() -> Pipeline:
    """Two cells: a stateful running total feeding a stateless mean."""
    pf = PipelineFactory(name="Quickstart")
    totals = pf.add_cell(ref="totals", cell=RunningTotal())
    mean = pf.add_cell(ref="mean", cell=Mean())
    pf.declare_input(ref="count", input=totals.inputs.count)
    pf.connect(totals.outputs.total, mean.inputs.total)
    pf.connect(totals.outputs.frames, mean.inputs.frames)
    pf.declare_output(ref="total", output=totals.outputs.total)
    pf.declare_output(ref="mean", output=mean.outputs.mean)
    pf.declare_output(ref="alarm", output=mean.outputs.alarm)
    return pf.build()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime", default="debug", help="runtime to use (default: debug)")
    args = parser.parse_args(argv)

    pipeline = build_pipeline()
    print(pipeline)
    frames = {"camera-1": [3, 5, 4, 6], "camera-2": [1, 0, 2, 1]}
    with init(args.runtime) as rt, rt.start_inference(Inference(pipeline=pipeline)) as proc:
        # Interleave the two streams; each sid keeps its own running total.
        futures = [
            (sid, count, proc.predict({"count": count}, sid=sid))
            for step in range(4)
            for sid, counts in frames.items()
            for count in [counts[step]]
        ]
        for sid, count, future in futures:
            out = future.result()
            print(f"{sid}: count={count} total={out['total']} mean={out['mean']:.2f} alarm={out['alarm']}")
        proc.set_parameters({"mean": {"alarm_above": 1.0}})
        out = proc.predict({"count": 2}, sid="camera-2").result()
        print(f"camera-2 after lowering the threshold to 1.0: mean={out['mean']:.2f} alarm={out['alarm']}")
        print(f"streams with state: {', '.join(proc.sids())}")


if __name__ == "__main__":
    main()
