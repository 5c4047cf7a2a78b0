"""A small user project, fully typed: ``mypy --strict`` checks it against the installed rvai_sdk.

It is what a user writes (a cell, a pipeline, an inference process, an HTTP driver and a
stream driver) and it is never imported by the test suite: ``tests/packaging/test_typed_project.py``
copies this folder away from the repository and runs ``mypy --strict`` on it, so every
``rvai_sdk`` import below must be found in the installed package, with its types.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from rvai_sdk.types import FloatRange, Integer


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
