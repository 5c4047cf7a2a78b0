"""Cells, pipelines, sinks and helpers shared by the source/sink tests.

Everything here is importable by module path, so it works in a driver process of
the local runtime; results are observed through files, databases and brokers,
never through globals shared with the test.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.drivers import Record, Sink, Source, SourceContext, SourceItem
from rvai_sdk.exc import SinkError, SourceError
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Float, Image, Integer

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = 30.0,
    what: str = "the condition",
    interval: float = 0.05,
    explain: Callable[[], object] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy, at most ``timeout`` seconds; return it.

    ``explain`` is called on a timeout, for the message (e.g. the driver's stats).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            detail = f"; {explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r}){detail}")
        time.sleep(interval)


# -- cells ------------------------------------------------------------------------------------


@dataclass
class FrameIn(Inputs):
    frame: Image = Inputs.field(name="Frame")


@dataclass
class FrameOut(Outputs):
    brightness: Float = Outputs.field(name="Mean brightness")
    count: Integer = Outputs.field(name="Frames seen on this stream")


@dataclass
class FrameCount(State):
    n: Integer = State.field(default=Integer(0))


@dataclass
class Pace(Parameters):
    seconds: Float = Parameters.field(default=Float(0.0))


@cell(state=FrameCount)
class Brightness(Cell):
    """Mean brightness of a frame, and a per-stream frame counter; ``seconds`` per frame (0 by default)."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Pace, inputs: FrameIn) -> FrameOut:
        if float(parameters.seconds):
            time.sleep(float(parameters.seconds))
        context.state.n = Integer(context.state.n + 1)
        return FrameOut(brightness=float(np.asarray(inputs.frame).mean()), count=context.state.n)


def frame_pipeline() -> Pipeline:
    pf = PipelineFactory(name="frames")
    b = pf.add_cell(ref="b", cell=Brightness())
    pf.declare_input(ref="frame", input=b.inputs.frame)
    pf.declare_output(ref="brightness", output=b.outputs.brightness)
    pf.declare_output(ref="count", output=b.outputs.count)
    return pf.build()


@dataclass
class XIn(Inputs):
    x: Integer = Inputs.field()


@dataclass
class YOut(Outputs):
    y: Integer = Outputs.field()


@dataclass
class Slow(Parameters):
    seconds: Float = Parameters.field(default=Float(0.005))


class Work(Cell):
    """Echo x after some work (a stand-in for a model that is slower than its camera)."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Slow, inputs: XIn) -> YOut:
        time.sleep(float(parameters.seconds))
        return YOut(y=inputs.x)


def work_pipeline() -> Pipeline:
    pf = PipelineFactory(name="work")
    w = pf.add_cell(ref="w", cell=Work())
    pf.declare_input(ref="x", input=w.inputs.x)
    pf.declare_output(ref="y", output=w.outputs.y)
    return pf.build()


# -- sinks and sources ---------------------------------------------------------------------------


def append_jsonl(path: str, record: Record) -> None:
    """A DummySink drain: one JSON line per record."""
    with open(path, "a") as f:
        f.write(json.dumps(record.to_json()) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


class GatedFileSink(Sink):
    """Appends records to a JSON-lines file, failing every write while ``gate`` exists (an outage)."""

    def __init__(self, path: str, gate: str, params: Any = None) -> None:
        super().__init__(params)
        self.path = path
        self.gate = gate

    def write(self, records: Sequence[Record]) -> None:
        if os.path.exists(self.gate):
            raise SinkError(f"sink {self.context.ref!r}: the gate {self.gate} is closed")
        with open(self.path, "a") as f:
            for record in records:
                f.write(json.dumps(record.to_json()) + "\n")


class FlakyOpenSource(Source):
    """Counts 0..count-1 but fails to open the first ``failures`` times."""

    def __init__(self, count: int, failures: int) -> None:
        super().__init__({"retry_initial": 0.01, "retry_max": 0.05})
        self.count = count
        self.failures = failures

    def open(self, context: SourceContext) -> None:
        super().open(context)
        self.opened = getattr(self, "opened", 0) + 1
        if self.opened <= self.failures:
            raise SourceError(f"source {context.ref!r}: not yet (attempt {self.opened})")

    def items(self) -> Iterator[SourceItem]:
        for i in range(self.count):
            yield SourceItem(inputs={"x": Integer(i)}, index=i, timestamp=time.time())

    def stats(self) -> dict[str, Any]:
        return {"opened": getattr(self, "opened", 0)}


class FailsMidwaySource(Source):
    """A file-like (replayable) source of x = 0..count-1 whose reading fails at ``fail_at`` the first
    ``failures`` times it is opened (a network filesystem's hiccup); every open starts again from item 0."""

    def __init__(self, count: int, fail_at: int, failures: int = 1) -> None:
        super().__init__({"retry_initial": 0.01, "retry_max": 0.05})
        self.count = count
        self.fail_at = fail_at
        self.failures = failures

    def open(self, context: SourceContext) -> None:
        super().open(context)
        self.opened = getattr(self, "opened", 0) + 1
        self.first_indexes = [*getattr(self, "first_indexes", []), context.first_index]

    def stats(self) -> dict[str, Any]:
        return {"first_indexes": getattr(self, "first_indexes", [])}

    def items(self) -> Iterator[SourceItem]:
        for i in range(self.count):
            if i == self.fail_at and self.opened <= self.failures:
                raise OSError(f"read failed at item {i} (open {self.opened})")
            yield SourceItem(inputs={"x": Integer(i)}, index=i, timestamp=time.time())


class AckingSource(Source):
    """A live source of x = values[i] that wants acknowledgements: the indexes acknowledged land in ``acked``
    (the driver's private copy shares this list: read it on the debug runtime)."""

    def __init__(self, values: list[int], params: Any = None) -> None:
        super().__init__(params)
        self.values = list(values)
        self.acked: list[int] = []

    @property
    def live(self) -> bool:
        return True

    @property
    def wants_acknowledgements(self) -> bool:
        return True

    def acknowledge(self, index: int) -> None:
        self.acked.append(index)

    def items(self) -> Iterator[SourceItem]:
        for i, x in enumerate(self.values):
            yield SourceItem(inputs={"x": Integer(x)}, index=i, timestamp=time.time())


@dataclass
class DoneOut(Outputs):
    y: Integer = Outputs.field()
    done_ns: Integer = Outputs.field(description="time.monotonic_ns() when the call ended")


@cell(concurrency=4)
class SleepX(Cell):
    """Takes x milliseconds; up to four calls at once, so requests can finish out of order."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> DoneOut:
        time.sleep(int(inputs.x) / 1000)
        return DoneOut(y=inputs.x, done_ns=time.monotonic_ns())


def sleep_pipeline() -> Pipeline:
    pf = PipelineFactory(name="sleep")
    s = pf.add_cell(ref="s", cell=SleepX())
    pf.declare_input(ref="x", input=s.inputs.x)
    pf.declare_output(ref="y", output=s.outputs.y)
    pf.declare_output(ref="done_ns", output=s.outputs.done_ns)
    return pf.build()


class ListSource(Source):
    """Yields the given x values, each item with its own sid (``item-<index>``) so they may run in parallel."""

    def __init__(self, xs: list[int], params: Any = None) -> None:
        super().__init__(params)
        self.xs = list(xs)

    def items(self) -> Iterator[SourceItem]:
        for i, x in enumerate(self.xs):
            yield SourceItem(inputs={"x": Integer(x)}, index=i, timestamp=time.time(), sid=f"item-{i}")


class NeedsExtraSource(Source):
    """Needs a module that is not installed."""

    def open(self, context: SourceContext) -> None:
        from rvai_sdk._compat import require

        super().open(context)
        require("rvai_no_such_module", extra="nope")

    def items(self) -> Iterator[SourceItem]:
        return iter(())


@dataclass
class CountOut(Outputs):
    y: Integer = Outputs.field()
    count: Integer = Outputs.field(description="Requests seen on this stream")


@cell(state=FrameCount)
class PacedCount(Cell):
    """Echo x and count the stream's requests, taking ``seconds`` per request."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Pace, inputs: XIn) -> CountOut:
        time.sleep(float(parameters.seconds))
        context.state.n = Integer(context.state.n + 1)
        return CountOut(y=inputs.x, count=context.state.n)


def paced_count_pipeline() -> Pipeline:
    pf = PipelineFactory(name="paced-count")
    c = pf.add_cell(ref="c", cell=PacedCount())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    pf.declare_output(ref="count", output=c.outputs.count)
    return pf.build()


class TaggedFileSink(Sink):
    """Appends each record as a JSON line tagged with ``run``, fsynced per batch; keeps no positions (like MQTT, HTTP).

    ``delay`` seconds per batch make it a slow sink (records wait in its buffer, unacknowledged).
    """

    def __init__(self, path: str, run: str, params: Any = None, delay: float = 0.0) -> None:
        super().__init__(params)
        self.path = path
        self.run = run
        self.delay = delay

    def write(self, records: Sequence[Record]) -> None:
        if self.delay:
            time.sleep(self.delay)  # a slow receiver, not synchronisation
        with open(self.path, "a") as f:
            for record in records:
                f.write(json.dumps({**record.to_json(), "run": self.run}) + "\n")
            f.flush()
            os.fsync(f.fileno())
