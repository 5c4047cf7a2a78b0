"""The executor cannot be wedged: output checks, a dying worker, deadlines (in-process, real threads)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.exc import CellError, DeadlineExceededError, ProcessError, ProcessStateError
from rvai_sdk.execution import BatchingPolicy, Executor
from rvai_sdk.execution.executor import _Work
from rvai_sdk.types import Integer
from rvai_sdk.execution.state_store import SqliteStateStore
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from tests._sync import eventually
from tests.conftest import (
    BATCHES,
    AddOne,
    BatchRemember,
    Count,
    Counter,
    FailNegative,
    XIn,
    YOut,
    branches_pipeline,
    chain_pipeline,
    single,
)
from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters

pytestmark = pytest.mark.timeout(60)


class Broken(Executor):
    """An executor with a bug: handling a request with x == 13 raises inside the executor itself."""

    def _execute(self, work: _Work) -> list[_Work]:
        if work.reqs[0].inputs["x"] == 13:
            raise RuntimeError("a bug in the executor")
        return super()._execute(work)


def test_a_worker_that_dies_fails_every_pending_request_and_reports_the_executor_broken() -> None:
    reasons: list[str] = []
    reported = threading.Event()

    def on_broken(reason: str) -> None:
        reasons.append(reason)
        reported.set()

    executor = Broken(single(AddOne), on_broken=on_broken)
    executor.start()
    try:
        assert executor.submit({"x": Integer(1)}, "a").result(timeout=10) == {"y": 2}
        doomed = executor.submit({"x": Integer(13)}, "b")
        with pytest.raises(ProcessError, match="worker thread .* died: RuntimeError: a bug in the executor"):
            doomed.result(timeout=10)
        assert reported.wait(10)
        assert "a bug in the executor" in reasons[0] and len(reasons) == 1
        assert executor.broken is not None and not executor.ready()
        with pytest.raises(ProcessStateError, match="broken"):
            executor.submit({"x": Integer(2)}, "a")
        assert executor.stats()["broken"] == executor.broken
    finally:
        executor.stop(1.0)


def test_a_caller_running_a_request_that_hits_an_executor_bug_gets_an_error_not_a_hang() -> None:
    executor = Broken(single(AddOne), workers=0)
    executor.start()
    try:
        with pytest.raises(ProcessError, match="a bug in the executor"):
            executor.submit({"x": Integer(13)}, "a").result()
        assert executor.broken is not None
    finally:
        executor.stop(1.0)


class Hold(Cell):
    """Holds x == 99 until HOLD is set."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 99:
            assert HOLD.wait(30)
        return YOut(y=inputs.x)


HOLD = threading.Event()


def test_a_request_queued_behind_a_hanging_call_fails_at_its_deadline_naming_the_cell_it_waits_for() -> None:
    HOLD.clear()
    executor = Executor(chain_pipeline(AddOne, Hold), stuck_after=0.05)
    executor.start()
    try:
        hung = executor.submit({"x": Integer(98)}, "a")  # AddOne makes it 99: Hold holds it
        queued = executor.submit({"x": Integer(1)}, "a", timeout=0.2)
        with pytest.raises(DeadlineExceededError, match=r"sid 'a'.*waiting for cell 'c1'") as info:
            queued.result(timeout=10)
        assert info.value.ref == "c1"
        stuck = executor.stuck_calls()
        assert [(s["cell"], s["sid"]) for s in stuck] == [("c1", "a")]
        assert not executor.ready()
        HOLD.set()
        assert hung.result(timeout=10) == {"y": 99}
        assert executor.ready()
        assert executor.submit({"x": Integer(5)}, "a", timeout=10).result(timeout=10) == {"y": 6}
        assert executor.stats()["requests"]["deadline_exceeded"] == 1
    finally:
        HOLD.set()
        executor.stop(1.0)


def test_a_request_whose_deadline_passed_while_queued_is_never_run() -> None:
    HOLD.clear()
    calls: list[Any] = []

    class Spy(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
            calls.append(inputs.x)
            if inputs.x == 99:
                assert HOLD.wait(30)
            return YOut(y=inputs.x)

    executor = Executor(single(Spy))
    executor.start()
    try:
        hung = executor.submit({"x": Integer(99)}, "a")
        late = executor.submit({"x": Integer(1)}, "a", timeout=0.1)
        with pytest.raises(DeadlineExceededError):
            late.result(timeout=10)
        HOLD.set()
        assert hung.result(timeout=10) == {"y": 99}
        assert executor.submit({"x": Integer(2)}, "a").result(timeout=10) == {"y": 2}
        assert calls == [99, 2]
    finally:
        HOLD.set()
        executor.stop(1.0)


def test_a_request_whose_deadline_passed_after_it_was_handed_to_a_busy_worker_is_neither_run_nor_counted() -> None:
    HOLD.clear()
    calls: list[Any] = []
    holding = threading.Event()

    @cell(concurrency=2)
    class Spy(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
            calls.append(inputs.x)
            if inputs.x == 99:
                holding.set()
                assert HOLD.wait(30)
            return YOut(y=inputs.x)

    executor = Executor(single(Spy), workers=1)  # two calls allowed, one thread: the second call waits for it
    executor.start()
    try:
        hung = executor.submit({"x": Integer(99)}, "a")
        assert holding.wait(10)
        late = executor.submit({"x": Integer(1)}, "b", timeout=0.1)  # its call is handed out, not started
        with pytest.raises(DeadlineExceededError):
            late.result(timeout=10)
        HOLD.set()
        assert hung.result(timeout=10) == {"y": 99}
        assert executor.submit({"x": Integer(2)}, "b").result(timeout=10) == {"y": 2}
        assert calls == [99, 2]
        stats = executor.stats()
        counted = stats["cells"]["c0"]
        assert (counted["calls"], counted["items"], counted["failures"]) == (2, 2, 0)
        assert stats["requests"]["deadline_exceeded"] == 1
    finally:
        HOLD.set()
        executor.stop(1.0)


def test_an_output_error_is_a_cell_error_naming_cell_field_and_what_was_found() -> None:
    class Wrong(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
            out = YOut(y=inputs.x)
            out.y = [1, 2]  # type: ignore[assignment]
            return out

    executor = Executor(single(Wrong))
    executor.start()
    try:
        with pytest.raises(CellError, match=r"cell 'c0' \(Wrong\) failed for sid 'a': call\(\) returned YOut whose output field 'y' holds list \[1, 2\]") as info:
            executor.submit({"x": Integer(1)}, "a").result(timeout=10)
        assert (info.value.ref, info.value.field, info.value.cause_type) == ("c0", "y", "OutputCheckError")
    finally:
        executor.stop(1.0)


def side_by_side(name: str, **outputs: tuple[str, Cell]) -> Pipeline:
    """The pipeline input x fed to every cell side by side; output name -> (cell ref, cell), each cell's y as that output."""
    pf = PipelineFactory(name=name)
    for output, (ref, instance) in outputs.items():
        added = pf.add_cell(ref=ref, cell=instance)
        pf.declare_input(ref="x", input=added.inputs.x)
        pf.declare_output(ref=output, output=added.outputs.y)
    return pf.build()


@pytest.mark.parametrize("workers", [1, 0, None], ids=["one-worker", "caller-runs", "default-workers"])
def test_a_failing_branch_fails_the_request_skips_its_own_successors_and_every_other_branch_still_runs(
    workers: int | None,
) -> None:
    # check raises for x < 0; count (stateful) and remember (batched, stateful) are branches beside it.
    # With one worker, check runs first: before, its failure skipped count and remember when they had
    # not started yet, so whether a failed request changed their state depended on timing.
    executor = Executor(branches_pipeline(), workers=workers)
    wait = None if workers == 0 else 10.0  # without workers, the waiting caller runs the cells (no timeout)
    executor.start()
    try:
        assert executor.submit({"x": Integer(1)}, "s").result(wait) == {"checked": 2, "count": 1, "seen": [1]}
        for n, x in enumerate((-1, -2), start=2):
            with pytest.raises(CellError, match="negative input") as failed:
                executor.submit({"x": Integer(x)}, "s").result(wait)
            assert failed.value.ref == "check" and failed.value.sid == "s"
            # The error comes once the other branches are done: their state changes are there to read.
            state = executor.get_state("s")
            assert state["count"].n == n and state["remember"].xs[-1] == x
        assert executor.submit({"x": Integer(5)}, "s").result(wait) == {"checked": 6, "count": 4, "seen": [1, -1, -2, 5]}
        stats = executor.stats()
        assert stats["requests"]["succeeded"] == 2 and stats["requests"]["failed"] == 2
        assert stats["requests"]["in_flight"] == 0
        cells = stats["cells"]
        assert (cells["check"]["failures"], cells["after"]["calls"]) == (2, 2)  # after never ran for a failed request
        assert (cells["count"]["calls"], cells["remember"]["items"]) == (4, 4)
    finally:
        executor.stop(5.0)


def test_two_failing_branches_of_one_request_fail_it_once_and_the_branch_beside_them_still_runs() -> None:
    pipeline = side_by_side(
        "two-checks", first=("first", FailNegative()), second=("second", FailNegative()), count=("count", Count())
    )
    executor = Executor(pipeline, workers=1)
    executor.start()
    try:
        with pytest.raises(CellError, match="negative input -1") as failed:
            executor.submit({"x": Integer(-1)}, "s").result(timeout=10)
        assert failed.value.ref in ("first", "second")
        assert executor.submit({"x": Integer(2)}, "s").result(timeout=10) == {"first": 2, "second": 2, "count": 2}
        stats = executor.stats()
        assert (stats["requests"]["failed"], stats["requests"]["succeeded"], stats["requests"]["in_flight"]) == (1, 1, 0)
        assert stats["cells"]["first"]["failures"] == 1 and stats["cells"]["second"]["failures"] == 1
    finally:
        executor.stop(5.0)


RELEASE = threading.Event()


class HoldNegative(Cell):
    """Holds a negative x until ``release`` (RELEASE) is set (at most ``seconds``); returns x."""

    release = RELEASE
    seconds = 30.0

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x < 0:
            assert cls.release.wait(cls.seconds)
        return YOut(y=inputs.x)


def check_beside_hold() -> Pipeline:
    """x -> check (FailNegative) and x -> hold (HoldNegative), side by side; outputs checked, held."""
    return side_by_side("check-beside-hold", checked=("check", FailNegative()), held=("hold", HoldNegative()))


def test_a_request_failed_by_one_branch_answers_with_that_error_by_its_deadline_while_another_branch_hangs() -> None:
    RELEASE.clear()
    executor = Executor(check_beside_hold())
    executor.start()
    try:
        doomed = executor.submit({"x": Integer(-1)}, "s", timeout=0.5)
        with pytest.raises(CellError, match="negative input -1") as failed:
            doomed.result(timeout=20)
        assert failed.value.ref == "check"  # the cause, not DeadlineExceededError
        stats = executor.stats()["requests"]
        assert (stats["failed"], stats["deadline_exceeded"], stats["in_flight"]) == (1, 1, 0)
        RELEASE.set()
        assert executor.submit({"x": Integer(3)}, "s").result(timeout=20) == {"checked": 3, "held": 3}
    finally:
        RELEASE.set()
        executor.stop(5.0)


def test_stop_answers_a_request_failed_by_one_branch_with_that_error_while_another_branch_hangs() -> None:
    RELEASE.clear()
    executor = Executor(check_beside_hold())
    executor.start()
    try:
        doomed = executor.submit({"x": Integer(-1)}, "s")
        eventually(lambda: executor.stats()["cells"]["check"]["failures"] == 1, "check failed the request")
        requests = executor.stats()["requests"]  # hold still holds it: not answered, not yet counted failed
        assert not doomed.done() and (requests["in_flight"], requests["failed"]) == (1, 0)
        executor.stop(0.2)  # stop gives up waiting for hold
        with pytest.raises(CellError, match="negative input -1") as failed:
            doomed.result(timeout=20)
        assert failed.value.ref == "check"
    finally:
        RELEASE.set()


def _stored(store_path: Path, sid: str) -> Any:
    opened = SqliteStateStore(store_path).open(None)
    try:
        return opened.load(sid)
    finally:
        opened.close()


def test_a_failed_request_alone_in_flight_checkpoints_what_its_branches_changed(tmp_path: Path) -> None:
    store_path = tmp_path / "states.db"
    executor = Executor(branches_pipeline(), workers=1, state_store=SqliteStateStore(store_path))
    executor.start()
    try:
        assert executor.submit({"x": Integer(1)}, "s").result(timeout=10)["count"] == 1
        with pytest.raises(CellError, match="negative input -4"):
            executor.submit({"x": Integer(-4)}, "s").result(timeout=10)
        assert executor.get_state("s")["count"].n == 2  # in memory
        stored = _stored(store_path, "s")
        assert stored is not None and stored[0] == 2  # and written before the error was answered
    finally:
        executor.stop(5.0)
    # A new executor (a restarted process) reads the sid from the store: the failed request's count and remember ran.
    again = Executor(branches_pipeline(), workers=1, state_store=SqliteStateStore(store_path))
    again.start()
    try:
        assert again.submit({"x": Integer(7)}, "s").result(timeout=10) == {"checked": 8, "count": 3, "seen": [1, -4, 7]}
    finally:
        again.stop(5.0)


@cell(state=Counter)
class HoldCount(Cell):
    """Counts the sid's requests; holds x == 99 until RELEASE is set (at most 30 s), after counting it."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        context.state.n = Integer(context.state.n + 1)
        if inputs.x == 99:
            assert RELEASE.wait(30)
        return YOut(y=context.state.n)


def test_a_failed_request_writes_no_checkpoint_while_a_call_its_deadline_left_running_still_changes_the_state(
    tmp_path: Path,
) -> None:
    """x -> check (fails negatives) -> tally (stateful, holds 99), and x -> count beside. The first request's
    deadline passes in tally, whose call goes on; the second fails in check (so never reaches tally) while that
    call still runs: the sid's states could be changing, so it writes nothing."""
    RELEASE.clear()
    store_path = tmp_path / "states.db"
    pf = PipelineFactory(name="orphan-call")
    check = pf.add_cell(ref="check", cell=FailNegative())
    tally = pf.add_cell(ref="tally", cell=HoldCount())
    count = pf.add_cell(ref="count", cell=Count())
    pf.declare_input(ref="x", input=check.inputs.x)
    pf.declare_input(ref="x", input=count.inputs.x)
    pf.connect(check.outputs.y, tally.inputs.x)
    pf.declare_output(ref="tally", output=tally.outputs.y)
    pf.declare_output(ref="count", output=count.outputs.y)
    executor = Executor(pf.build(), state_store=SqliteStateStore(store_path))
    executor.start()
    try:
        late = executor.submit({"x": Integer(99)}, "s", timeout=3.0)  # time to reach tally, even on a loaded machine
        with pytest.raises(DeadlineExceededError):
            late.result(timeout=20)
        with pytest.raises(CellError, match="negative input -1"):
            executor.submit({"x": Integer(-1)}, "s").result(timeout=20)
        assert _stored(store_path, "s") is None  # tally's call still runs: nothing written
        RELEASE.set()
        assert executor.submit({"x": Integer(5)}, "s").result(timeout=20) == {"tally": 2, "count": 3}
        stored = _stored(store_path, "s")
        assert stored is not None and stored[0] == 1  # the first checkpoint: the successful request's
    finally:
        RELEASE.set()
        executor.stop(5.0)
    again = Executor(pf.build(), state_store=SqliteStateStore(store_path))
    again.start()
    try:
        assert again.submit({"x": Integer(6)}, "s").result(timeout=20) == {"tally": 3, "count": 4}
    finally:
        again.stop(5.0)


# -- a batch below a failed cell does not wait for the request it lost ----------------------------------

BATCHES_WAIT = BatchingPolicy(max_batch_size=2, max_batch_wait=120.0)
"""Batches of 2 that wait two minutes to fill: a batch of one that goes sooner did not wait for a lost request."""


@cell(concurrency=2)
class HoldNegativeBeside(HoldNegative):
    """:class:`HoldNegative` with a second call beside the held one: other requests pass it."""


def _waiting_in(executor: Executor, ref: str) -> bool:
    return bool(executor.stats()["cells"][ref]["queued"] == 1)


KEEP = threading.Event()


@cell(concurrency=2)
class KeepNegative(HoldNegative):
    """Holds a negative x until KEEP is set (at most 50 s, longer than the test waits), beside another call."""

    release = KEEP
    seconds = 50.0


def test_a_batch_two_cells_below_a_failed_cell_goes_at_once_without_the_request_it_lost() -> None:
    """x -> gate (holds negatives) -> check (fails them) -> add one -> remember (batched), and beside them
    x -> keep (holds negatives longer). b fails in check while keep holds it in flight, and a waits in
    remember's batch for it: remember is below check, not its direct successor."""
    BATCHES.clear()
    RELEASE.clear()
    KEEP.clear()
    pf = PipelineFactory(name="fail-above-batch")
    gate = pf.add_cell(ref="gate", cell=HoldNegativeBeside())
    check = pf.add_cell(ref="check", cell=FailNegative())
    add = pf.add_cell(ref="add", cell=AddOne())
    remember = pf.add_cell(ref="remember", cell=BatchRemember())
    keep = pf.add_cell(ref="keep", cell=KeepNegative())
    pf.declare_input(ref="x", input=gate.inputs.x)
    pf.declare_input(ref="x", input=keep.inputs.x)
    pf.connect(gate.outputs.y, check.inputs.x)
    pf.connect(check.outputs.y, add.inputs.x)
    pf.connect(add.outputs.y, remember.inputs.x)
    pf.declare_output(ref="seen", output=remember.outputs.seen)
    pf.declare_output(ref="kept", output=keep.outputs.y)
    executor = Executor(pf.build(), batching={"remember": BATCHES_WAIT})
    executor.start()
    try:
        b = executor.submit({"x": Integer(-1)}, "b")  # held in gate (and keep)
        a = executor.submit({"x": Integer(1)}, "a")
        eventually(lambda: _waiting_in(executor, "remember"), "a waits in remember for b to fill the batch")
        RELEASE.set()  # b leaves gate and fails in check; keep still holds it
        assert a.result(timeout=30) == {"seen": [2], "kept": 1}  # at once, not when b leaves keep
        assert BATCHES.batches == [(["a"], [2])]
        assert not b.done()
        KEEP.set()
        with pytest.raises(CellError, match="negative input -1"):
            b.result(timeout=30)
    finally:
        RELEASE.set()
        KEEP.set()
        executor.stop(1.0)


def test_a_batch_below_a_request_that_missed_its_deadline_goes_at_once_without_it() -> None:
    """hold (c0) -> add one (c1) -> remember (c2, batched): b's deadline passes in c0 while a waits in c2's
    batch for it."""
    BATCHES.clear()
    RELEASE.clear()
    pipeline = chain_pipeline(HoldNegativeBeside, AddOne, BatchRemember, name="deadline-above-batch")
    executor = Executor(pipeline, batching={"c2": BATCHES_WAIT})
    executor.start()
    try:
        b = executor.submit({"x": Integer(-1)}, "b", timeout=3.0)  # held in c0 past its deadline (time for a to reach c2)
        a = executor.submit({"x": Integer(1)}, "a")
        eventually(lambda: _waiting_in(executor, "c2"), "a waits in c2 for b to fill the batch")
        with pytest.raises(DeadlineExceededError):
            b.result(timeout=30)
        assert a.result(timeout=30) == {"y": 2, "seen": [2]}  # at once, not after max_batch_wait
        assert BATCHES.batches == [(["a"], [2])]
    finally:
        RELEASE.set()
        executor.stop(1.0)
