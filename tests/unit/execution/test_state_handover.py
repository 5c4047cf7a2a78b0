"""Handing a sid's state from one executor to another (what a Ray replica does on set_replicas)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters
from rvai_sdk.exc import ProcessStateError
from rvai_sdk.execution import Executor
from rvai_sdk.execution.state_store import SqliteStateStore
from rvai_sdk.pipeline import Pipeline
from rvai_sdk.types import Integer
from tests.conftest import Count, Counter, XIn, YOut, single

pytestmark = pytest.mark.timeout(60)

GATE = threading.Event()


@cell(state=Counter)
class GatedCount(Cell):
    """Counts; a request with x == 1 waits for GATE (bounded) first."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 1:
            assert GATE.wait(30), "the test never opened the gate"
        context.state.n = Integer(context.state.n + 1)
        return YOut(y=context.state.n)


def started(pipeline: Pipeline, **options: Any) -> Executor:
    executor = Executor(pipeline, **options)
    executor.start()
    return executor


def test_an_exported_state_continues_in_another_executor_and_leaves_the_first() -> None:
    old, new = started(single(Count)), started(single(Count))
    try:
        for _ in range(3):
            old.submit({"x": Integer(0)}, "cam").result(timeout=10)
        exported = old.export_state("cam")
        assert exported is not None
        seq, blobs = exported
        assert set(blobs) == {"c0"}
        assert old.sids() == [] and old.export_state("cam") is None  # gone from the old one
        new.import_state("cam", seq, blobs)
        assert new.sids() == ["cam"]
        assert int(new.submit({"x": Integer(0)}, "cam").result(timeout=10)["y"]) == 4
    finally:
        old.stop()
        new.stop()


def test_with_a_store_the_sequence_number_travels_so_the_new_owner_checkpoints_after_the_old(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "states.db")
    old, new = started(single(Count), state_store=store), started(single(Count), state_store=store)
    try:
        for _ in range(2):
            old.submit({"x": Integer(0)}, "cam").result(timeout=10)
        exported = old.export_state("cam")
        assert exported is not None and exported[0] == 2
        new.import_state("cam", *exported)
        assert int(new.submit({"x": Integer(0)}, "cam").result(timeout=10)["y"]) == 3
    finally:
        old.stop()
        new.stop()
    fresh = started(single(Count), state_store=store)
    try:  # the new owner's checkpoint (sequence 3) was written over the old one's (2)
        assert int(fresh.submit({"x": Integer(0)}, "cam").result(timeout=10)["y"]) == 4
    finally:
        fresh.stop()


def test_a_state_cannot_be_imported_under_a_request_in_flight() -> None:
    GATE.clear()
    executor = started(single(GatedCount))
    try:
        running = executor.submit({"x": Integer(1)}, "cam")
        with pytest.raises(ProcessStateError, match="sid 'cam' has a request in flight"):
            executor.import_state("cam", 5, {})
        GATE.set()
        assert int(running.result(timeout=10)["y"]) == 1
    finally:
        GATE.set()
        executor.stop()
