"""A small user project, fully typed: ``mypy --strict`` checks it against the installed rvai_sdk.

It is what a user writes (a cell, a pipeline, an inference process, an HTTP driver and a
stream driver) and it is never imported by the test suite: ``tests/packaging/test_typed_project.py``
copies this folder away from the repository and runs ``mypy --strict`` on it, so every
``rvai_sdk`` import below must be found in the installed package, with its types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.drivers import Record, Sink, Source
from rvai_sdk.exc import RvaiError, UnknownSchemeError
from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIClientError, FastAPIDriver
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sinks.dummy_sink import DummySink
from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Detections, Float, FloatRange, Integer, List, Tensor


@dataclass
class CountInputs(Inputs):
    count: Integer = Inputs.field(name="Count", description="Objects in one frame")


@dataclass
class TotalOutputs(Outputs):
    total: Integer = Outputs.field(name="Total", description="Objects on this stream so far")


@dataclass
class TotalParameters(Parameters):
    scale: FloatRange = Parameters.field(name="Scale", description="Multiplies each count", default=FloatRange(1.0, min=0.0))


@dataclass
class Totals(State):
    total: Integer = State.field(default=Integer(0))


@cell(state=Totals)
class RunningTotal(Cell):
    """Adds up the (scaled) counts of one stream."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: TotalParameters, inputs: CountInputs) -> TotalOutputs:
        state = context.state
        state.total = Integer(state.total + round(inputs.count * parameters.scale))
        return TotalOutputs(total=state.total)


class Embedding(Tensor[np.float32], shape=(4,)):
    """A named tensor type: the form of a shape constraint that mypy accepts."""


@dataclass
class FrameInputs(Inputs):
    frame: Tensor[np.float32] = Inputs.field(name="Frame", description="A feature map")
    detections: Detections = Inputs.field(name="Detections", description="What the detector found")


@dataclass
class FrameOutputs(Outputs):
    count: Integer = Outputs.field(name="Count", description="Objects scoring at least 0.5")
    mean: Float = Outputs.field(name="Mean", description="The frame's mean")
    kept: Detections = Outputs.field(name="Kept", description="The objects scoring at least 0.5")
    embedding: Embedding = Outputs.field(name="Embedding", description="A summary of the frame")
    widths: List[Float] = Outputs.field(name="Widths", description="The width of every kept box")


@cell(max_batch_size=8)
class Summarise(Cell):
    """A batched cell: plain Python and numpy values go into typed fields, which coerce them."""

    @classmethod
    def call_batch(
        cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[FrameInputs]
    ) -> list[FrameOutputs]:
        outputs = []
        for context, inputs in zip(contexts, inputs_list):
            kept = inputs.detections[inputs.detections.scores >= 0.5]
            embedding = np.full(4, float(inputs.frame.mean()), dtype=np.float32)
            widths = (kept.xyxy[:, 2] - kept.xyxy[:, 0]).tolist()
            outputs.append(
                FrameOutputs(count=len(kept), mean=float(inputs.frame.mean()), kept=kept, embedding=embedding, widths=widths)
            )
        return outputs


def build_frames_pipeline() -> Pipeline:
    pf = PipelineFactory(name="Frames")
    summary = pf.add_cell(ref="summary", cell=Summarise())
    pf.declare_input(ref="frame", input=summary.inputs.frame)
    pf.declare_input(ref="detections", input=summary.inputs.detections)
    pf.declare_output(ref="count", output=summary.outputs.count)
    pf.declare_output(ref="embedding", output=summary.outputs.embedding)
    return pf.build()


def build_pipeline() -> Pipeline:
    pf = PipelineFactory(name="Typed")
    totals = pf.add_cell(ref="totals", cell=RunningTotal())
    pf.declare_input(ref="count", input=totals.inputs.count)
    pf.declare_output(ref="total", output=totals.outputs.total)
    return pf.build()


def keep(record: Record) -> None:
    print(record.source, record.index, record.to_json()["outputs"])


def main() -> int:
    pipeline = build_pipeline()
    source: Source = DummySource(params={"count": 5, "rate": 0, "seed": 1})
    sink: Sink = DummySink(drain=keep)
    with init("debug") as rt, rt.start_inference(Inference(pipeline=pipeline)) as proc:
        outputs = proc.predict({"count": Integer(2)}, sid="camera-1").result()
        total: object = outputs["total"]
        http = proc.add_driver("webapi", FastAPIDriver)
        try:
            with FastAPIClient(process=http) as client:
                client.wait(timeout=30.0)
                answer = client.predict({"count": Integer(3)})
                print(answer)
        except FastAPIClientError as exc:
            print(f"HTTP failed: {exc}")
        finally:
            proc.remove_driver(http.pid)
        stream = proc.add_driver("stream", SourceSinkDriver, sources={"camera-2": source}, sinks={"log": sink})
        final = SourceSinkDriver.wait(stream, timeout=30.0)
        written: int = final["sources"]["camera-2"]["written"]
        proc.remove_driver(stream.pid)
    frames = build_frames_pipeline()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=frames)) as proc:
        found = Detections(xyxy=[[0, 0, 4, 4]], scores=[0.9], class_ids=[0], class_names=["person"])
        summary = proc.predict({"frame": np.ones((8, 8), np.float32), "detections": found}, sid="camera-1").result()
        print(summary["count"], summary["embedding"])
    try:
        DummySource.from_url("dummy:?count=3&rate=0")
    except UnknownSchemeError:
        return 2
    except RvaiError:
        return 1
    print(total, written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
