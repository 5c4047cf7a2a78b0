"""Batch formation for ``call_batch`` cells: which ready requests go together, and when a batch goes.

A :class:`BatchFormer` holds one batched cell's ready items and decides, each time
the scheduler asks (:meth:`BatchFormer.next_batch`, given the time), whether a
batch goes now, and which items it takes, or how long to wait for it to fill. It
knows nothing of threads, clocks or cells: the scheduler calls it under its lock,
and tests drive it alone with a fake clock.

Rules (the same on every runtime):

- A batch takes at most ``max_batch_size`` items, oldest first, at most one per
  sid, and none of a sid that the cell is still running (a sid's state is never
  used by two calls at once, and a sid's items reach the cell in arrival order).
  Items without a sid are independent of each other.
- A batch that is not full waits for more items at most ``max_batch_wait``
  (never, when it is 0), counted from when the cell is free to take it, and goes at once when nothing
  could still join it: no item expected from upstream, no completion callbacks
  running, and, if the batch holds fewer streams than the cell's last two batches,
  none of those streams between requests (so closed-loop streams, which send
  again only when answered, come together in one batch instead of splitting into
  groups that alternate).

Cost: adding an item and taking a batch of ``k`` items cost ``O(log n)`` and
``O(k log n)`` for ``n`` waiting sids (a heap of the oldest waiting item of every
sid that is free), never a scan of the queue. :attr:`BatchFormer.examined` counts
the heap entries a batch formation looked at, so tests can pin that.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any, Generic, Protocol, TypeVar

import attrs

from rvai_sdk.exc import ParameterError

__all__ = ["BatchFormer", "BatchingPolicy"]


@attrs.frozen
class BatchingPolicy:
    """Batching limits of one ``call_batch`` cell, overriding what ``@cell`` declared.

    Attributes:
        max_batch_size: most items per ``call_batch`` call.
        max_batch_wait: most seconds the oldest ready item waits for the batch to fill.
    """

    max_batch_size: int = attrs.field(default=64)
    max_batch_wait: float = attrs.field(default=0.005, converter=float)

    @max_batch_size.validator
    def _check_size(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ParameterError(f"BatchingPolicy.max_batch_size must be an int >= 1, got {value!r}", field="max_batch_size")

    @max_batch_wait.validator
    def _check_wait(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not isinstance(value, (int, float)) or not 0 <= value < math.inf:  # inf: the timer thread would die
            raise ParameterError(
                f"BatchingPolicy.max_batch_wait must be a number of seconds >= 0 (not infinite), got {value!r}",
                field="max_batch_wait",
            )


class Stream(Protocol):
    """A kept state as batch formation sees it: whether it has a request in flight."""

    @property
    def inflight(self) -> int: ...


class Item(Protocol):
    """What batch formation needs of a request: its sid and its stream (kept state)."""

    @property
    def sid(self) -> str | None: ...

    @property
    def entry(self) -> Any: ...


T = TypeVar("T", bound=Item)


class BatchFormer(Generic[T]):
    """The ready items of one batched cell, and the decision when and what to batch.

    Not thread-safe: the scheduler calls it under its own lock.

    Args:
        max_batch_size: most items per batch.
        max_batch_wait: most seconds a batch that could still fill waits.

    Attributes:
        busy: the sids the cell is running now (taken, not yet :meth:`finished`).
        queued: items waiting (added, neither taken nor discarded).
        expected: items that will still reach the cell: those :meth:`expect`-ed and
            not yet taken or discarded (upstream or waiting).
        free_since: when a call of the cell last ended (a batch's wait counts from then).
        examined: heap entries looked at while taking batches, in total (a measure of work).
    """

    __slots__ = (
        "max_batch_size",
        "max_batch_wait",
        "busy",
        "queued",
        "expected",
        "free_since",
        "examined",
        "_heap",
        "_waiting",
        "_loose",
        "_seq",
        "_dead",
        "_last",
        "_recent",
        "recent_count",
        "_scan",
    )

    def __init__(self, max_batch_size: int, max_batch_wait: float) -> None:
        self.max_batch_size = max_batch_size
        self.max_batch_wait = max_batch_wait
        self.busy: set[str] = set()
        self.queued = 0
        self.expected = 0
        self.free_since = -float("inf")
        self.examined = 0
        # [arrival number, ready time, item or None once discarded]: the oldest waiting item of
        # every sid that is not busy, and every item without a sid; oldest first.
        self._heap: list[list[Any]] = []
        self._waiting: dict[str, deque[list[Any]]] = {}  # sid -> its waiting entries, oldest first
        self._loose: dict[int, list[Any]] = {}  # id(item) -> entry, for the waiting items without a sid
        self._seq = 0
        self._dead = 0  # discarded entries still in the heap
        self._last: list[Any] = []  # the streams of the last batch
        self._recent: list[Any] = []  # those of the last two batches: streams likely to send again
        self.recent_count = 0  # how many distinct streams that is
        self._scan = 0  # where the search for an idle recent stream resumes

    def __len__(self) -> int:
        return self.queued

    def expect(self) -> None:
        """One more item will reach the cell (a request was submitted upstream of it)."""
        self.expected += 1

    def add(self, item: T, ready: float) -> None:
        """``item``'s inputs are complete (at time ``ready``): it waits for a batch."""
        self._seq = seq = self._seq + 1
        entry = [seq, ready, item]
        self.queued += 1
        sid = item.sid
        if sid is None:
            self._loose[id(item)] = entry
            heapq.heappush(self._heap, entry)
            return
        waiting = self._waiting.get(sid)
        if waiting is None:
            self._waiting[sid] = deque((entry,))
            if sid not in self.busy:
                heapq.heappush(self._heap, entry)
        else:
            waiting.append(entry)

    def discard(self, item: T, *, queued: bool) -> None:
        """``item`` will not reach the cell after all (its request failed); ``queued``: it was added."""
        self.expected -= 1
        if not queued:
            return
        self.queued -= 1
        sid = item.sid
        if sid is None:
            entry = self._loose.pop(id(item))
            entry[2] = None
            self._dead += 1
            return
        waiting = self._waiting[sid]
        if waiting[0][2] is item:
            head = waiting.popleft()
            if sid not in self.busy:  # the head is in the heap: leave a dead entry, promote the next
                head[2] = None
                self._dead += 1
                if waiting:
                    heapq.heappush(self._heap, waiting[0])
        else:
            for entry in waiting:
                if entry[2] is item:
                    waiting.remove(entry)
                    break
        if not waiting:
            del self._waiting[sid]

    def next_batch(self, now: float, *, closed: bool = False, resolving: bool = False) -> list[T] | float | None:
        """The batch to run now, or the time to ask again (a float), or ``None`` when no item can go.

        Args:
            now: the current time.
            closed: no new item will arrive (the executor is stopping): whatever is ready goes.
            resolving: completion callbacks are running and may submit more.
        """
        heap = self._heap
        ready = len(heap) - self._dead  # items that could go now (one per free sid, and the sid-less)
        if ready <= 0:
            if heap:
                heap.clear()
                self._dead = 0
            return None
        limit = self.max_batch_size
        if (
            ready < limit
            and self.max_batch_wait > 0  # no wait: a batch goes now, whatever clock its caller read
            and not closed
            and (self.queued < self.expected or resolving or (ready < self.recent_count and self._recent_idle()))
        ):
            while heap[0][2] is None:
                heapq.heappop(heap)
                self._dead -= 1
            due: float = max(heap[0][1], self.free_since) + self.max_batch_wait
            if now < due:
                return due
        batch: list[T] = []
        busy = self.busy
        waiting = self._waiting
        pop = heapq.heappop
        examined = 0
        while heap and len(batch) < limit:
            entry = pop(heap)
            examined += 1
            item = entry[2]
            if item is None:
                self._dead -= 1
                continue
            batch.append(item)
            sid = item.sid
            if sid is None:
                del self._loose[id(item)]
            else:
                busy.add(sid)
                queue = waiting[sid]
                queue.popleft()
                if not queue:
                    del waiting[sid]
        self.examined += examined
        self.queued -= len(batch)
        self.expected -= len(batch)
        return batch

    def finished(self, batch: list[T], now: float) -> None:
        """A call of the cell on ``batch`` ended at ``now``: its sids are free again."""
        streams = self.release(batch)
        self._recent = self._last + streams
        self.recent_count = len(set(self._recent))
        self._last = streams
        self._scan = 0
        self.free_since = now

    def release(self, batch: list[T]) -> list[Any]:
        """Free the sids of ``batch`` (a batch handed out that did not run); their state entries."""
        busy = self.busy
        waiting = self._waiting
        streams = []
        for item in batch:
            sid = item.sid
            if sid is None:
                continue
            streams.append(item.entry)
            busy.discard(sid)
            queue = waiting.get(sid)
            if queue:
                heapq.heappush(self._heap, queue[0])
        return streams

    def _recent_idle(self) -> bool:
        """Whether a stream of the cell's last two batches has no request in flight (it may send one soon)."""
        recent = self._recent
        n = len(recent)
        start = self._scan
        for k in range(n):  # resumes where the last search stopped: amortised O(1) per arrival
            i = (start + k) % n
            if not recent[i].inflight:
                self._scan = i
                return True
        return False
