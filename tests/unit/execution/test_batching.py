"""Cross-stream batching correctness and the executor's timing statistics.

Deterministic: batches are assembled while a gate holds the cell, and every
wait is measured on a fake clock that only the test (or a cell) moves, so the
assertions are exact and no test sleeps to synchronise.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters
from rvai_sdk.exc import CellError, DeadlineExceededError, UnknownSidError
from rvai_sdk.execution import BatchingPolicy, Executor
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.types import Integer, List
from tests._sync import eventually
from tests.conftest import Seen, SeqOut, XIn, YOut, chain_pipeline, single
from tests.unit.execution.test_executor import run_threads

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def set(self, value: float) -> None:
        self._now = value

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


# -- cells ------------------------------------------------------------------------------------

LOG: list[tuple[list[str | None], list[int]]] = []
LOG_LOCK = threading.Lock()
HOLD = threading.Event()
HELD = threading.Event()


@cell(state=Seen, max_batch_size=4, max_batch_wait=0)
class Batcher(Cell):
    """Logs every batch; x == 0 holds the cell until HOLD is set; x == 13 fails alone;
    x == 66 returns a wrong-typed item; x == 77 makes the whole call raise.

    It does not wait for batches to fill: the tests queue everything before the cell is free,
    so the batches are decided by the queue alone.
    """

    @classmethod
    def call_batch(
        cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]
    ) -> list[SeqOut | Exception]:
        xs = [int(i.x) for i in inputs_list]
        with LOG_LOCK:
            LOG.append(([c.sid for c in contexts], xs))
        if 0 in xs:
            HELD.set()
            assert HOLD.wait(timeout=30)
        if 77 in xs:
            raise RuntimeError("the whole batch broke")
        outs: list[Any] = []
        for context, x in zip(contexts, xs):
            if x == 13:
                outs.append(ValueError("unlucky 13"))
                continue
            if x == 66:
                outs.append(YOut(y=Integer(x)))
                continue
            context.state.xs = List[Integer]([*context.state.xs, Integer(x)])
            outs.append(SeqOut(y=Integer(x), seen=context.state.xs))
        return outs


@cell(max_batch_size=4, max_batch_wait=600)
class ShortBatch(Cell):
    """Returns one output too few."""

    @classmethod
    def call_batch(cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]) -> list[YOut]:
        return [YOut(y=i.x) for i in inputs_list][:-1]


CLOCK = FakeClock()
TICK = 1 / 64  # binary-exact, so sums of ticks are exact


class Ticking(Cell):
    """Takes exactly one TICK of fake time; x == 0 holds until HOLD is set."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 0:
            HELD.set()
            assert HOLD.wait(timeout=30)
        CLOCK.advance(TICK)
        return YOut(y=inputs.x)


GATE = threading.Event()
GATE_ENTERED = threading.Event()


@cell(concurrency=2)
class Gate(Cell):
    """Passes x through; holds x == 99 until GATE is set."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 99:
            GATE_ENTERED.set()
            assert GATE.wait(timeout=30)
        return YOut(y=inputs.x)


@pytest.fixture(autouse=True)
def _reset() -> Any:
    LOG.clear()
    HOLD.clear()
    HELD.clear()
    GATE.clear()
    GATE_ENTERED.clear()
    CLOCK.set(0.0)
    yield
    HOLD.set()
    GATE.set()


def started(pipeline: Any, **options: Any) -> Executor:
    executor = Executor(pipeline, **options)
    executor.start()
    return executor


def held_then_queued(executor: Executor, sends: Sequence[tuple[str | None, int]]) -> list[Any]:
    """Submit x=0 (which holds the cell), then ``sends`` while it is held; release; the futures of ``sends``."""
    first = executor.submit({"x": Integer(0)}, "holder")
    assert HELD.wait(timeout=10)
    futures = [executor.submit({"x": Integer(x)}, sid) for sid, x in sends]
    HOLD.set()
    first.result(timeout=10)
    return futures


# -- batch assembly -----------------------------------------------------------------------------


def test_a_batch_takes_queued_requests_of_distinct_sids_in_arrival_order_up_to_the_size_limit() -> None:
    executor = started(single(Batcher))
    try:
        sends = [("a", 1), ("a", 2), ("b", 3), ("c", 4), ("d", 5), ("e", 6), ("a", 7), ("b", 8), ("b", 9)]
        futures = held_then_queued(executor, sends)
        outs = [f.result(timeout=10) for f in futures]
    finally:
        executor.stop()
    assert LOG == [
        (["holder"], [0]),
        (["a", "b", "c", "d"], [1, 3, 4, 5]),  # a's second request waits for a batch without a in it
        (["a", "e", "b"], [2, 6, 8]),
        (["a", "b"], [7, 9]),
    ]
    assert [list(o["seen"]) for o in outs] == [[1], [1, 2], [3], [4], [5], [6], [1, 2, 7], [3, 8], [3, 8, 9]]


def test_many_concurrent_streams_keep_per_sid_order_and_state_and_never_share_a_batch() -> None:
    executor = started(single(Batcher), batching={"c0": BatchingPolicy(max_batch_size=8, max_batch_wait=0.002)})
    failures: list[str] = []

    def stream_group(k: int) -> None:
        sids = [f"g{k}-{i}" for i in range(6)]
        futures = [(sid, x, executor.submit({"x": Integer(x)}, sid)) for x in range(100, 130) for sid in sids]
        for sid, x, future in futures:
            seen = [int(v) for v in future.result(timeout=30)["seen"]]
            if seen != list(range(100, x + 1)):
                failures.append(f"{sid}: {seen}")

    try:
        run_threads(stream_group, [(k,) for k in range(4)], timeout=50)
        stats = executor.stats()["cells"]["c0"]
    finally:
        executor.stop()
    assert not failures, failures[:3]
    for sids, _ in LOG:
        assert len(sids) <= 8
        assert len(set(sids)) == len(sids), f"one batch held a sid twice: {sids}"
    assert sum(len(s) for s, _ in LOG) == stats["items"] == 4 * 6 * 30
    assert max(len(s) for s, _ in LOG) > 1
    assert sum(stats["batch_sizes"].values()) == stats["calls"] == len(LOG)


def test_one_off_requests_share_a_batch_each_with_fresh_state() -> None:
    executor = started(single(Batcher))
    try:
        futures = held_then_queued(executor, [(None, 1), (None, 2), (None, 3)])
        assert [list(f.result(timeout=10)["seen"]) for f in futures] == [[1], [2], [3]]
    finally:
        executor.stop()
    assert LOG[1] == ([None, None, None], [1, 2, 3])


# -- per-item failures -----------------------------------------------------------------------


def test_an_exception_returned_for_one_item_fails_that_request_alone_and_its_sid_goes_on() -> None:
    executor = started(single(Batcher))
    try:
        futures = held_then_queued(executor, [("a", 1), ("b", 13), ("c", 3), ("b", 14)])
        assert LOG[1] == (["a", "b", "c"], [1, 13, 3])
        with pytest.raises(CellError, match="unlucky 13") as info:
            futures[1].result(timeout=10)
        assert (info.value.ref, info.value.sid, info.value.cause_type) == ("c0", "b", "ValueError")
        assert [list(futures[i].result(timeout=10)["seen"]) for i in (0, 2, 3)] == [[1], [3], [14]]
        stats = executor.stats()
    finally:
        executor.stop()
    assert stats["cells"]["c0"]["failures"] == 1
    assert (stats["requests"]["succeeded"], stats["requests"]["failed"]) == (4, 1)
    assert stats["requests"]["latency"]["count"] == 4  # failed requests are not in the latency summary


def test_a_request_whose_deadline_passed_after_its_batch_was_formed_is_left_out_of_the_call() -> None:
    """Its caller is told it exceeded its deadline: the call must not change its sid's state (it ran with the
    others of its batch; an unbatched cell skipped it, as the docs say)."""
    executor = started(single(Batcher))
    try:
        first = executor.submit({"x": Integer(0)}, "holder")
        assert HELD.wait(timeout=10)
        expired = threading.Event()
        late = executor.submit({"x": Integer(1)}, "a", timeout=0.5)
        late.add_done_callback(lambda _: expired.set())
        other = executor.submit({"x": Integer(2)}, "b")
        # The holder's callback runs on the worker that then runs the batch formed when the holder finished
        # (a and b): it holds that worker until a's deadline has passed.
        first.add_done_callback(lambda _: expired.wait(10))
        HOLD.set()
        with pytest.raises(DeadlineExceededError):
            late.result(timeout=10)
        assert list(other.result(timeout=10)["seen"]) == [2]
        try:
            kept = executor.get_state("a")
        except UnknownSidError:
            kept = {}
        assert [list(state.xs) for state in kept.values()] in ([], [[]]), kept  # never ran: its state untouched
    finally:
        executor.stop()
    assert LOG[1] == (["b"], [2])


def test_an_item_of_the_wrong_type_fails_alone_with_a_message_naming_the_expected_type() -> None:
    executor = started(single(Batcher))
    try:
        futures = held_then_queued(executor, [("a", 66), ("b", 2)])
        with pytest.raises(CellError, match="call_batch\\(\\) returned a YOut item; items must be SeqOut"):
            futures[0].result(timeout=10)
        assert futures[1].result(timeout=10)["y"] == 2
    finally:
        executor.stop()


def test_a_call_batch_that_raises_fails_every_item_of_that_batch_and_nothing_else() -> None:
    executor = started(single(Batcher))
    try:
        futures = held_then_queued(executor, [("a", 1), ("b", 77), ("a", 3)])
        for future in futures[:2]:
            with pytest.raises(CellError, match="the whole batch broke"):
                future.result(timeout=10)
        assert list(futures[2].result(timeout=10)["seen"]) == [3]  # a's first item failed: no state kept from it
    finally:
        executor.stop()


def test_a_call_batch_returning_too_few_items_fails_the_batch_with_a_clear_error() -> None:
    executor = started(single(ShortBatch))
    try:
        futures = [executor.submit({"x": Integer(x)}, f"s{x}") for x in (1, 2)]
        for future in futures:
            with pytest.raises(CellError, match=r"call_batch\(\) got \d inputs and returned \d items"):
                future.result(timeout=10)
    finally:
        executor.stop()


# -- the max-wait bound, on a fake clock ------------------------------------------------------


def test_a_lone_request_is_not_held_for_a_batch_that_nothing_could_fill() -> None:
    # The clock never moves: were the request held for max_batch_wait (600 s), it would never run.
    executor = started(single(Batcher), batching={"c0": BatchingPolicy(max_batch_wait=600)}, clock=CLOCK)
    try:
        assert executor.submit({"x": Integer(1)}, "a").result(timeout=10)["y"] == 1
        assert executor.stats()["cells"]["c0"]["queue_wait"]["max"] == 0.0
    finally:
        executor.stop()


def gated(policy: BatchingPolicy) -> Executor:
    pf = PipelineFactory(name="gated")
    gate = pf.add_cell(ref="gate", cell=Gate())
    batch = pf.add_cell(ref="batch", cell=Batcher())
    pf.declare_input(ref="x", input=gate.inputs.x)
    pf.connect(gate.outputs.y, batch.inputs.x)
    pf.declare_output(ref="seen", output=batch.outputs.seen)
    return started(pf.build(), batching={"batch": policy}, clock=CLOCK)


def test_a_batch_that_could_still_fill_waits_exactly_max_batch_wait() -> None:
    wait = 0.25
    executor = gated(BatchingPolicy(max_batch_size=8, max_batch_wait=wait))
    try:
        held = executor.submit({"x": Integer(99)}, "b")  # stuck upstream: could still join a batch
        assert GATE_ENTERED.wait(timeout=10)
        first = executor.submit({"x": Integer(1)}, "a")
        eventually(lambda: executor.stats()["cells"]["batch"]["queued"] == 1, "request a waits at the batched cell")
        CLOCK.set(wait - 2**-10)
        executor.recheck_timers()
        assert not first.done(), "dispatched before max_batch_wait"
        CLOCK.set(wait)
        executor.recheck_timers()
        assert list(first.result(timeout=10)["seen"]) == [1]
        assert not held.done()
        # The request waited exactly max_batch_wait on the executor's clock: not less (it was
        # still queued at wait - 1 ms, or its wait would read less) and not more (the clock stopped at `wait`).
        assert executor.stats()["cells"]["batch"]["queue_wait"]["max"] == wait
        GATE.set()
        assert list(held.result(timeout=10)["seen"]) == [99]
    finally:
        GATE.set()
        executor.stop()
    assert LOG == [(["a"], [1]), (["b"], [99])]


def test_a_batch_that_fills_goes_at_once_without_waiting() -> None:
    executor = gated(BatchingPolicy(max_batch_size=2, max_batch_wait=600))
    try:
        held = executor.submit({"x": Integer(99)}, "z")
        assert GATE_ENTERED.wait(timeout=10)
        futures = [executor.submit({"x": Integer(x)}, sid) for sid, x in (("a", 1), ("b", 2))]
        assert [list(f.result(timeout=10)["seen"]) for f in futures] == [[1], [2]]  # the clock never moved
        GATE.set()
        # z comes alone after a batch of two: it waits for max_batch_wait (the other streams could
        # come back), which only passes when the clock is moved.
        eventually(lambda: executor.stats()["cells"]["batch"]["queued"] == 1, "request z waits at the batched cell")
        assert not held.done()
        CLOCK.set(600)
        executor.recheck_timers()
        assert list(held.result(timeout=10)["seen"]) == [99]
        assert executor.stats()["cells"]["batch"]["queue_wait"]["max"] == 600
    finally:
        GATE.set()
        executor.stop()
    assert LOG == [(["a", "b"], [1, 2]), (["z"], [99])]


def test_streams_of_the_last_two_batches_are_waited_for_so_closed_loop_streams_stay_in_one_batch() -> None:
    # Closed-loop streams send again only once answered, possibly from another process: a batch
    # that went with the first stream back would split the streams into alternating groups.
    executor = started(single(Batcher), batching={"c0": BatchingPolicy(max_batch_size=8, max_batch_wait=600)}, clock=CLOCK)
    try:
        for future in held_then_queued(executor, [("a", 1), ("b", 1), ("c", 1), ("d", 1)]):
            future.result(timeout=10)
        # The last two batches held five streams (holder, a, b, c, d): a lone request waits for them.
        second = [executor.submit({"x": Integer(2)}, sid) for sid in ("a", "b", "c", "d")]
        assert executor.stats()["cells"]["c0"]["queued"] == 4 and not any(f.done() for f in second)
        second.append(executor.submit({"x": Integer(2)}, "holder"))  # the fifth: the batch goes at once
        for future in second:
            future.result(timeout=10)
        # A stream count that drops costs at most max_batch_wait, twice (the last two batches).
        for round_ in range(3):
            lone = executor.submit({"x": Integer(3)}, "e")
            if round_ < 2:
                assert executor.stats()["cells"]["c0"]["queued"] == 1  # submit decided it: the request waits
                assert not lone.done()
                CLOCK.advance(600)
                executor.recheck_timers()
            lone.result(timeout=10)
    finally:
        executor.stop()
    assert [len(sids) for sids, _ in LOG] == [1, 4, 5, 1, 1, 1]


def test_streams_busy_downstream_are_not_waited_for() -> None:
    # Stream b is held in a cell after the batched one: it cannot send again, so a's next request
    # goes at once (on a frozen clock, a wait for b would never end).
    pf = PipelineFactory(name="batch-then-gate")
    batch = pf.add_cell(ref="batch", cell=Batcher())
    gate = pf.add_cell(ref="gate", cell=Gate())
    pf.declare_input(ref="x", input=batch.inputs.x)
    pf.connect(batch.outputs.y, gate.inputs.x)
    pf.declare_output(ref="y", output=gate.outputs.y)
    executor = started(pf.build(), batching={"batch": BatchingPolicy(max_batch_size=8, max_batch_wait=600)}, clock=CLOCK)
    try:
        holder = executor.submit({"x": Integer(0)}, None)  # a one-off request: not a stream
        assert HELD.wait(timeout=10)
        a1, b1 = executor.submit({"x": Integer(1)}, "a"), executor.submit({"x": Integer(99)}, "b")
        HOLD.set()
        holder.result(timeout=10)
        assert a1.result(timeout=10) == {"y": 1}
        assert GATE_ENTERED.wait(timeout=10)
        assert executor.submit({"x": Integer(2)}, "a").result(timeout=10) == {"y": 2}
        GATE.set()
        assert b1.result(timeout=10) == {"y": 99}
    finally:
        GATE.set()
        executor.stop()
    assert LOG == [([None], [0]), (["a", "b"], [1, 99]), (["a"], [2])]


def test_stop_sends_a_batch_that_waits_to_fill_instead_of_failing_it() -> None:
    executor = started(single(Batcher), batching={"c0": BatchingPolicy(max_batch_size=8, max_batch_wait=600)}, clock=CLOCK)
    try:
        for future in held_then_queued(executor, [("a", 1), ("b", 1)]):
            future.result(timeout=10)
        waiting = executor.submit({"x": Integer(2)}, "a")  # waits for b and the holder (frozen clock)
        assert executor.stats()["cells"]["c0"]["queued"] == 1
    finally:
        executor.stop(timeout=30)
    assert list(waiting.result(timeout=0)["seen"]) == [1, 2]
    assert LOG[-1] == (["a"], [2])


# -- statistics ------------------------------------------------------------------------------


def test_stats_record_queue_waits_call_times_and_latencies() -> None:
    # Three requests of one sid queue behind a held call; each call takes one TICK of fake time.
    executor = started(single(Ticking), clock=CLOCK)
    try:
        first = executor.submit({"x": Integer(0)}, "s")
        assert HELD.wait(timeout=10)
        rest = [executor.submit({"x": Integer(x)}, "s") for x in (1, 2)]
        HOLD.set()
        for future in [first, *rest]:
            future.result(timeout=10)
        stats = executor.stats()
    finally:
        executor.stop()
    cell_ = stats["cells"]["c0"]
    assert cell_["call_time"]["count"] == 3 and cell_["call_time"]["sum"] == 3 * TICK
    assert cell_["call_time"]["p50"] == cell_["call_time"]["p99"] == cell_["call_time"]["max"] == TICK
    waits = cell_["queue_wait"]
    assert (waits["count"], waits["sum"], waits["max"]) == (3, 0 + TICK + 2 * TICK, 2 * TICK)
    latency = stats["requests"]["latency"]
    assert (latency["count"], latency["sum"], latency["max"]) == (3, TICK + 2 * TICK + 3 * TICK, 3 * TICK)
    assert cell_["batch_size"] == {"count": 3, "mean": 1.0, "p50": 1, "p90": 1, "p99": 1, "max": 1}
    assert sum(n for _, n in waits["buckets"]) == 3


def test_stats_of_a_chain_count_every_cell_and_summarise_batch_sizes() -> None:
    executor = started(chain_pipeline(Ticking, Batcher), clock=CLOCK)
    try:
        futures = [executor.submit({"x": Integer(x)}, f"s{x % 5}") for x in range(100, 140)]
        for future in futures:
            future.result(timeout=20)
        stats = executor.stats()
    finally:
        executor.stop()
    ticking, batcher = stats["cells"]["c0"], stats["cells"]["c1"]
    assert ticking["call_time"]["count"] == ticking["calls"] == 40
    assert ticking["queue_wait"]["count"] == 40
    assert batcher["items"] == 40
    assert batcher["calls"] == sum(batcher["batch_sizes"].values())
    sizes = batcher["batch_size"]
    assert sizes["count"] == batcher["calls"]
    assert sizes["mean"] == 40 / batcher["calls"]
    assert sizes["max"] == max(batcher["batch_sizes"]) <= 4
    # The batched cell takes no time on the frozen clock, so it counts as fast and is sampled,
    # and so are the latencies of the requests it finishes.
    assert 0 < stats["requests"]["latency"]["count"] <= 40


def test_a_fast_cell_records_the_timings_of_one_call_in_sixteen() -> None:
    from rvai_sdk.execution import executor as module

    executor = started(single(Batcher), clock=CLOCK)  # the fake clock stands still: calls take 0 s
    try:
        futures = held_then_queued(executor, [(f"s{i}", 1) for i in range(99)])
        for future in futures:
            future.result(timeout=10)
        for x in range(200):
            executor.submit({"x": Integer(1)}, "solo").result(timeout=10)
        stats = executor.stats()["cells"]["c0"]
    finally:
        executor.stop()
    fast_calls = stats["calls"] - module._FAST_AFTER_CALLS
    assert stats["calls"] > 200 and stats["items"] == 300
    assert module._FAST_AFTER_CALLS + fast_calls // 16 <= stats["call_time"]["count"] <= module._FAST_AFTER_CALLS + fast_calls // 16 + 1
    assert stats["call_time"]["max"] == 0.0


def test_stats_keep_counting_past_the_fold_threshold() -> None:
    from rvai_sdk.execution import executor as module

    executor = started(single(Ticking), clock=CLOCK)  # one call per request (of TICK): folds twice on the way
    try:
        total = 2 * module._FOLD_EVERY + 100
        futures = [executor.submit({"x": Integer(1)}, None) for _ in range(total)]
        for future in futures:
            future.result(timeout=30)
        stats = executor.stats()
    finally:
        executor.stop()
    assert stats["cells"]["c0"]["queue_wait"]["count"] == total
    assert stats["cells"]["c0"]["call_time"]["count"] == total
    assert sum(n for _, n in stats["cells"]["c0"]["call_time"]["buckets"]) == total
    assert stats["requests"]["latency"]["count"] == total


@pytest.mark.parametrize("wait", [float("inf"), float("nan"), -1.0])
def test_a_batch_wait_that_is_not_a_finite_number_of_seconds_is_refused_naming_the_cell_or_field(wait: float) -> None:
    """An infinite wait was taken and killed the batch timer thread the first time a batch waited: from then on
    no batch of any cell that needed the timer was ever sent."""
    from rvai_sdk.exc import CellDefinitionError, ParameterError

    with pytest.raises(CellDefinitionError, match=r"cell Patient: max_batch_wait must be >= 0 seconds and finite"):

        @cell(max_batch_size=4, max_batch_wait=wait)
        class Patient(Cell):
            @classmethod
            def call_batch(cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]) -> list[YOut]:
                return [YOut(y=i.x) for i in inputs_list]

    with pytest.raises(ParameterError, match=r"BatchingPolicy.max_batch_wait must be a number of seconds >= 0") as info:
        BatchingPolicy(max_batch_wait=wait)
    assert info.value.field == "max_batch_wait"
