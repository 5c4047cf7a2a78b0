"""Per-sid cell state, bounded in number and expired after an idle TTL.

Cost: every operation on the hot path (:meth:`StateStore.acquire`,
:meth:`StateStore.release`) is ``O(1)`` amortised, however many sids are kept
or have requests in flight. The store keeps two maps: the *idle* sids (no
request in flight) in least-recently-used order, which is also the order of
their ``last_used`` time, and the *busy* ones. Expiry and eviction only ever
look at the head of the idle map, and every entry they look at is dropped
(:attr:`StateStore.examined` counts them, so tests can pin that); a busy sid is
never looked at, never expired and never evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["StateEntry", "StateStore"]


class StateEntry:
    """The cell states of one sid: one State instance per stateful cell ref, made on first use."""

    __slots__ = ("sid", "states", "inflight", "last_used", "seq", "dropped", "deleted", "calls")

    def __init__(self, sid: str | None, now: float) -> None:
        self.sid = sid
        self.states: dict[str, Any] = {}
        self.inflight = 0
        self.last_used = now
        self.seq = 0
        """Requests that completed with this state since it started fresh (the checkpoint's sequence number)."""
        self.dropped = False
        """Set by :meth:`StateStore.drop`: requests still in flight do not checkpoint it again."""
        self.deleted = False
        """Set with ``dropped`` by ``drop_state``: checkpoints collected before it are not written either (its
        stored checkpoint is deleted). A state exported to another executor keeps those: they are its latest."""
        self.calls = 0
        """Calls handed out with a request of this sid and not finished (a call whose request's deadline
        passed still runs, and counts, after the request left): while any runs, its states may be changing."""

    def state_for(self, ref: str, factory: Any) -> Any:
        """This sid's state for the cell ``ref``, created with ``factory()`` on first use."""
        state = self.states.get(ref)
        if state is None:
            state = self.states[ref] = factory()
        return state


class StateStore:
    """Keeps the states of named sids, dropping idle ones by TTL and by LRU; not thread-safe (the executor locks).

    Args:
        ttl: seconds a sid with no request in flight is kept after its last request; ``None`` keeps it forever.
        max_states: most sids kept; beyond it the least recently used idle sid is dropped when a new sid
            arrives (sids with a request in flight are always kept, so the bound can be exceeded by them).
        loader: restores a sid that is not kept in memory from a durable store (one lookup per sid
            that arrives; ``None``: every new sid starts fresh). Memory is then a cache of the store.

    Attributes:
        expired: sids dropped by the TTL so far.
        evicted: sids dropped by ``max_states`` so far.
        examined: entries that expiry and eviction looked at, in total (each one was dropped: a measure of work).
        generation: counted up whenever a sid's state may leave memory (expiry, eviction, a drop): a
            state restored from the durable store while the generation stayed the same is still current
            (see :meth:`acquire`).
    """

    __slots__ = ("ttl", "max_states", "_idle", "_busy", "expired", "evicted", "examined", "loader", "generation")

    def __init__(
        self, *, ttl: float | None, max_states: int, loader: Callable[[str, float], StateEntry | None] | None = None
    ) -> None:
        self.ttl = ttl
        self.loader = loader
        """Called with a sid that is not kept here (and the time): its entry restored from a durable store, or ``None``."""
        self.max_states = max_states
        self._idle: OrderedDict[str, StateEntry] = OrderedDict()  # no request in flight; oldest last_used first
        self._busy: dict[str, StateEntry] = {}  # a request in flight
        self.expired = 0
        self.evicted = 0
        self.examined = 0
        self.generation = 0

    def acquire(
        self, sid: str | None, now: float, restored: tuple[int, StateEntry | None] | None = None
    ) -> StateEntry:
        """The entry of ``sid`` (a fresh, unkept one for ``None``), marked in use by one more request.

        Args:
            sid: the state id.
            now: the time.
            restored: ``(generation, entry or None)``: what :attr:`loader` gave for ``sid`` when it was
                asked outside the caller's lock at that :attr:`generation`. Used when ``sid`` is still not
                kept here and the generation has not moved since (no state left memory meanwhile, so the
                store held nothing newer); otherwise the loader is asked again, here.
        """
        if sid is None:
            entry = StateEntry(None, now)
        else:
            busy = self._busy
            found = busy.get(sid)
            if found is not None:
                entry = found
            else:
                idle = self._idle.pop(sid, None)
                if idle is not None:
                    entry = busy[sid] = idle
                else:
                    if restored is not None and restored[0] == self.generation:
                        loaded = restored[1]
                    else:
                        loaded = None if self.loader is None else self.loader(sid, now)
                    entry = busy[sid] = StateEntry(sid, now) if loaded is None else loaded
                    if len(busy) + len(self._idle) > self.max_states:
                        self._evict()
                self.expire(now)
        entry.inflight += 1
        entry.last_used = now
        return entry

    def release(self, entry: StateEntry, now: float) -> None:
        """Mark one request of ``entry`` finished; with none left in flight, its sid becomes idle."""
        entry.inflight -= 1
        entry.last_used = now
        if entry.inflight:
            return
        sid = entry.sid
        if sid is not None and self._busy.get(sid) is entry:  # not dropped meanwhile
            del self._busy[sid]
            self._idle[sid] = entry  # the most recently used: last_used order holds

    def expire(self, now: float) -> None:
        """Drop sids idle for longer than the TTL."""
        if self.ttl is None:
            return
        deadline = now - self.ttl
        idle = self._idle
        while idle:
            sid, head = next(iter(idle.items()))
            if head.last_used >= deadline:
                return
            self.examined += 1
            del idle[sid]
            self.expired += 1
            self.generation += 1

    def _evict(self) -> None:
        idle = self._idle
        while idle and len(idle) + len(self._busy) > self.max_states:
            self.examined += 1
            idle.popitem(last=False)
            self.evicted += 1
            self.generation += 1

    def get(self, sid: str) -> StateEntry | None:
        """The entry of ``sid``, or ``None`` when no state is kept for it."""
        entry = self._busy.get(sid)
        return entry if entry is not None else self._idle.get(sid)

    def drop(self, sid: str, *, deleted: bool = False) -> bool:
        """Forget ``sid``'s state; requests in flight finish with it. Returns whether it was kept.

        ``deleted``: its durable copy is being deleted too (``drop_state``), see :attr:`StateEntry.deleted`.
        """
        self.generation += 1  # kept here or not: its durable copy may be going too
        entry = self._busy.pop(sid, None)
        if entry is None:
            entry = self._idle.pop(sid, None)
        if entry is None:
            return False
        entry.dropped = True
        entry.deleted = deleted
        return True

    def put(self, entry: StateEntry, now: float) -> None:
        """Keep ``entry`` as its sid's state (replacing an idle one), most recently used; for a hand-over.

        Raises:
            ValueError: the sid has a request in flight here (its state cannot be replaced under it).
        """
        sid = entry.sid
        if sid is None:
            raise ValueError("a state without a sid cannot be kept")
        if sid in self._busy:
            raise ValueError(f"sid {sid!r} has a request in flight; its state cannot be replaced")
        self._idle.pop(sid, None)
        entry.inflight = 0
        entry.last_used = now
        self._idle[sid] = entry
        if len(self._idle) + len(self._busy) > self.max_states:
            self._evict()

    def sids(self) -> list[str]:
        """The sids whose state is kept: the idle ones least recently used first, then those in use."""
        return [*self._idle, *self._busy]

    def __len__(self) -> int:
        return len(self._idle) + len(self._busy)
