"""The scheduler's ordering guarantees with real worker threads: a sid's requests reach every cell in submit order."""

from __future__ import annotations

import threading
import time

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters
from rvai_sdk.execution import BatchingPolicy, Executor
from rvai_sdk.types import Integer, List
from tests.conftest import BatchRemember, Seen, XIn, YOut, chain_pipeline, single

pytestmark = pytest.mark.timeout(120)


@cell(state=Seen, concurrency=4)
class WideRemember(Cell):
    """Remember with four concurrent calls: per-sid exclusivity must keep each sid's calls one at a time, in order."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        context.state.xs = List[Integer]([*context.state.xs, inputs.x])
        return YOut(y=inputs.x)


@pytest.mark.parametrize("workers", [None, 0])
def test_each_sid_sees_its_requests_in_submit_order_through_a_concurrent_and_a_batched_cell(workers: int | None) -> None:
    sids, per_sid = 300, 6
    executor = Executor(
        chain_pipeline(WideRemember, BatchRemember),
        batching={"c1": BatchingPolicy(max_batch_size=16, max_batch_wait=0)},
        workers=workers,
    )
    executor.start()
    try:
        futures = [
            executor.submit({"x": Integer(1000 + round_ * sids + s)}, f"s{s}") for round_ in range(per_sid) for s in range(sids)
        ]
        results = [f.result() for f in futures]  # no timeout: with workers=0 the waiting caller runs the cells
        states = {f"s{s}": executor.get_state(f"s{s}") for s in range(sids)}
    finally:
        executor.stop()
    for s in range(sids):
        wanted = [1000 + round_ * sids + s for round_ in range(per_sid)]
        assert [int(x) for x in states[f"s{s}"]["c0"].xs] == wanted, f"sid s{s} at the concurrent cell"
        assert [int(x) for x in states[f"s{s}"]["c1"].xs] == wanted, f"sid s{s} at the batched cell"
    assert [int(r["y"]) for r in results] == [1000 + n for n in range(sids * per_sid)]


class Where(Cell):
    """Passes x through and records the thread that ran it."""

    threads: list[int] = []

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        cls.threads.append(threading.get_ident())
        return YOut(y=inputs.x)


class Held(Cell):
    """Computes for a while (hundreds of microseconds: not a fast cell), and waits for the test's event."""

    release = threading.Event()

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        sum(range(100_000))
        assert cls.release.wait(30), "the test never released the held call"
        return YOut(y=inputs.x)


def test_submit_here_runs_fast_first_calls_in_the_calling_thread_and_leaves_slow_ones_to_the_workers() -> None:
    # The inference server's connection thread submits a lone request with here=True: its fast
    # calls run on that thread (no hand-off), a slow one goes to a worker so reading goes on.
    Where.threads.clear()
    Held.release.clear()
    executor = Executor(chain_pipeline(Where, Held))
    executor.start()
    try:
        Held.release.set()
        for x in range(40):  # enough calls for the first cell to count as fast
            assert executor.submit({"x": Integer(x)}, here=True).result(timeout=10) == {"y": x}
        Held.release.clear()
        Where.threads.clear()
        future = executor.submit({"x": Integer(7)}, here=True)  # must return while the held call waits
        assert Where.threads == [threading.get_ident()], "the fast first call did not run in the submitting thread"
        assert not future.done()
        Held.release.set()
        assert future.result(timeout=10) == {"y": 7}
        Where.threads.clear()
        executor.submit({"x": Integer(8)}).result(timeout=10)  # without here: never in this thread
        assert Where.threads and Where.threads != [threading.get_ident()]
    finally:
        Held.release.set()
        executor.stop()


class Pause(Cell):
    """Passes x through after sleeping x milliseconds (its call costs what the test asks); records the thread."""

    threads: list[int] = []

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        cls.threads.append(threading.get_ident())
        if inputs.x:
            time.sleep(inputs.x / 1000)
        return YOut(y=inputs.x)


def test_a_quick_cell_that_turns_slow_stops_running_in_the_submitting_thread_at_once_and_comes_back_when_quick() -> None:
    # What runs on the thread that reads requests is decided by a cell's recent calls, not its
    # lifetime: after thousands of quick calls, one slow call (a model swap, a stall) must send the
    # next ones to the workers, so that reading is not held up by a cell that became slow.
    me = threading.get_ident()
    executor = Executor(single(Pause))
    executor.start()
    try:
        for _ in range(2000):
            executor.submit({"x": Integer(0)}, here=True).result(timeout=10)
        assert Pause.threads[-1] == me, "a quick cell did not run in the submitting thread"
        executor.submit({"x": Integer(20)}, here=True).result(timeout=10)  # one call of 20 ms
        Pause.threads.clear()
        executor.submit({"x": Integer(0)}, here=True).result(timeout=10)
        assert Pause.threads != [me], "the cell still ran in the submitting thread after a slow call"
        for _ in range(200):  # quick again for a while
            executor.submit({"x": Integer(0)}).result(timeout=10)
        Pause.threads.clear()
        executor.submit({"x": Integer(0)}, here=True).result(timeout=10)
        assert Pause.threads == [me], "the cell did not come back to the submitting thread once quick again"
    finally:
        executor.stop()
