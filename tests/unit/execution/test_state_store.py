"""Kept state is bounded: idle sids expire after a TTL and the least recently used go first."""

from __future__ import annotations

from rvai_sdk.execution.state import StateEntry, StateStore


def test_idle_sids_expire_after_the_ttl() -> None:
    store = StateStore(ttl=10.0, max_states=100)
    for sid in ("a", "b"):
        store.release(store.acquire(sid, now=0.0), now=0.0)
    store.release(store.acquire("a", now=5.0), now=5.0)
    store.expire(now=12.0)
    assert store.sids() == ["a"]
    assert store.expired == 1
    store.expire(now=15.1)
    assert store.sids() == []


def test_a_sid_with_a_request_in_flight_never_expires() -> None:
    store = StateStore(ttl=1.0, max_states=100)
    busy = store.acquire("busy", now=0.0)
    store.release(store.acquire("idle", now=0.0), now=0.0)
    store.expire(now=100.0)
    assert store.sids() == ["busy"]
    store.release(busy, now=100.0)
    store.expire(now=100.5)
    assert store.sids() == ["busy"]


def test_the_least_recently_used_idle_sid_is_evicted_beyond_the_bound() -> None:
    store = StateStore(ttl=None, max_states=2)
    pinned = store.acquire("pinned", now=0.0)
    store.release(store.acquire("b", now=1.0), now=1.0)
    store.release(store.acquire("c", now=2.0), now=2.0)
    assert sorted(store.sids()) == ["c", "pinned"], "the busy sid is kept, the least recently used idle one goes"
    assert store.evicted == 1
    store.release(pinned, now=3.0)


def test_sid_none_gets_fresh_unkept_state() -> None:
    store = StateStore(ttl=None, max_states=2)
    a, b = store.acquire(None, now=0.0), store.acquire(None, now=0.0)
    assert a is not b
    assert store.sids() == []


def test_state_for_creates_each_cell_state_once() -> None:
    store = StateStore(ttl=None, max_states=2)
    entry = store.acquire("s", now=0.0)
    first = entry.state_for("cell", dict)
    assert entry.state_for("cell", dict) is first
    assert store.drop("s") and not store.drop("s")


def test_a_state_restored_outside_the_lock_is_used_only_while_no_state_left_memory_meanwhile() -> None:
    """The executor reads a new sid's checkpoint before taking its lock; acquire() takes that reading only if
    the sid is still not kept and no state left memory since (else the store may hold something newer)."""
    asked: list[str] = []

    def loader(sid: str, now: float) -> StateEntry | None:
        asked.append(sid)
        entry = StateEntry(sid, now)
        entry.seq = 7
        return entry

    store = StateStore(ttl=None, max_states=2, loader=loader)
    early = StateEntry("a", 0.0)
    early.seq = 3
    assert store.acquire("a", now=0.0, restored=(store.generation, early)) is early and asked == []

    read_at = store.generation  # "b" is read now; meanwhile a state leaves memory (a drop), so the reading is stale
    store.drop("x")
    stale = StateEntry("b", 0.0)
    assert store.acquire("b", now=0.0, restored=(read_at, stale)).seq == 7 and asked == ["b"]

    unused = StateEntry("a", 1.0)  # "a" is kept (in flight): a reading of the store is never used over it
    assert store.acquire("a", now=1.0, restored=(store.generation, unused)) is early

    generation = store.generation
    store.release(store.acquire("c", now=2.0), now=2.0)  # a third sid: an eviction moves the generation
    store.release(early, now=2.0)
    store.release(early, now=2.0)
    store.release(store.acquire("d", now=3.0), now=3.0)
    assert store.evicted >= 1 and store.generation > generation
