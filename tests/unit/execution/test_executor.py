"""Executor scheduling: caller-runs on wait, worker-less mode, mixed waiters, stop."""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters
from rvai_sdk.exc import CellError, DeadlineExceededError, ProcessError, ProcessStateError
from rvai_sdk.execution import Executor
from rvai_sdk.types import Integer
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from tests.conftest import AddOne, BatchRemember, Remember, XIn, YOut, chain_pipeline, diamond_pipeline, single

pytestmark = pytest.mark.timeout(60)

THREADS: list[int] = []


def run_threads(target: Any, arguments: list[tuple[Any, ...]], *, timeout: float) -> None:
    """Run ``target(*args)`` on one thread per entry and join them all (each within ``timeout``)."""
    threads = [threading.Thread(target=target, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish in time"


class WhichThread(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        THREADS.append(threading.get_ident())
        return YOut(y=inputs.x)


def test_a_waiting_caller_runs_the_cells_of_its_request_itself() -> None:
    THREADS.clear()
    executor = Executor(chain_pipeline(WhichThread, WhichThread), workers=0)
    executor.start()
    try:
        assert executor.submit({"x": Integer(5)}, "s").result() == {"y": 5}
    finally:
        executor.stop()
    assert THREADS == [threading.get_ident()] * 2


def test_without_workers_concurrent_waiters_complete_every_request() -> None:
    executor = Executor(diamond_pipeline(), workers=0)
    executor.start()
    results: dict[str, list[int]] = {}

    def client(sid: str) -> None:
        futures = [executor.submit({"x": Integer(x)}, sid) for x in range(20)]
        results[sid] = [int(f.result()["count"]) for f in futures]

    try:
        run_threads(client, [(f"c{i}",) for i in range(4)], timeout=30)
    finally:
        executor.stop()
    assert results == {f"c{i}": list(range(1, 21)) for i in range(4)}


def test_mixed_waiters_and_workers_keep_every_sid_in_order() -> None:
    executor = Executor(chain_pipeline(Remember, Remember))
    executor.start()
    failures: list[str] = []

    def client(k: int) -> None:
        sids = [f"t{k}-{i}" for i in range(10)]
        futures = [(sid, x, executor.submit({"x": Integer(x)}, sid)) for x in range(30) for sid in sids]
        for sid, x, future in futures:
            # every other result is waited on without a timeout (the caller may run cells)
            out = future.result() if x % 2 else future.result(timeout=30)
            if list(out["seen"]) != list(range(x + 1)):
                failures.append(f"{sid}: {list(out['seen'])}")

    try:
        run_threads(client, [(k,) for k in range(4)], timeout=50)
    finally:
        executor.stop()
    assert not failures, failures[:3]
    assert executor.succeeded == 4 * 10 * 30


HOLD = threading.Event()
ENTERED = threading.Event()


class Hold(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        ENTERED.set()
        HOLD.wait(timeout=30)
        return YOut(y=inputs.x)


def test_stop_fails_requests_still_pending_after_the_timeout() -> None:
    HOLD.clear()
    ENTERED.clear()
    executor = Executor(single(Hold))
    executor.start()
    running = executor.submit({"x": Integer(1)}, "a")
    queued = executor.submit({"x": Integer(2)}, "a")
    assert ENTERED.wait(timeout=10)
    try:
        executor.stop(timeout=0.05)
        done, _ = wait([running, queued], timeout=10)
        assert len(done) == 2
        for future in (running, queued):
            with pytest.raises(ProcessError, match="stopped before request"):
                future.result()
        with pytest.raises(ProcessStateError, match="is stopped"):
            executor.submit({"x": Integer(3)}, "a")
    finally:
        HOLD.set()


class Interrupting(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 0:
            raise KeyboardInterrupt
        return YOut(y=inputs.x)


def test_ctrl_c_in_a_cell_run_by_the_caller_fails_that_request_and_leaves_the_executor_serving() -> None:
    executor = Executor(single(Interrupting), workers=0)
    executor.start()
    try:
        interrupted = executor.submit({"x": Integer(0)}, "a")
        with pytest.raises(KeyboardInterrupt):
            interrupted.result()
        with pytest.raises(CellError, match="KeyboardInterrupt"):
            interrupted.result(timeout=5)
        assert executor.submit({"x": Integer(2)}, "a").result() == {"y": 2}
    finally:
        executor.stop()


def interrupt_beside_pipeline() -> Pipeline:
    """x -> first(AddOne) -> interrupting(Interrupting: Ctrl-C when its x is 0), beside(AddOne)."""
    pf = PipelineFactory(name="interrupt-beside")
    first = pf.add_cell(ref="first", cell=AddOne())
    interrupting = pf.add_cell(ref="interrupting", cell=Interrupting())  # dispatched before "beside"
    beside = pf.add_cell(ref="beside", cell=AddOne())
    pf.declare_input(ref="x", input=first.inputs.x)
    pf.connect(first.outputs.y, interrupting.inputs.x)
    pf.connect(first.outputs.y, beside.inputs.x)
    pf.declare_output(ref="interrupted", output=interrupting.outputs.y)
    pf.declare_output(ref="beside", output=beside.outputs.y)
    return pf.build()


@pytest.mark.parametrize("warm", [0, 40], ids=["cold", "fast-cells"])
def test_ctrl_c_in_one_branch_leaves_the_branch_beside_it_serving_later_requests(warm: int) -> None:
    # The interrupted request's other branch was handed out but not run: posted to the waiters
    # (cold), or already claimed by the interrupted caller to run next (fast cells, run without a
    # hand-off). Either way its cell's slot must come back, or the next request waits forever.
    executor = Executor(interrupt_beside_pipeline(), workers=0)
    executor.start()
    outcome: list[Any] = []

    def later_request() -> None:
        outcome.append(executor.submit({"x": Integer(5)}, "a").result())

    try:
        for x in range(warm):
            assert executor.submit({"x": Integer(x)}, "warm").result() == {"interrupted": x + 1, "beside": x + 2}
        interrupted = executor.submit({"x": Integer(-1)}, "a")
        with pytest.raises(KeyboardInterrupt):
            interrupted.result()
        with pytest.raises(CellError, match="KeyboardInterrupt"):
            interrupted.result(timeout=5)
        waiter = threading.Thread(target=later_request, daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert outcome == [{"interrupted": 6, "beside": 7}], "the request after the interrupted one never completed"
        stats = executor.stats()
        assert stats["cells"]["beside"]["running"] == 0
    finally:
        executor.stop(timeout=1)


@pytest.mark.parametrize("cell_cls", [AddOne, BatchRemember], ids=["plain", "batched"])
def test_without_workers_a_request_whose_deadline_passed_unwaited_frees_its_cell(cell_cls: type[Cell]) -> None:
    # Without workers only waiters run cells: nobody waited on the first request, so its call,
    # handed out at submit, never started when its deadline failed it. Its cell's slot must come back.
    executor = Executor(single(cell_cls), workers=0)
    executor.start()
    outcome: list[Any] = []

    def later_request() -> None:
        outcome.append(executor.submit({"x": Integer(2)}, "b").result())

    try:
        abandoned = executor.submit({"x": Integer(1)}, "a", timeout=0.05)
        finished, _ = wait([abandoned], timeout=30)  # not result(): that would run the call
        assert finished
        with pytest.raises(DeadlineExceededError):
            abandoned.result()
        waiter = threading.Thread(target=later_request, daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert len(outcome) == 1, "the request after the expired one never completed"
        assert executor.stats()["cells"]["c0"]["running"] == 0
    finally:
        executor.stop(timeout=1)


GATE_ARMED = threading.Event()
DEADLINE_PASSED = threading.Event()


class Gate(Cell):
    """Once armed, its next call waits until the request sent beside it has failed its deadline."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if GATE_ARMED.is_set():
            GATE_ARMED.clear()
            assert DEADLINE_PASSED.wait(timeout=20)
        return YOut(y=inputs.x)


def test_without_workers_a_call_claimed_by_a_waiter_whose_request_then_expired_frees_its_cell() -> None:
    # The waiter of `first` runs c0 for it; that hands out c1 for `first` and c0 for `expiring` (fast:
    # the waiter claims it to run next). While c1 runs, `expiring`'s deadline fails it, which cannot
    # settle a call another thread holds. `first` ends; the waiter must settle that call, not drop it.
    GATE_ARMED.clear()
    DEADLINE_PASSED.clear()
    executor = Executor(chain_pipeline(AddOne, Gate), workers=0)
    executor.start()
    outcome: list[Any] = []
    try:
        for x in range(40):  # the cells turn fast
            assert executor.submit({"x": Integer(x)}, "warm").result() == {"y": x + 1}
        first = executor.submit({"x": Integer(1)}, "first")
        expiring = executor.submit({"x": Integer(2)}, "expiring", timeout=0.2)
        expiring.add_done_callback(lambda _: DEADLINE_PASSED.set())
        GATE_ARMED.set()
        assert first.result() == {"y": 2}
        with pytest.raises(DeadlineExceededError):
            expiring.result()
        waiter = threading.Thread(target=lambda: outcome.append(executor.submit({"x": Integer(5)}, "t").result()), daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert outcome == [{"y": 6}], "the request after the expired one never completed"
        assert executor.stats()["cells"]["c0"]["running"] == 0
    finally:
        DEADLINE_PASSED.set()
        executor.stop(timeout=1)


def test_concurrent_parameter_changes_are_all_applied() -> None:
    from tests.conftest import Scale

    executor = Executor(single(Scale))
    executor.start()
    try:
        barrier = threading.Barrier(2)

        def change(field: str, value: Any) -> None:
            barrier.wait(timeout=10)
            for _ in range(50):
                executor.set_parameters({"c0": {field: value}})

        run_threads(change, [("factor", 7), ("offset", 1.5)], timeout=30)
        params = executor.get_parameters()["c0"]
        assert (params.factor, params.offset) == (7, 1.5)  # type: ignore[attr-defined]
    finally:
        executor.stop()


def test_without_workers_waiters_of_one_sid_hand_work_to_each_other() -> None:
    # Every thread waits on its own request of the same sid: a cell may finish for one
    # waiter the work another waiter sleeps on, and that waiter must wake up and run it.
    executor = Executor(chain_pipeline(Remember, Remember, Remember), workers=0)
    executor.start()
    futures = [executor.submit({"x": Integer(x)}, "shared") for x in range(40)]
    seen: dict[int, list[int]] = {}

    def waiter(index: int) -> None:
        seen[index] = [int(v) for v in futures[index].result()["seen"]]

    try:
        run_threads(waiter, [(i,) for i in reversed(range(40))], timeout=30)
    finally:
        executor.stop()
    assert seen == {i: list(range(i + 1)) for i in range(40)}


def test_without_workers_batched_cells_still_run_after_their_wait() -> None:
    from tests.conftest import BatchRemember

    executor = Executor(single(BatchRemember), workers=0)
    executor.start()
    try:
        futures = [executor.submit({"x": Integer(x)}, f"s{x}") for x in range(5)]
        assert [int(f.result()["y"]) for f in futures] == list(range(5))
    finally:
        executor.stop()


class FrozenClock:
    """A clock that stands still until the test moves it."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


FIRST_BATCH = threading.Event()
SIZES: list[int] = []


@cell(max_batch_size=8, max_batch_wait=600)
class Sized(Cell):
    """Records batch sizes; the very first batch waits until every stream has sent its first request."""

    @classmethod
    def call_batch(cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]) -> list[YOut]:
        if not SIZES:
            assert FIRST_BATCH.wait(timeout=20)
        SIZES.append(len(inputs_list))
        return [YOut(y=i.x) for i in inputs_list]


def test_streams_that_resend_from_completion_callbacks_get_full_batches() -> None:
    # 8 closed-loop streams: each completion callback sends that stream's next request. The
    # callbacks of one batch must be batched together, not dispatched one by one as they arrive.
    SIZES.clear()
    FIRST_BATCH.clear()
    clock = FrozenClock()
    executor = Executor(single(Sized), clock=clock)
    executor.start()
    rounds = 12
    done = threading.Event()
    remaining = {f"s{i}": rounds for i in range(8)}
    lock = threading.Lock()

    def resend(sid: str) -> None:
        with lock:
            remaining[sid] -= 1
            left = remaining[sid]
            if not any(remaining.values()):
                done.set()
        if left:
            executor.submit({"x": Integer(left)}, sid).add_done_callback(lambda f, sid=sid: resend(sid))

    try:
        for sid in remaining:
            executor.submit({"x": Integer(0)}, sid).add_done_callback(lambda f, sid=sid: resend(sid))
        FIRST_BATCH.set()
        # Stream s0, one round ahead, ends first: the last batch of seven waits (the last batch
        # had eight streams) until max_batch_wait has passed on the executor's clock.
        deadline = time.monotonic() + 30
        while not (len(SIZES) == rounds and executor.stats()["cells"]["c0"]["queued"] == 7) and not done.is_set():
            assert time.monotonic() < deadline, f"streams did not finish; batches so far: {SIZES}"
            time.sleep(0.001)
        assert not done.is_set()
        clock.now = 1000.0
        executor.recheck_timers()
        assert done.wait(timeout=30), f"streams did not finish; batches so far: {SIZES}"
    finally:
        executor.stop()
    # The first request went alone (nothing else was in flight); while it ran the other seven queued.
    # From then on every batch holds all eight streams, and stream s0, one round ahead, ends first.
    assert SIZES == [1] + [8] * (rounds - 1) + [7], SIZES
