"""The scheduler: per-cell queues, per-sid exclusivity, worker threads and caller-runs.

Each cell has a FIFO queue of requests whose inputs are ready and a limit on
concurrent calls (``concurrency``, default 1); a batched cell's queue is a
:class:`~rvai_sdk.execution.batching.BatchFormer`. A pool of worker threads, one
per allowed concurrent call, runs cells; when a worker finishes cell A for a
request and a successor B becomes ready and free, the same worker runs B at once
(no thread hand-off), so a chain costs one hand-off per request while independent
branches and consecutive requests still overlap on other workers. A caller blocked
in ``future.result()`` runs its request's unstarted cells itself (caller-runs).

Ordering: a sid's requests reach each cell in arrival order and a sid's state is
never used by two calls at once (per cell, a sid is "busy" while a call holds it).

:class:`Scheduler` is the data-plane half of
:class:`~rvai_sdk.execution.executor.Executor` (which adds the lifecycle,
parameters, state access, deadlines and stats): everything here runs on the hot
path, under one lock, and :meth:`Scheduler._execute` is that path.

Why one module of about 600 lines: every method here takes or holds the
scheduler's one lock and reads the same per-cell queues and per-sid marks; split
across modules, the hot path would pay attribute lookups across objects on every
request and its locking rules would have to be read in several places. What can
stand alone already does (batch formation, the sid queue, calls, the plan).
"""

from __future__ import annotations

import heapq
import threading
import weakref
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk._delivery import delivered, delivering
from rvai_sdk.exc import CellError
from rvai_sdk.execution.batching import BatchFormer
from rvai_sdk.execution.calls import call_batch, call_one, cell_error, cell_errors
from rvai_sdk.execution.metrics import Histogram
from rvai_sdk.execution.plan import CellPlan, Plan
from rvai_sdk.execution.requests import QUEUED, TAKEN, Request, Work, set_exception, set_result
from rvai_sdk.execution.sidqueue import SidQueue
from rvai_sdk.execution.state import StateStore
from rvai_sdk.execution.state_store import Checkpointer
from rvai_sdk.execution.stats import CellCounters

__all__ = ["Scheduler"]

_FAST_CALL_SECONDS = 50e-6
"""A cell whose mean call is shorter than this runs on the thread that made it ready (no wake-up)."""
_HERE_CALL_SECONDS = 250e-6
"""A cell whose recent calls average less than this may run on the thread that reads its requests
(``Executor.submit(here=True)``): blocking the reading that long costs less than handing the call to a
worker, which makes the reading thread and the workers take turns at the interpreter lock for every
request (measured with thousands of streams in flight: docs/performance.md). A batched call of a few
dozen cheap items takes about this long; a model's call takes far longer and goes to the workers, so
that reading the next requests overlaps it."""
_HERE_WEIGHT = 1 / 16
"""Weight of the latest call in a cell's recent mean call time (an exponential moving average)."""
_HERE_SAMPLE_CAP = 2 * _HERE_CALL_SECONDS
"""One call counts for at most this in the recent mean: a call stretched by a descheduled thread or by
another thread's turn at the interpreter lock must not, alone, send the cell's next calls to the workers
(there, taking turns at the lock stretches calls more, and the cell would stay there)."""
_HERE_SLOW_CALL = 0.005
"""A call at least this long (a cell that turned slow, or hangs) ends running the cell where it is read
at once, until its calls are quick again."""
_FAST_AFTER_CALLS = 16
"""Calls observed before a cell may count as fast."""
_FAST_SAMPLE = 16
"""Fast cells record the timings of one call in this many (their per-call bookkeeping would cost more than the call)."""
_FOLD_EVERY = 1024
"""A cell's raw timings (and the request latencies) are folded into histograms, vectorised, every this many calls."""

_LONGEST_WAIT = 3600.0
"""Longest a timer thread (batch waits, deadlines) sleeps at once: what is due years away (a client's huge
timeout) is waited for in steps, since a single wait that long overflows the platform's time_t and ends the thread."""
_NONE_BUILT: dict[int, CellError] = {}
"""The errors built for a call whose requests all succeeded (shared, never written)."""


class _Stage:
    """The scheduler's record of one cell: its plan, its queue (or batch former), what runs, its counters."""

    __slots__ = ("plan", "queue", "former", "running", "fast", "here", "recent", "timer_due", "counters")

    def __init__(self, plan: CellPlan) -> None:
        self.plan = plan
        # Unbatched cells: a FIFO, or, with concurrency > 1, a queue that keeps one call per sid.
        self.queue: deque[Request] | SidQueue[Request] = SidQueue() if plan.track_busy and not plan.batched else deque()
        self.former: BatchFormer[Request] | None = (
            BatchFormer(plan.max_batch_size, plan.max_batch_wait) if plan.batched else None
        )
        self.running = 0
        self.fast = False
        self.here = False  # may run on the thread that reads its requests (see _HERE_CALL_SECONDS)
        self.recent = 0.0  # recent mean call time (seconds, each call capped): what decides here
        self.timer_due: float | None = None
        self.counters = CellCounters()

    def queued(self) -> int:
        """Requests waiting for this cell."""
        return len(self.former) if self.former is not None else len(self.queue)


class Scheduler:
    """Queues, dispatch, worker threads and caller-runs for one :class:`Plan` (see the module docstring).

    Callers of the ``_``-methods documented "caller holds the lock" hold ``self._lock``.
    """

    def __init__(self, plan: Plan, *, states: StateStore, clock: Callable[[], float]) -> None:
        self._plan = plan
        self._stages = [_Stage(cell) for cell in plan.cells]
        self._roots = [self._stages[c.index] for c in plan.roots]
        self._batched = [self._stages[c.index] for c in plan.batched]
        self._outputs = plan.outputs
        self._states = states
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._runq: SimpleQueue[Work | None] = SimpleQueue()
        self._timer_cv = threading.Condition(threading.Lock())
        self._timers: list[tuple[float, int]] = []
        self._inflight: dict[int, Request] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._nworkers = 0
        self._wake_lock = threading.Lock()
        self._posted = threading.Condition(threading.Lock())
        self._resolving = 0
        self._worker_idents: set[int] = set()
        self._lazy: deque[Work] = deque()
        self._active = 0
        self._calls: dict[int, Work] = {}  # the calls running now, by id(work): stuck calls and deadlines
        self.succeeded = 0
        self.failed = 0
        self._latencies: list[float] = []
        self._latency_hist = Histogram()
        self._durable: Checkpointer | None = None  # a durable state store (the executor sets it at start)

    # -- admitting and failing requests (caller holds the lock) ---------------------------------

    def _admit(self, req: Request, now: float) -> list[Work]:
        """Put a new request in flight: queue it at the root cells; the works that can start now."""
        self._inflight[req.rid] = req
        if _tracing.TRACER is not None:  # traced: the submitter's context (its span) parents the cell spans
            req.trace = _tracing.current()
        for stage in self._batched:
            stage.former.expect()  # type: ignore[union-attr]  # requests that will still reach this cell
        works: list[Work] = []
        for stage in self._roots:
            self._enqueue(stage, req, now)
            self._dispatch(stage, now, works)
        return works

    @staticmethod
    def _enqueue(stage: _Stage, req: Request, now: float) -> None:
        """``req``'s inputs for ``stage`` are complete at ``now``: it waits for the cell."""
        former = stage.former
        if former is None:
            stage.queue.append(req)
        else:
            req.taken[stage.plan.index] = QUEUED
            former.add(req, now)

    def _mark_failed(self, req: Request) -> None:
        """``req`` failed: drop it from every queue and from the requests in flight (caller holds the lock).

        Its calls handed out that nobody started are settled unrun (:meth:`_abandon`): their cells
        may take more work, so the caller dispatches again (:meth:`_dispatch_all`).
        """
        req.failed = True
        self._abandon(req.works, self._clock())
        req.works = []
        req.snaps = None  # its entry is released below: it writes no checkpoint
        taken = req.taken
        for stage in self._batched:
            index = stage.plan.index
            where = taken[index]
            if where != TAKEN:
                taken[index] = TAKEN
                stage.former.discard(req, queued=where == QUEUED)  # type: ignore[union-attr]
        self._inflight.pop(req.rid, None)
        self._states.release(req.entry, self._clock())
        self.failed += 1
        if self._closed and not self._inflight:
            self._idle.notify_all()

    def _abandon(self, works: list[Work], now: float) -> bool:
        """Settle, unrun, the ``works`` nobody started whose requests all failed (caller holds the lock).

        A worker that took such work later would only skip it; but without workers, or when the
        caller that had claimed it was interrupted (Ctrl-C), nobody would: its cell's slot and its
        sids' call counts stayed taken, and the cell's next request waited forever. Returns
        whether a slot was freed.
        """
        freed = False
        for work in works:
            reqs = work.reqs
            if all(req.failed for req in reqs) and work.claim():
                self._settle(work.stage, reqs, [], 0.0, now, False, _NONE_BUILT)
                freed = True
        return freed

    def _give_back(self, works: list[Work]) -> None:
        """Works this thread claimed but will not run: to the workers or waiters.

        Those whose requests all failed meanwhile are settled unrun (:meth:`_abandon`): a request
        failed while this thread held its work could not do it itself. (One that fails after the
        unclaim below does.)
        """
        for work in works:
            work.unclaim()
        more: list[Work] = []
        if any(all(req.failed for req in work.reqs) for work in works):
            with self._lock:
                now = self._clock()
                if self._abandon(works, now):
                    self._dispatch_all(now, more)
        self._post([work for work in works if work.claimable] + more)

    def _fail_cell(self, req: Request, plan: CellPlan, error: BaseException) -> None:
        """``plan``'s cell failed ``req`` with ``error``: none of its descendants will run (caller holds the lock).

        The request's other cells still run (see :class:`Request`); it fails with its first
        cell error once they are done. A later error of another branch is only counted.
        """
        if req.error is None:
            req.error = error
        remaining = req.remaining
        left = req.left - 1  # the failed cell
        stages = self._stages
        for j in plan.descendants:
            if remaining[j] < 0:
                continue  # below another failed cell too: already given up
            remaining[j] = -1  # never reaches 0: the cell never becomes ready
            left -= 1
            former = stages[j].former
            if former is not None:  # it would have reached this batched cell: no longer
                req.taken[j] = TAKEN
                former.discard(req, queued=False)
        req.left = left

    def _end_errored(self, req: Request, now: float) -> None:
        """The last cell of an errored request is done: it leaves (caller holds the lock); its future fails next.

        With a durable store, what its other branches changed is checkpointed before it answers
        when nothing else of its sid can be changing the states: it is the sid's only request in
        flight and no call of the sid runs (a call its deadline gave up on still counts). Its own
        snapshots cannot make the checkpoint (the failed cell and those below it did not run), so
        the sid's states are pickled whole, here, under the lock. Otherwise the sid's next
        successful request writes them (docs/guides/durability.md).
        """
        req.works = []
        del self._inflight[req.rid]
        self.failed += 1
        entry = req.entry
        durable = self._durable
        snaps = None
        if durable is not None and req.sid is not None and entry.inflight == 1 and not entry.calls and not entry.dropped:
            snaps = durable.whole(entry)
        req.snaps = snaps
        if snaps is None:  # else its sid stays held until the checkpoint is written
            self._states.release(entry, now)

    def _take_inflight(self) -> list[Request]:
        """Mark every request in flight failed and return them."""
        leftovers = list(self._inflight.values())
        for req in leftovers:
            self._mark_failed(req)
        self._inflight.clear()
        return leftovers

    # -- dispatch (caller holds the lock) --------------------------------------------------------

    def _dispatch(self, stage: _Stage, now: float, works: list[Work]) -> None:
        """Start as many calls of ``stage`` as its limits allow; append them to ``works``."""
        if stage.former is not None:
            self._dispatch_batches(stage, now, works)
            return
        queue = stage.queue
        plan = stage.plan
        while queue and stage.running < plan.concurrency:
            if isinstance(queue, SidQueue):  # concurrency > 1: the oldest request whose sid is free
                found = queue.take()
                if found is None:
                    return
                req = found
            else:
                req = queue.popleft()
                if req.failed:
                    continue
            stage.running += 1
            req.entry.calls += 1
            work = Work(stage, [req])
            req.works.append(work)
            works.append(work)

    def _dispatch_all(self, now: float, works: list[Work]) -> None:
        """Start what can go now, in every cell: after requests failed, a batch that waited to fill
        with one of them goes at once instead of at its ``max_batch_wait``, and a cell whose slot a
        failed request's unstarted call held (:meth:`_abandon`) takes its next request."""
        for stage in self._stages:
            if stage.queue or stage.former:
                self._dispatch(stage, now, works)

    def _dispatch_batches(self, stage: _Stage, now: float, works: list[Work]) -> None:
        former: BatchFormer[Request] = stage.former  # type: ignore[assignment]
        index = stage.plan.index
        while stage.running < stage.plan.concurrency:
            batch = former.next_batch(now, closed=self._closed, resolving=bool(self._resolving))
            if batch is None:
                return
            if isinstance(batch, float):  # the batch could still fill: look again then
                self._schedule(stage, batch)
                return
            stage.running += 1
            work = Work(stage, batch)
            for req in batch:
                req.taken[index] = TAKEN
                req.works.append(work)
                req.entry.calls += 1
            works.append(work)

    def _schedule(self, stage: _Stage, due: float) -> None:
        if stage.timer_due is not None and stage.timer_due <= due:
            return
        stage.timer_due = due
        with self._timer_cv:
            heapq.heappush(self._timers, (due, stage.plan.index))
            self._timer_cv.notify()

    def recheck_timers(self) -> None:
        """Make the batch timer re-read the clock now (for a fake ``clock`` that was just moved)."""
        with self._timer_cv:
            self._timer_cv.notify_all()

    def _timer_loop(self) -> None:
        while True:
            with self._timer_cv:
                while True:
                    if self._closed:
                        return
                    if not self._timers:
                        self._timer_cv.wait()
                        continue
                    due, index = self._timers[0]
                    delay = due - self._clock()
                    if delay > 0:
                        self._timer_cv.wait(min(delay, _LONGEST_WAIT))
                        continue
                    heapq.heappop(self._timers)
                    break
            works: list[Work] = []
            with self._lock:
                stage = self._stages[index]
                if stage.timer_due is not None and stage.timer_due <= due:
                    stage.timer_due = None
                self._dispatch(stage, self._clock(), works)
            self._post(works)

    # -- the hot path: one call and what it makes ready --------------------------------------------

    def _execute(self, work: Work) -> list[Work]:
        """Run ``work``'s call, record it, start what it made ready; return the works this thread runs next."""
        stage, reqs = work.stage, work.reqs
        plan = stage.plan
        work.started = started = self._clock()
        key = id(work)
        self._calls[key] = work  # seen by stuck-call detection and deadlines while it runs
        # A call whose requests all failed after it was handed out (their deadlines passed while
        # every worker was busy) is not run: no call, span, count or state snapshot. (Queues and
        # batch formers drop failed requests before they hand anything out.)
        # Read once (another thread may fail requests meanwhile): a request failed after its batch was
        # handed out is left out of the call, as an unbatched one is not run.
        if plan.batched:
            live = [i for i, req in enumerate(reqs) if not req.failed]
        else:
            live = [] if reqs[0].failed else [0]
        ran = bool(live)
        span = None if _tracing.TRACER is None or not ran else _tracing.start_cell(plan, reqs)
        if not ran:
            results = [None] * len(reqs)
        elif plan.batched:
            if len(live) < len(reqs):
                results = [None] * len(reqs)
                for i, result in zip(live, call_batch(plan, [reqs[i] for i in live])):
                    results[i] = result
            else:
                results = call_batch(plan, reqs)
        else:
            results = [call_one(plan, reqs[0])]
        if span is not None:
            _tracing.end_cell(span, results)
        del self._calls[key]
        durable = self._durable
        if ran and durable is not None and plan.state_cls is not None:
            durable.snapshot(plan.ref, reqs, results)  # the sids are still held: their states are as this call left them
        # The errors of failed requests are built here, not under the lock (a traceback is formatted).
        raised = isinstance(results[0], Exception) if len(results) == 1 else any(isinstance(r, Exception) for r in results)
        built = cell_errors(plan, reqs, results) if raised else _NONE_BUILT
        now = self._clock()
        checkpoints = None
        with self._lock:
            done, errors, interrupt = self._settle(stage, reqs, results, started, now, ran, built)
            held: list[Request] = []
            if durable is not None and (done or errors):
                held = [req for req in done if req.snaps is not None]  # still held: released once checkpointed
                held += [req for req, _ in errors if req.snaps is not None]  # whole-state checkpoints: _end_errored
                if held:
                    checkpoints = durable.collect(held)
            resolving = bool(self._batched and (done or errors))
            if resolving:
                self._resolving += 1  # before dispatching: this thread's callbacks may send more
            # Start what the call made ready. This thread runs the first new work (a successor of
            # this request, so a chain costs no hand-off) and any work of a cell whose calls are too
            # short to be worth waking another thread for; the rest goes to other workers, to overlap.
            works: list[Work] = []
            for j in plan.successors:
                successor = self._stages[j]
                if successor.queue or successor.former:
                    self._dispatch(successor, now, works)
            if stage.queue or stage.former:
                self._dispatch(stage, now, works)
            if raised or interrupt is not None:
                # A batch further down may have been waiting for a request that failed here; a Ctrl-C
                # may have freed the slot of a call of the request's that had not started.
                self._dispatch_all(now, works)
            if self._closed and not self._inflight:
                self._idle.notify_all()  # stop() waits for the last request
            keep: list[Work] = []
            rest: list[Work] = []
            for candidate in works:
                if (not keep or candidate.stage.fast) and candidate.claim():
                    keep.append(candidate)
                else:
                    rest.append(candidate)
        if held and durable is not None:
            if (keep or rest) and self._nworkers > 1:
                # Hand the next calls to other workers first: they run while this thread writes the checkpoint.
                for left in keep:
                    left.unclaim()
                self._post(keep + rest)
                keep, rest = [], []
            done = self._checkpoint(durable, checkpoints or [], held, done, errors)
        finished = bool(done or errors)
        if finished:
            self._resolve(plan, done, errors)
        # A failed call's exception holds its traceback, whose frames reach this one (f_back): drop our
        # references, or exception, frames and the request's inputs would form a cycle that only the
        # garbage collector frees (a burst of failing requests with large inputs kept them all alive).
        results = errors = None  # type: ignore[assignment]
        if resolving:
            # Callbacks may have sent requests that the batched cells held back: dispatch them now.
            with self._lock:
                self._resolving -= 1
                if not self._resolving:
                    later = self._clock()
                    for batched in self._batched:
                        if batched.former:
                            self._dispatch(batched, later, rest)
        if rest:
            self._post(rest)
        elif not self._nworkers and finished:
            self._post([])  # waiters re-check their requests
        keep.reverse()  # callers pop from the end: run in dispatch order
        if interrupt is not None and threading.get_ident() not in self._worker_idents:
            # Ctrl-C (or SystemExit) in a cell run by a waiting caller: the request has failed and
            # the bookkeeping is done; give the follow-up work back and let the caller see it.
            self._give_back(keep)
            raise interrupt
        return keep

    def _settle(
        self,
        stage: _Stage,
        reqs: list[Request],
        results: list[Any],
        started: float,
        now: float,
        ran: bool,
        built: dict[int, CellError],
    ) -> tuple[list[Request], list[tuple[Request, BaseException]], BaseException | None]:
        """Record a finished call and hand its results on (caller holds the lock).

        Returns the requests now complete, those that failed with their exception, and the
        ``BaseException`` that is not an ``Exception`` (Ctrl-C) if the cell raised one.
        ``built``: request id to the ``CellError`` of each result that is an ``Exception`` (:func:`cell_errors`).
        ``ran=False``: the work was skipped (its requests had already failed); it frees its
        slot and its sids but counts no call, time or item.
        """
        plan = stage.plan
        counters = stage.counters
        index = plan.index
        stage.running -= 1
        if not ran:
            for req in reqs:
                req.entry.calls -= 1
            if stage.former is not None:
                stage.former.release(reqs)
            elif isinstance(stage.queue, SidQueue):
                stage.queue.finished(reqs[0].sid)
            return [], [], None
        counters.calls = calls = counters.calls + 1
        counters.items += len(reqs)
        elapsed = now - started
        counters.busy_seconds += elapsed
        record = not (stage.fast and calls % _FAST_SAMPLE)  # every call; one in _FAST_SAMPLE of a fast cell
        if record:
            counters.times.append(now - started)
            waits = counters.waits
            for req in reqs:
                waits.append(started - req.results[index])  # still the ready time (see Request)
        stage.fast = calls >= _FAST_AFTER_CALLS and counters.busy_seconds < calls * _FAST_CALL_SECONDS
        # Where it is read: by its recent calls, not its lifetime, so that a cell that turns slow (a model
        # swap, a call that hangs) leaves the reading thread at once instead of after thousands of calls.
        if elapsed >= _HERE_SLOW_CALL:
            stage.recent = _HERE_SAMPLE_CAP
        else:
            stage.recent += (min(elapsed, _HERE_SAMPLE_CAP) - stage.recent) * _HERE_WEIGHT
        stage.here = calls >= _FAST_AFTER_CALLS and stage.recent < _HERE_CALL_SECONDS
        if stage.former is not None:
            sizes = counters.batch_sizes
            sizes[len(reqs)] = sizes.get(len(reqs), 0) + 1
            stage.former.finished(reqs, now)
        elif isinstance(stage.queue, SidQueue):
            stage.queue.finished(reqs[0].sid)
        done: list[Request] = []
        errors: list[tuple[Request, BaseException]] = []
        interrupt: BaseException | None = None
        stages = self._stages
        successors = plan.successors
        for req, result in zip(reqs, results):
            req.entry.calls -= 1
            if req.failed:
                continue
            if isinstance(result, BaseException):
                counters.failures += 1
                if not isinstance(result, Exception):  # Ctrl-C or SystemExit in the cell: the whole request stops
                    interrupt = result
                    errors.append((req, result if req.error is None else req.error))
                    self._mark_failed(req)
                    continue
                self._fail_cell(req, plan, built[req.rid])
                if req.left == 0:
                    self._end_errored(req, now)
                    errors.append((req, req.error))  # type: ignore[arg-type]  # set by _fail_cell
                continue
            req.results[index] = result
            remaining = req.remaining
            for j in successors:
                remaining[j] -= 1
                if remaining[j] == 0:
                    req.results[j] = now  # ready time, until the outputs replace it
                    successor = stages[j]  # enqueue (as _enqueue, inlined: this is the hot path)
                    if successor.former is None:
                        successor.queue.append(req)
                    else:
                        req.taken[j] = QUEUED
                        successor.former.add(req, now)
            req.left -= 1
            if req.left == 0:
                if req.error is not None:  # another branch failed: this cell ran for its state change only
                    self._end_errored(req, now)
                    errors.append((req, req.error))
                    continue
                req.works = []
                done.append(req)
                del self._inflight[req.rid]
                if req.snaps is None:  # else (a durable store) its sid stays held until its checkpoint is written
                    self._states.release(req.entry, now)
                    self.succeeded += 1  # else counted once its checkpoint is written (_checkpoint)
                if record:  # sampled with the timings of the request's last cell
                    self._latencies.append(now - req.t0)
        if record and not calls % _FOLD_EVERY:  # a multiple of _FOLD_EVERY is a recorded call
            counters.fold()
            self._latency_hist.add(self._latencies)
            self._latencies = []
        return done, errors, interrupt

    def _checkpoint(
        self,
        durable: Checkpointer,
        checkpoints: list[Any],
        held: list[Request],
        done: list[Request],
        errors: list[tuple[Request, BaseException]],
    ) -> list[Request]:
        """Write the checkpoints of the requests a call completed, before their futures resolve.

        ``held``: the completed requests whose sids stay held (not idle, so never expired or
        evicted) until this write is done: a sid read back from the store is never older than
        its last write. Returns the requests still done; when the store fails, those it could
        not checkpoint move to ``errors`` instead.
        """
        written = [req for req in done if req.snaps is not None]  # their success waits for the checkpoint
        try:
            if checkpoints:
                durable.commit(checkpoints)
        except Exception as exc:
            sids = {checkpoint[0] for checkpoint, _ in checkpoints}
            kept: list[Request] = []
            for req in done:
                if req.sid in sids:
                    errors.append(
                        (
                            req,
                            RuntimeError(
                                f"checkpointing the state of sid {req.sid!r} to {durable.store.describe()} failed "
                                f"({type(exc).__name__}: {exc}); the update is kept in memory but not durable: "
                                "check the store"
                            ),
                        )
                    )
                else:
                    kept.append(req)
            with self._lock:
                self.failed += len(done) - len(kept)
            written = [req for req in kept if req.snaps is not None]
            done = kept
        finally:
            with self._lock:
                self.succeeded += len(written)  # (none when the store failed otherwise than for their sids)
                now = self._clock()
                for req in held:
                    self._states.release(req.entry, now)
            durable.end(len(held))
        return done

    def _resolve(self, plan: CellPlan, done: list[Request], errors: list[tuple[Request, BaseException]]) -> None:
        """Resolve the futures of the requests a call of ``plan``'s cell completed or failed (runs their callbacks)."""
        outputs = self._outputs
        previous = delivering(self)  # callbacks run here: a wait in one for this executor is refused
        try:
            for req in done:
                results = req.results
                try:
                    value = {ref: getattr(results[i], port) for ref, i, port in outputs}
                except Exception as lost:  # cannot happen after the output checks; fail this request, not the thread
                    set_exception(req.future, cell_error(plan, req, lost))
                    continue
                set_result(req.future, value)
            for req, exc in errors:
                set_exception(req.future, exc if exc is req.error else cell_error(plan, req, exc))
        finally:
            delivered(previous)

    # -- threads that run cells ----------------------------------------------------------------

    def _break(self, reason: str) -> None:
        """The scheduler can no longer serve (a bug in it): see ``Executor._break``."""
        raise NotImplementedError

    def _worker(self) -> None:
        try:
            self._work_loop()
        except BaseException as exc:  # a bug in the executor itself: never a silent hang
            self._break(f"worker thread {threading.current_thread().name} died: {type(exc).__name__}: {exc}")

    def _work_loop(self) -> None:
        # A worker is "active" while it runs fast cells: work for fast cells posted meanwhile
        # goes to the lazy queue it drains, instead of waking another thread for a few
        # microseconds of work. Entering a slow cell, or going idle, it stops being active.
        self._worker_idents.add(threading.get_ident())
        get = self._runq.get
        execute = self._execute
        lazy = self._lazy
        wake_lock = self._wake_lock
        active = False
        while True:
            work = None
            with wake_lock:
                if lazy:
                    work = lazy.popleft()
                elif active:
                    self._active -= 1
                    active = False
            if work is None:
                work = get()
                if work is None:
                    return
            if not work.claim():
                continue  # a waiting caller ran it already
            local = [work]
            while local:
                next_work = local.pop()
                fast = next_work.stage.fast
                if fast != active:
                    handoff: list[Work] = []
                    with wake_lock:
                        if fast:
                            self._active += 1
                        else:
                            self._active -= 1
                            if not self._active and lazy:
                                handoff = list(lazy)
                                lazy.clear()
                    active = fast
                    for item in handoff:
                        self._runq.put(item)
                local.extend(execute(next_work))

    def _help(self, ref: weakref.ReferenceType[Request]) -> None:
        """Run the unstarted cells of a request in the thread waiting for it (caller-runs).

        A caller blocked in ``future.result()`` would only wait for a worker to
        wake up; running the work itself saves two thread hand-offs, and lets a
        debugger step into the cells from the caller's thread.
        """
        req = ref()
        if req is None:
            return
        while not (req.failed or req.left == 0):
            work = next((w for w in req.works if w.claim()), None)
            if work is None:
                if self._nworkers:
                    return  # the workers have it; wait on the future
                # No workers: only waiters run cells. Sleep until work is posted or a request ends.
                with self._posted:
                    if not (req.failed or req.left == 0) and not any(w.claimable for w in req.works):
                        self._posted.wait()
                continue
            local = [work]
            while local:
                try:
                    local.extend(self._execute(local.pop()))
                except Exception as exc:  # a bug in the executor itself: fail loudly, never hang
                    self._break(f"running a request in a waiting thread failed: {type(exc).__name__}: {exc}")
                    return
                except BaseException:  # Ctrl-C in a cell: what this thread had claimed to run next goes back
                    if local:
                        self._give_back(local)
                    raise
                if local and (req.failed or req.left == 0):
                    self._give_back(local)
                    return

    def _run_here(self, works: list[Work]) -> None:
        """Run ``works`` in this thread as a worker would, while their cells are quick; a slower call goes to the workers.

        For the thread that reads a connection's requests: a request whose calls take
        microseconds then costs no thread hand-off, and a slower call never holds up the reading
        (see ``_HERE_CALL_SECONDS``).
        """
        local = [work for work in works if work.claim()]
        while local:
            work = local.pop()
            if not work.stage.here:
                self._give_back([work])
                continue
            try:
                local.extend(self._execute(work))
            except Exception as exc:  # a bug in the executor itself: fail loudly, never hang
                self._break(f"running a request in a reading thread failed: {type(exc).__name__}: {exc}")
                return
            except BaseException:  # SystemExit from a cell: its request failed and its follow-ups were posted
                continue

    def _post(self, works: list[Work]) -> None:
        """Hand ``works`` to the workers; without workers, wake the waiters, who find them through their requests."""
        if not self._nworkers:
            with self._posted:
                self._posted.notify_all()
            return
        wake = works
        if self._active:
            wake = []
            with self._wake_lock:
                for work in works:
                    if work.stage.fast and self._active:
                        self._lazy.append(work)
                    else:
                        wake.append(work)
        put = self._runq.put
        for work in wake:
            put(work)
