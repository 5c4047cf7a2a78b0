"""Per-sid cell state, bounded in number and expired after an idle TTL."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["StateEntry", "StateStore"]


class StateEntry:
    """The cell states of one sid: one State instance per stateful cell ref, made on first use."""

    __slots__ = ("sid", "states", "inflight", "last_used")

    def __init__(self, sid: str | None, now: float) -> None:
        self.sid = sid
        self.states: dict[str, Any] = {}
        self.inflight = 0
        self.last_used = now

    def state_for(self, ref: str, factory: Any) -> Any:
        """This sid's state for the cell ``ref``, created with ``factory()`` on first use."""
        state = self.states.get(ref)
        if state is None:
            state = self.states[ref] = factory()
        return state


class StateStore:
    """Keeps the states of named sids in least-recently-used order; not thread-safe (the executor locks).

    Args:
        ttl: seconds a sid with no request in flight is kept after its last request; ``None`` keeps it forever.
        max_states: most sids kept; beyond it the least recently used idle sid is dropped.
    """

    def __init__(self, *, ttl: float | None, max_states: int) -> None:
        self.ttl = ttl
        self.max_states = max_states
        self._entries: OrderedDict[str, StateEntry] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def acquire(self, sid: str | None, now: float) -> StateEntry:
        """The entry of ``sid`` (a fresh, unkept one for ``None``), marked in use by one more request."""
        if sid is None:
            entry = StateEntry(None, now)
        else:
            entries = self._entries
            found = entries.get(sid)
            if found is None:
                entry = entries[sid] = StateEntry(sid, now)
                if len(entries) > self.max_states:
                    self._evict()
            else:
                entry = found
                entries.move_to_end(sid)
            self.expire(now)
        entry.inflight += 1
        entry.last_used = now
        return entry

    @staticmethod
    def release(entry: StateEntry, now: float) -> None:
        """Mark one request of ``entry`` finished."""
        entry.inflight -= 1
        entry.last_used = now

    def expire(self, now: float) -> None:
        """Drop sids idle for longer than the TTL."""
        if self.ttl is None or not self._entries:
            return
        deadline = now - self.ttl
        entries = self._entries
        for _ in range(len(entries)):
            sid, head = next(iter(entries.items()))
            if head.last_used >= deadline:
                return
            if head.inflight:
                entries.move_to_end(sid)
                continue
            del entries[sid]
            self.expired += 1

    def _evict(self) -> None:
        entries = self._entries
        for _ in range(len(entries)):
            if len(entries) <= self.max_states:
                return
            sid, head = next(iter(entries.items()))
            if head.inflight:
                entries.move_to_end(sid)
                continue
            del entries[sid]
            self.evicted += 1

    def get(self, sid: str) -> StateEntry | None:
        """The entry of ``sid``, or ``None`` when no state is kept for it."""
        return self._entries.get(sid)

    def drop(self, sid: str) -> bool:
        """Forget ``sid``'s state; requests in flight finish with it. Returns whether it was kept."""
        return self._entries.pop(sid, None) is not None

    def sids(self) -> list[str]:
        """The sids whose state is kept, least recently used first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
