"""Toy cells and pipelines shared by the suites, and the `runtime` fixture over every runtime."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import RUNTIMES, Runtime, init
from rvai_sdk.types import Float, FloatRange, Integer, List, String

IN_CI = bool(os.environ.get("RVAI_CI"))

# The SDK's per-user directory (services registry and logs, the FastAPIDriver's default task store) is this
# run's own temporary folder, inherited by every process the tests start, never the user's ~/.local/state.
_SDK_HOME = tempfile.mkdtemp(prefix="rvai-sdk-home-")
os.environ["RVAI_SDK_HOME"] = _SDK_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SDK_HOME, ignore_errors=True)


def require_extra(module: str) -> None:
    """Skip when an optional module is absent, except in CI where every extra is installed."""
    try:
        __import__(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{module} is not installed, but CI installs every extra this suite needs")
        pytest.skip(f"{module} is not installed")


# -- data classes ------------------------------------------------------------------------------


@dataclass
class XIn(Inputs):
    x: Integer = Inputs.field(name="X", description="a number")


@dataclass
class YOut(Outputs):
    y: Integer = Outputs.field(name="Y")


@dataclass
class XYIn(Inputs):
    x: Integer = Inputs.field()
    y: Integer = Inputs.field()


@dataclass
class SeqOut(Outputs):
    y: Integer = Outputs.field()
    seen: List[Integer] = Outputs.field(description="every x this sid sent to this cell, in order")


@dataclass
class Seen(State):
    xs: List[Integer] = State.field(default=List[Integer]([]))


@dataclass
class Counter(State):
    n: Integer = State.field(default=Integer(0))


@dataclass
class ScaleParams(Parameters):
    factor: Integer = Parameters.field(default=Integer(2))
    offset: FloatRange = Parameters.field(default=FloatRange(0.0, min=-10.0, max=10.0))


@dataclass
class FOut(Outputs):
    value: Float = Outputs.field()


# -- cells ------------------------------------------------------------------------------------


class AddOne(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return YOut(y=inputs.x + 1)


class LoadsWhenLetIn(Cell):
    """x + 1; ``load_model`` waits while ``<model_path>/gate`` exists (at most a minute: a model slow to load),
    once it made ``<model_path>/entered``."""

    @classmethod
    def load_model(cls, context: Any, parameters: Parameters, model_path: str | None) -> Any:
        assert model_path is not None
        gate = Path(model_path) / "gate"
        if gate.exists():
            (Path(model_path) / "entered").touch()
            deadline = time.monotonic() + 60
            while gate.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return model_path

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return YOut(y=inputs.x + 1)


class Double(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return YOut(y=inputs.x * 2)


class Sum(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XYIn) -> YOut:
        return YOut(y=inputs.x + inputs.y)


@cell(state=Seen)
class Remember(Cell):
    """Appends every x to its sid's state and returns the history so far."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> SeqOut:
        context.state.xs = List[Integer]([*context.state.xs, inputs.x])
        return SeqOut(y=inputs.x, seen=context.state.xs)


@cell(state=Counter)
class Count(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        context.state.n = Integer(context.state.n + 1)
        return YOut(y=context.state.n)


class FailNegative(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x < 0:
            raise ValueError(f"negative input {inputs.x}")
        return YOut(y=inputs.x)


class Scale(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: ScaleParams, inputs: XIn) -> FOut:
        return FOut(value=inputs.x * parameters.factor + parameters.offset)


class BatchLog:
    """Thread-safe record of the batches a batched cell received: a list of (sids, xs)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[tuple[list[str | None], list[int]]] = []

    def add(self, sids: list[str | None], xs: list[int]) -> None:
        with self.lock:
            self.batches.append((sids, xs))

    def clear(self) -> None:
        with self.lock:
            self.batches.clear()


BATCHES = BatchLog()


@cell(state=Seen, max_batch_size=8, max_batch_wait=0.05)
class BatchRemember(Cell):
    """Batched twin of Remember; fails items whose x is 13 (alone), records every batch."""

    @classmethod
    def call_batch(
        cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]
    ) -> list[SeqOut | Exception]:
        BATCHES.add([c.sid for c in contexts], [int(i.x) for i in inputs_list])
        outs: list[SeqOut | Exception] = []
        for context, inputs in zip(contexts, inputs_list):
            if inputs.x == 13:
                outs.append(ValueError("unlucky 13"))
                continue
            context.state.xs = List[Integer]([*context.state.xs, inputs.x])
            outs.append(SeqOut(y=inputs.x, seen=context.state.xs))
        return outs


@dataclass
class NameIn(Inputs):
    name: String = Inputs.field()


# -- pipelines --------------------------------------------------------------------------------


def damage_checkpoint(db: Path, sid: str, states: bytes) -> None:
    """Store ``states`` as ``sid``'s checkpoint in a SqliteStateStore file, as a bad disk or another program could leave it."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS rvai_state (sid TEXT PRIMARY KEY, seq INTEGER NOT NULL, states BLOB NOT NULL, expires REAL)"
        )
        conn.execute("INSERT OR REPLACE INTO rvai_state VALUES (?, 5, ?, NULL)", (sid, states))
        conn.commit()
    finally:
        conn.close()


def chain_pipeline(*cells: type[Cell], name: str = "chain") -> Pipeline:
    """cells[0] -> cells[1] -> ... each XIn -> YOut (the last may return SeqOut/FOut)."""
    pf = PipelineFactory(name=name)
    instances = [pf.add_cell(ref=f"c{i}", cell=c()) for i, c in enumerate(cells)]
    pf.declare_input(ref="x", input=instances[0].inputs.x)
    for a, b in zip(instances, instances[1:]):
        pf.connect(a.outputs.y, b.inputs.x)
    last = instances[-1]
    for port in last.outputs:
        pf.declare_output(ref=port.name, output=port)
    return pf.build()


def single(cell_cls: type[Cell], name: str = "single") -> Pipeline:
    return chain_pipeline(cell_cls, name=name)


def diamond_pipeline() -> Pipeline:
    """x -> a(AddOne) -> b(Double), c(Remember) -> d(Sum) -> e(Count); outputs d, e, seen."""
    pf = PipelineFactory(name="diamond")
    a = pf.add_cell(ref="a", cell=AddOne())
    b = pf.add_cell(ref="b", cell=Double())
    c = pf.add_cell(ref="c", cell=Remember())
    d = pf.add_cell(ref="d", cell=Sum())
    e = pf.add_cell(ref="e", cell=Count())
    pf.declare_input(ref="x", input=a.inputs.x)
    pf.connect(a.outputs.y, b.inputs.x)
    pf.connect(a.outputs.y, c.inputs.x)
    pf.connect(b.outputs.y, d.inputs.x)
    pf.connect(c.outputs.y, d.inputs.y)
    pf.connect(d.outputs.y, e.inputs.x)
    pf.declare_output(ref="sum", output=d.outputs.y)
    pf.declare_output(ref="count", output=e.outputs.y)
    pf.declare_output(ref="seen", output=c.outputs.seen)
    return pf.build()


def branches_pipeline() -> Pipeline:
    """Three parallel branches of x: check(FailNegative) -> after(AddOne); count(Count); remember(BatchRemember).

    Outputs: checked (after's y), count, seen. A negative x fails check; x == 13 fails remember's item.
    """
    pf = PipelineFactory(name="branches")
    check = pf.add_cell(ref="check", cell=FailNegative())
    after = pf.add_cell(ref="after", cell=AddOne())
    count = pf.add_cell(ref="count", cell=Count())
    remember = pf.add_cell(ref="remember", cell=BatchRemember())
    pf.declare_input(ref="x", input=check.inputs.x)
    pf.declare_input(ref="x", input=count.inputs.x)
    pf.declare_input(ref="x", input=remember.inputs.x)
    pf.connect(check.outputs.y, after.inputs.x)
    pf.declare_output(ref="checked", output=after.outputs.y)
    pf.declare_output(ref="count", output=count.outputs.y)
    pf.declare_output(ref="seen", output=remember.outputs.seen)
    return pf.build()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[None]:
    """One local Ray instance for the whole session (starting Ray takes seconds); shut down at the end.

    ``init("ray")`` joins it and leaves it running on ``rt.stop()``.
    """
    require_extra("ray")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.ray] if name == "ray" else []) for name in sorted(RUNTIMES)])
def runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """Every available runtime, stopped after the test (``ray`` joins the session's Ray instance)."""
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    rt = init(request.param)
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture
def batches() -> Iterator[BatchLog]:
    BATCHES.clear()
    yield BATCHES
    BATCHES.clear()
