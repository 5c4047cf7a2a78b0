"""The queue of an unbatched cell that runs several calls at once: oldest first among the free sids.

A cell with ``concurrency > 1`` may run requests of different sids together, but
never two of one sid (its state is used by one call at a time, and a sid's
requests reach the cell in arrival order). :class:`SidQueue` hands out the
oldest waiting request whose sid is not running, in ``O(log n)`` for ``n``
waiting sids: a heap holds the oldest waiting request of every free sid (and
every request without a sid); a sid's later requests wait in its own FIFO until
it is free again. :attr:`SidQueue.examined` counts the heap entries taken, so
tests can pin the work per dispatch.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Generic, Protocol, TypeVar

__all__ = ["SidQueue"]


class _Item(Protocol):
    @property
    def sid(self) -> str | None: ...

    @property
    def failed(self) -> bool: ...


T = TypeVar("T", bound=_Item)


class SidQueue(Generic[T]):
    """Waiting requests of one cell; :meth:`take` the oldest whose sid is free. Not thread-safe (the scheduler locks).

    Attributes:
        busy: the sids the cell is running now (taken, not yet :meth:`finished`).
        examined: heap entries taken so far, in total (a measure of work).
    """

    __slots__ = ("busy", "examined", "_heap", "_waiting", "_seq", "_len")

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.examined = 0
        self._heap: list[tuple[int, T]] = []  # (arrival number, item): the heads of the free sids, and sid-less items
        self._waiting: dict[str, deque[tuple[int, T]]] = {}  # sid -> its waiting items, oldest first (head included)
        self._seq = 0
        self._len = 0

    def __len__(self) -> int:
        """Items waiting (requests that failed meanwhile included, until they are skipped)."""
        return self._len

    def append(self, item: T) -> None:
        """``item`` waits for the cell."""
        self._seq = seq = self._seq + 1
        self._len += 1
        entry = (seq, item)
        sid = item.sid
        if sid is None:
            heapq.heappush(self._heap, entry)
            return
        waiting = self._waiting.get(sid)
        if waiting is None:
            self._waiting[sid] = deque((entry,))
            if sid not in self.busy:
                heapq.heappush(self._heap, entry)
        else:
            waiting.append(entry)

    def take(self) -> T | None:
        """The oldest waiting item whose sid is free (its sid is busy from now on), or ``None``.

        Items that failed while waiting are dropped on the way.
        """
        heap = self._heap
        while heap:
            _, item = heapq.heappop(heap)
            self.examined += 1
            self._len -= 1
            sid = item.sid
            if sid is None:
                if item.failed:
                    continue
                return item
            waiting = self._waiting[sid]
            waiting.popleft()
            if item.failed:  # its sid stays free: its next item may go
                if waiting:
                    heapq.heappush(heap, waiting[0])
                else:
                    del self._waiting[sid]
                continue
            if not waiting:
                del self._waiting[sid]
            self.busy.add(sid)
            return item
        return None

    def finished(self, sid: str | None) -> None:
        """A call on an item of ``sid`` ended: the sid's next item may go."""
        if sid is None:
            return
        self.busy.discard(sid)
        waiting = self._waiting.get(sid)
        if waiting:
            heapq.heappush(self._heap, waiting[0])

    def __repr__(self) -> str:
        return f"<SidQueue waiting={self._len} busy={len(self.busy)}>"
