"""Executor.set_models and set_parameters swap a model between requests: a batch that straddles
the swap is split, so a request submitted after it never runs with the old model."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Parameters
from rvai_sdk.exc import CellError, ProcessError
from rvai_sdk.execution import Executor
from rvai_sdk.types import Integer
from tests.conftest import XIn, YOut, single
from tests.unit.execution.test_executor import FrozenClock

RELEASE = threading.Event()
CLOCK = FrozenClock()
CALLS: list[tuple[str, list[int]]] = []


@cell(max_batch_size=2, max_batch_wait=600)
class Tagged(Cell):
    """Its model is its model path; the first call waits for RELEASE; every call is recorded."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        if model_path == "broken":
            raise FileNotFoundError("no weights at 'broken'")
        if model_path == "slow":  # loading takes 10 s of the executor's clock
            CLOCK.now += 10.0
        return model_path

    @classmethod
    def call_batch(cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]) -> list[YOut]:
        if not CALLS:
            assert RELEASE.wait(timeout=30)
        CALLS.append((str(contexts[0].model), [int(i.x) for i in inputs_list]))
        return [YOut(y=i.x + (1000 if contexts[0].model == "new" else 0)) for i in inputs_list]


def test_a_batch_straddling_a_model_swap_runs_each_request_with_its_own_model() -> None:
    CALLS.clear()
    RELEASE.clear()
    executor = Executor(single(Tagged), models={"c0": "old"}, clock=FrozenClock())
    executor.start()
    try:
        first = executor.submit({"x": Integer(1)}, "s1")  # runs alone and holds the cell
        before = executor.submit({"x": Integer(2)}, "s2")  # queued: submitted before the swap
        executor.set_models({"c0": "new"})
        after = executor.submit({"x": Integer(3)}, "s3")  # joins the same batch of two
        RELEASE.set()
        assert [int(f.result(timeout=30)["y"]) for f in (first, before, after)] == [1, 2, 1003]
    finally:
        executor.stop()
    assert CALLS == [("old", [1]), ("old", [2]), ("new", [3])]


def test_a_failing_set_models_changes_nothing() -> None:
    CALLS.clear()
    RELEASE.set()
    executor = Executor(single(Tagged), models={"c0": "old"}, clock=FrozenClock())
    executor.start()
    try:
        with pytest.raises(CellError, match=r"load_model of cell 'c0' \(Tagged\) failed: FileNotFoundError: no weights at 'broken'") as info:
            executor.set_models({"c0": "broken"})
        assert info.value.ref == "c0"
        assert executor.get_models() == {"c0": "old"}
        assert int(executor.submit({"x": Integer(5)}, "s").result(timeout=30)["y"]) == 5
        executor.set_models({"c0": None})  # no path: load_model gets None
        assert executor.get_models() == {}
    finally:
        executor.stop()


def test_models_loaded_past_the_callers_timeout_are_discarded_not_swapped_in() -> None:
    """A caller that gave up on a change (its timeout passed while the models loaded) never sees it happen later."""
    CALLS.clear()
    RELEASE.set()
    executor = Executor(single(Tagged), models={"c0": "old"}, clock=CLOCK)
    executor.start()
    try:
        with pytest.raises(ProcessError, match=r"took longer than the 5 s the caller waits .*discarded: nothing changed"):
            executor.set_models({"c0": "slow"}, timeout=5.0)
        assert executor.get_models() == {"c0": "old"}
        assert int(executor.submit({"x": Integer(1)}, "s").result(timeout=30)["y"]) == 1  # the old model serves
        executor.set_models({"c0": "slow"}, timeout=15.0)  # within its timeout: swapped in
        assert executor.get_models() == {"c0": "slow"}
        executor.set_models({"c0": "new"}, timeout=0.0)  # a load that takes no time meets even a zero timeout
        assert int(executor.submit({"x": Integer(1)}, "s").result(timeout=30)["y"]) == 1001
    finally:
        executor.stop()
    assert CALLS == [("old", [1]), ("new", [1])]
