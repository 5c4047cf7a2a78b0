"""Thousands of streams (issue 21): the per-request work of the hot-path structures does not grow with the sids.

No timing: each structure counts the entries it looks at (``examined``), and the
tests pin that count with 10 and with 10,000 sids waiting, in flight or kept.
Exact per-sid order is checked with 10,000 interleaved sids through the executor.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters
from rvai_sdk.execution import BatchingPolicy, Executor, StateStore
from rvai_sdk.execution.sidqueue import SidQueue
from rvai_sdk.types import Integer
from tests.conftest import BATCHES, BatchRemember, Count, Counter, XIn, YOut, chain_pipeline
from tests.unit.execution.test_scheduler import WideRemember

pytestmark = pytest.mark.timeout(240)

BOUND = 150.0
"""Seconds a load loop may take at most (normally 2-4 s; a machine loaded 20 deep can take 40 s or more)."""

X0 = 1000
"""Inputs start here (BatchRemember fails x == 13)."""


@dataclass(eq=False)
class Item:
    sid: str | None
    n: int
    failed: bool = False


# -- kept states ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [10, 10_000])
def test_a_new_sid_beyond_max_states_evicts_one_idle_sid_without_looking_at_those_in_flight(in_flight: int) -> None:
    store = StateStore(ttl=None, max_states=8)
    busy = [store.acquire(f"busy{n}", now=float(n)) for n in range(in_flight)]  # oldest first, never released
    store.release(store.acquire("idle", now=1e6), now=1e6)
    before = store.examined
    store.acquire("new", now=1e6 + 1)
    assert store.examined - before == 1, "eviction looks at the one idle sid it drops, not at the sids in flight"
    assert store.get("idle") is None and store.get("busy0") is busy[0] and store.get("new") is not None
    assert store.evicted == 1


@pytest.mark.parametrize("in_flight", [10, 10_000])
def test_expiry_never_looks_at_sids_in_flight(in_flight: int) -> None:
    store = StateStore(ttl=1.0, max_states=100_000)
    for n in range(in_flight):
        store.acquire(f"busy{n}", now=0.0)  # in flight for far longer than the TTL
    store.release(store.acquire("idle", now=0.0), now=0.0)
    before = store.examined
    store.expire(now=100.0)
    assert store.examined - before == 1, "expiry drops the one idle sid past the TTL and looks at nothing else"
    assert len(store) == in_flight and store.expired == 1


def test_kept_states_follow_the_rule_under_random_traffic() -> None:
    """Against the rule written as scans: expire idle sids past the TTL; beyond the bound, drop the idle sid idle longest."""
    rng = random.Random(21)
    store = StateStore(ttl=50.0, max_states=20)
    ref: dict[str, list[float]] = {}  # sid -> [requests in flight, last used]
    held: list[tuple[str, Any]] = []
    now = 0.0
    for _ in range(5_000):
        now += rng.random()
        if held and rng.random() < 0.5:
            sid, entry = held.pop(rng.randrange(len(held)))
            store.release(entry, now)
            if sid in ref and ref[sid][2] is entry:
                ref[sid][0] -= 1
                ref[sid][1] = now
            continue
        sid = f"s{rng.randrange(60)}"
        new = sid not in ref
        if new:
            ref[sid] = [0, now, None]
        ref[sid][0] += 1  # in flight from here: never dropped below
        ref[sid][1] = now
        while new and len(ref) > 20:
            idle = [s for s, (n, _, _) in ref.items() if n == 0]
            if not idle:
                break
            del ref[min(idle, key=lambda s: ref[s][1])]
        for s in [s for s, (n, last, _) in ref.items() if n == 0 and last < now - 50.0]:
            del ref[s]
        entry = store.acquire(sid, now)
        ref[sid][2] = ref[sid][2] or entry
        assert ref[sid][2] is entry, "a kept sid keeps its state"
        held.append((sid, entry))
        assert sorted(store.sids()) == sorted(ref), f"after {sid} at {now:.1f}"


# -- concurrent unbatched cells ---------------------------------------------------------------


@pytest.mark.parametrize("waiting", [10, 10_000])
def test_taking_the_next_request_of_a_concurrent_cell_does_not_grow_with_the_waiting_sids(waiting: int) -> None:
    q: SidQueue[Item] = SidQueue()
    for n in range(waiting):
        q.append(Item(f"s{n}", n))
    running = [q.take() for _ in range(waiting)]  # every sid busy...
    for item in running:
        assert item is not None
        q.append(Item(item.sid, 1))  # ...with a request waiting behind it
    q.append(Item("free", 2))
    before = q.examined
    taken = q.take()
    assert taken is not None and taken.sid == "free"
    assert q.examined - before == 1, "one heap entry looked at, however many busy sids wait"
    assert q.take() is None


def test_a_concurrent_cell_takes_the_oldest_request_of_a_free_sid_under_random_traffic() -> None:
    """Against the rule written as a scan: oldest first, none of a busy sid, failed requests skipped."""
    rng = random.Random(14)
    q: SidQueue[Item] = SidQueue()
    ref: list[Item] = []
    running: list[Item] = []
    for n in range(20_000):
        roll = rng.random()
        if roll < 0.45:
            item = Item(rng.choice([None, *(f"s{k}" for k in range(30))]), n)
            q.append(item)
            ref.append(item)
        elif roll < 0.5 and ref:
            rng.choice(ref).failed = True
        elif roll < 0.75:
            busy = {r.sid for r in running if r.sid is not None}
            expected = next((r for r in ref if not r.failed and (r.sid is None or r.sid not in busy)), None)
            got = q.take()
            assert got is expected
            if got is not None:
                running.append(got)
                ref.remove(got)
        elif running:
            done = running.pop(rng.randrange(len(running)))
            q.finished(done.sid)


# -- the executor, end to end ----------------------------------------------------------------


def test_each_of_10000_interleaved_sids_sees_its_requests_in_order_through_a_concurrent_and_a_batched_cell() -> None:
    sids, rounds = 10_000, 2
    executor = Executor(
        chain_pipeline(WideRemember, BatchRemember),
        batching={"c1": BatchingPolicy(max_batch_size=64, max_batch_wait=0)},
    )
    executor.start()
    try:
        futures = [executor.submit({"x": Integer(X0 + r * sids + s)}, f"s{s}") for r in range(rounds) for s in range(sids)]
        _, pending = wait(futures, timeout=BOUND)
        assert not pending, (
            f"{len(pending)} requests unfinished after {BOUND} s: {executor.stats()['cells']}; "
            f"threads of this process: {sorted(t.name for t in threading.enumerate())}"
        )
        for future in futures:
            future.result()
        wanted = {f"s{s}": [X0 + r * sids + s for r in range(rounds)] for s in range(sids)}
        for sid, xs in wanted.items():
            state = executor.get_state(sid)
            assert [int(x) for x in state["c0"].xs] == xs, f"sid {sid} at the concurrent cell"
            assert [int(x) for x in state["c1"].xs] == xs, f"sid {sid} at the batched cell"
    finally:
        executor.stop()
        BATCHES.clear()


def test_10000_closed_loop_streams_each_see_their_requests_in_order() -> None:
    """Streams that resend from the completion callback, as drivers do: each sid's state counts its own requests."""
    sids, rounds = 10_000, 2
    executor = Executor(chain_pipeline(BatchRemember), batching={"c0": BatchingPolicy(max_batch_size=64, max_batch_wait=0.002)})
    executor.start()
    lock = threading.Lock()
    left = [sids]
    finished = threading.Event()
    errors: list[BaseException] = []

    def send(s: int, r: int) -> None:
        executor.submit({"x": Integer(X0 + r * sids + s)}, f"s{s}").add_done_callback(lambda f: done(s, r, f))

    def done(s: int, r: int, future: Future[Any]) -> None:
        if future.exception() is not None:
            errors.append(future.exception())  # type: ignore[arg-type]
            finished.set()
            return
        if r + 1 < rounds:
            send(s, r + 1)
            return
        with lock:
            left[0] -= 1
            if not left[0]:
                finished.set()

    try:
        for s in range(sids):
            send(s, 0)
        assert finished.wait(timeout=BOUND), f"{left[0]} streams did not finish: {executor.stats()['cells']}"
        assert not errors, errors[0]
        for s in range(sids):
            assert [int(x) for x in executor.get_state(f"s{s}")["c0"].xs] == [X0 + r * sids + s for r in range(rounds)]
    finally:
        executor.stop()
        BATCHES.clear()


@cell(state=Counter, max_batch_size=64, max_batch_wait=0.002)
class BatchCount(Cell):
    """Batched, stateful and free: counts each sid's requests."""

    @classmethod
    def call_batch(cls, contexts: Sequence[InferenceContext], parameters: Parameters, inputs_list: Sequence[XIn]) -> list[YOut]:
        outs = []
        for context in contexts:
            context.state.n = Integer(context.state.n + 1)
            outs.append(YOut(y=context.state.n))
        return outs


def calls_per_request(executor: Executor, streams: int, rounds: int, counting: list[bool], counted: list[int]) -> float:
    """Function calls (Python and C) made per request by every thread, with ``streams`` closed-loop streams."""
    lock = threading.Lock()
    left = {f"s{n}": rounds for n in range(streams)}
    active = [streams]
    finished = threading.Event()
    inputs = {"x": Integer(1)}

    def send(sid: str) -> None:
        executor.submit(inputs, sid).add_done_callback(lambda f: done(sid, f))

    def done(sid: str, future: Future[Any]) -> None:
        assert future.exception() is None
        with lock:
            left[sid] -= 1
            more = left[sid] > 0
            if not more:
                active[0] -= 1
                if not active[0]:
                    finished.set()
        if more:
            send(sid)

    counted[0] = 0
    counting[0] = True
    for sid in list(left):
        send(sid)
    assert finished.wait(timeout=BOUND), f"{active[0]} streams did not finish: {executor.stats()['cells']}"
    counting[0] = False
    return counted[0] / (streams * rounds)


@pytest.mark.parametrize("kind", ["plain", "batched"])
def test_the_calls_made_per_request_do_not_grow_from_256_to_4096_streams_in_flight(kind: str) -> None:
    """The whole hot path (submit, state, queues, batch formation, dispatch, completion), counted in calls."""
    counting, counted = [False], [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if counting[0] and event in ("call", "c_call"):
            counted[0] += 1

    threading.setprofile(profile)  # the executor's worker threads, started below
    sys.setprofile(profile)
    try:
        pipeline = chain_pipeline(Count) if kind == "plain" else chain_pipeline(BatchCount)
        executor = Executor(pipeline)
        executor.start()
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    try:
        calls_per_request(executor, 4096, 1, counting, counted)  # warm-up: every sid's state exists
        few = calls_per_request(executor, 256, 8, counting, counted)
        many = calls_per_request(executor, 4096, 1, counting, counted)
    finally:
        sys.setprofile(None)
        executor.stop()
    assert many <= 1.1 * few, f"{many:.1f} calls per request with 4,096 streams in flight, {few:.1f} with 256"
