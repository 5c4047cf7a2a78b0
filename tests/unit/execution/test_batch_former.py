"""Batch formation alone: the BatchFormer driven with a fake clock (plain floats), no threads, no cells."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from rvai_sdk.execution import BatchFormer


@dataclass(eq=False)
class Stream:
    inflight: int = 0


@dataclass(eq=False)
class Item:
    sid: str | None
    n: int
    entry: Stream = field(default_factory=Stream)
    failed: bool = False


def former(size: int = 4, wait: float = 0.0) -> BatchFormer[Item]:
    return BatchFormer(size, wait)


def feed(f: BatchFormer[Item], items: list[Item], ready: float = 0.0) -> None:
    for item in items:
        f.expect()
        f.add(item, ready)


def take(f: BatchFormer[Item], now: float = 0.0, **flags: bool) -> list[Item]:
    batch = f.next_batch(now, **flags)
    assert isinstance(batch, list), f"expected a batch, got {batch!r}"
    return batch


def names(batch: list[Item]) -> list[tuple[str | None, int]]:
    return [(i.sid, i.n) for i in batch]


def test_a_batch_takes_at_most_max_batch_size_items_oldest_first() -> None:
    f = former(size=4)
    feed(f, [Item(f"s{n}", n) for n in range(10)])
    assert [i.n for i in take(f)] == [0, 1, 2, 3]
    assert [i.n for i in take(f)] == [4, 5, 6, 7]
    assert [i.n for i in take(f)] == [8, 9]
    assert f.next_batch(0.0) is None
    assert (len(f), f.expected) == (0, 0)


def test_a_batch_holds_at_most_one_item_per_sid_and_a_busy_sid_waits_for_its_call_to_end() -> None:
    f = former(size=4)
    a1, a2, b1, a3 = Item("a", 1), Item("a", 2), Item("b", 1), Item("a", 3)
    feed(f, [a1, a2, b1, a3])
    first = take(f)
    assert names(first) == [("a", 1), ("b", 1)]
    assert f.busy == {"a", "b"}
    assert f.next_batch(0.0) is None, "a is busy in the cell: a2 must not be batched while a1 runs"
    f.finished(first, now=1.0)
    assert names(take(f, 1.0)) == [("a", 2)]
    assert f.next_batch(1.0) is None
    f.finished([a2], now=2.0)
    assert names(take(f, 2.0)) == [("a", 3)]


def test_items_without_a_sid_are_independent() -> None:
    f = former(size=8)
    feed(f, [Item(None, n) for n in range(3)] + [Item("a", 1), Item("a", 2)])
    assert names(take(f)) == [(None, 0), (None, 1), (None, 2), ("a", 1)]


def test_a_batch_that_could_still_fill_waits_max_batch_wait_from_its_oldest_item() -> None:
    f = former(size=8, wait=0.005)
    for _ in range(3):
        f.expect()  # three requests on their way (upstream)
    f.add(Item("a", 1), 10.0)
    assert f.next_batch(10.0) == 10.005
    assert f.next_batch(10.004) == 10.005
    f.add(Item("b", 1), 10.004)
    assert f.next_batch(10.0049) == 10.005, "the wait counts from the oldest item"
    assert names(take(f, 10.005)) == [("a", 1), ("b", 1)]
    assert f.expected == 1


def test_the_wait_counts_from_when_the_cell_was_free() -> None:
    f = former(size=8, wait=0.5)
    feed(f, [Item("a", 1)])
    batch = take(f, 0.0)
    f.expect()
    f.expect()
    f.add(Item("b", 1), 1.0)  # arrives while a's call runs
    f.finished(batch, now=3.0)
    assert f.next_batch(3.0) == 3.5, "time queued behind a running call is not time to fill in"
    assert names(take(f, 3.5)) == [("b", 1)]


def test_with_no_wait_a_batch_goes_even_when_the_callers_clock_is_behind_the_cells() -> None:
    # The scheduler reads the clock before it takes its lock: a thread that read 9.0 can dispatch
    # after another recorded the cell free at 10.0. With max_batch_wait=0 no batch timer runs, so
    # answering "ask again at 10.0" left the batch waiting for ever (a hang seen under load).
    f = former(size=8, wait=0.0)
    feed(f, [Item("a", 1)])
    batch = take(f, 0.0)
    for _ in range(3):
        f.expect()  # more on their way: a batch with a wait would wait for them
    f.add(Item("b", 1), 10.0)
    f.finished(batch, now=10.0)
    assert names(take(f, 9.0)) == [("b", 1)]


def test_a_batch_goes_at_once_when_nothing_could_join_it() -> None:
    f = former(size=8, wait=600)
    feed(f, [Item("a", 1), Item("b", 1)])  # everything expected has arrived; no recent streams
    assert names(take(f, 0.0)) == [("a", 1), ("b", 1)]


def test_running_callbacks_hold_a_batch_that_is_not_full() -> None:
    f = former(size=8, wait=1.0)
    feed(f, [Item("a", 1)])
    assert f.next_batch(0.0, resolving=True) == 1.0
    assert names(take(f, 0.0)) == [("a", 1)]


def test_stopping_lets_a_batch_go_at_once() -> None:
    f = former(size=8, wait=600)
    for _ in range(5):
        f.expect()
    f.add(Item("a", 1), 0.0)
    assert f.next_batch(0.0) == 600.0
    assert names(take(f, 0.0, closed=True)) == [("a", 1)]


def test_a_batch_waits_for_the_streams_of_the_last_two_batches_while_one_of_them_is_idle() -> None:
    f = former(size=8, wait=1.0)
    streams = {sid: Stream() for sid in "abc"}
    batch = [Item(sid, 1, streams[sid]) for sid in "abc"]
    feed(f, batch)
    assert len(take(f)) == 3
    f.finished(batch, now=5.0)
    # Stream a sends again; b and c are between requests (inflight 0): they may send soon.
    streams["a"].inflight = 1
    feed(f, [Item("a", 2, streams["a"])], ready=5.0)
    assert f.next_batch(5.0) == 6.0
    # Once b and c have requests in flight elsewhere, waiting cannot fill the batch: it goes.
    streams["b"].inflight = streams["c"].inflight = 1
    assert names(take(f, 5.0)) == [("a", 2)]


def test_discarded_items_are_never_batched_and_the_next_item_of_their_sid_moves_up() -> None:
    f = former(size=8)
    a1, a2, b1, loose = Item("a", 1), Item("a", 2), Item("b", 1), Item(None, 0)
    feed(f, [a1, a2, b1, loose])
    f.discard(a1, queued=True)
    f.discard(loose, queued=True)
    f.expect()
    f.discard(Item("c", 1), queued=False)  # failed upstream: it will not arrive
    assert (len(f), f.expected) == (2, 2)
    assert names(take(f)) == [("a", 2), ("b", 1)]
    assert (len(f), f.expected) == (0, 0)


def test_a_non_head_item_of_a_busy_sid_can_be_discarded() -> None:
    f = former(size=8)
    a1, a2, a3 = Item("a", 1), Item("a", 2), Item("a", 3)
    feed(f, [a1, a2, a3])
    assert take(f) == [a1]
    f.discard(a3, queued=True)
    f.discard(a2, queued=True)
    f.finished([a1], now=1.0)
    assert f.next_batch(1.0) is None
    assert (len(f), f.expected) == (0, 0)


@pytest.mark.parametrize("waiting", [10, 10_000])
def test_the_work_of_forming_a_batch_does_not_grow_with_the_waiting_sids(waiting: int) -> None:
    f = former(size=8)
    feed(f, [Item(f"s{n}", n) for n in range(8 + waiting)])
    busy = take(f)  # 8 sids busy; give each many more waiting items
    feed(f, [Item(item.sid, 1000 + k) for k in range(waiting // 10) for item in busy])
    before = f.examined
    batch = take(f)
    assert len(batch) == 8
    assert f.examined - before == 8, "a batch of 8 looks at 8 heap entries, however many sids wait"


def reference_batch(queue: list[Item], busy: set[str], limit: int) -> list[Item]:
    """The rule, written as a scan: oldest first, one per sid, none of a busy sid."""
    chosen: list[Item] = []
    seen = set(busy)
    for item in queue:
        if item.failed:
            continue
        if len(chosen) < limit and (item.sid is None or item.sid not in seen):
            chosen.append(item)
            if item.sid is not None:
                seen.add(item.sid)
    return chosen


@pytest.mark.parametrize("seed", range(5))
def test_batches_match_the_scan_that_defines_the_rule_over_random_traffic(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.choice([1, 3, 8])
    f = former(size=limit)
    queue: list[Item] = []  # reference: arrival order
    running: list[list[Item]] = []
    busy: set[str] = set()
    sids = [None] + [f"s{k}" for k in range(rng.choice([2, 5, 40]))]
    for step in range(3000):
        op = rng.random()
        if op < 0.5:
            item = Item(rng.choice(sids), step)
            f.expect()
            f.add(item, float(step))
            queue.append(item)
        elif op < 0.7:
            expected = reference_batch(queue, busy, limit)
            got = f.next_batch(float(step))
            assert (got or []) == expected, f"step {step}"
            if expected:
                assert isinstance(got, list)
                running.append(got)
                ids = {id(i) for i in got}
                queue = [i for i in queue if id(i) not in ids and not i.failed]
                busy.update(i.sid for i in got if i.sid is not None)
        elif op < 0.9 and running:
            batch = running.pop(rng.randrange(len(running)))
            f.finished(batch, float(step))
            busy.difference_update(i.sid for i in batch if i.sid is not None)
        else:
            live = [i for i in queue if not i.failed]
            if live:
                victim = rng.choice(live)
                victim.failed = True
                f.discard(victim, queued=True)
        assert len(f) == sum(not i.failed for i in queue)
