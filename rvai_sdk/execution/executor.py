"""The executor: runs a pipeline for many concurrent requests and owns per-sid state.

:class:`Executor` is what runtimes build in an inference process. It is assembled
from parts, each in a module of its own:

- :mod:`~rvai_sdk.execution.plan`: the immutable plan (per-cell static facts).
- :mod:`~rvai_sdk.execution.scheduler`: queues, per-sid exclusivity, worker threads,
  caller-runs, and the hot path (:class:`~rvai_sdk.execution.scheduler.Scheduler`,
  the data-plane half of the executor).
- :mod:`~rvai_sdk.execution.batching`: batch formation for ``call_batch`` cells
  (:class:`BatchingPolicy`, :class:`~rvai_sdk.execution.batching.BatchFormer`).
- :mod:`~rvai_sdk.execution.calls`: calling a cell and checking its outputs.
- :mod:`~rvai_sdk.execution.stats`: the typed stats schema and merging.
- :mod:`~rvai_sdk.execution.parameters`: resolving and validating parameters and model paths.
- :mod:`~rvai_sdk.execution.reconfigure`: reading and changing parameters and models
  (drain-then-swap; :class:`~rvai_sdk.execution.reconfigure.Reconfiguration`, a base of
  :class:`Executor`).

This module holds the control plane: the lifecycle (start, stop, broken), submit,
per-sid state access, deadlines and stuck calls, and stats. They stay together
(about 600 lines) because each is a transition of the same lifecycle under the
scheduler's lock: stop has to see submits, deadlines and stuck calls at once.
"""

from __future__ import annotations

import copy
import functools
import heapq
import itertools
import logging
import threading
import time
import typing
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from rvai_sdk.exc import (
    DeadlineExceededError,
    ProcessError,
    ProcessStateError,
    RvaiError,
    StateRestoreError,
    UnknownSidError,
)
from rvai_sdk.execution.batching import BatchingPolicy
from rvai_sdk.execution.calls import OutputCheckError
from rvai_sdk.execution.parameters import check_model_paths, resolve_parameters
from rvai_sdk.execution.plan import Plan
from rvai_sdk.execution.reconfigure import Reconfiguration
from rvai_sdk.execution.requests import Config, Request, Work, set_exception
from rvai_sdk.execution.scheduler import (
    _FAST_AFTER_CALLS,
    _FAST_CALL_SECONDS,
    _FAST_SAMPLE,
    _FOLD_EVERY,
    _LONGEST_WAIT,
    Scheduler,
)
from rvai_sdk.execution.state import StateEntry, StateStore
from rvai_sdk.execution.state_store import Checkpointer, DurableStateStore, dump_state, load_state
from rvai_sdk.execution.stats import ExecutorStats, StuckCall, timing_summary
from rvai_sdk.pipeline.graph import Pipeline

__all__ = ["BatchingPolicy", "Executor", "OutputCheckError", "resolve_parameters"]

_NO_ENTRY = StateEntry(None, 0.0)
"""A request's state entry until ``submit`` acquires the real one under the lock."""

# Names that earlier versions defined here (tests and benchmarks reach some of them).
_Work = Work
_Request = Request
_Config = Config
__reexported__ = (_FAST_AFTER_CALLS, _FAST_CALL_SECONDS, _FAST_SAMPLE, _FOLD_EVERY)


class Executor(Reconfiguration, Scheduler):
    """Runs one pipeline for many concurrent requests inside the current process.

    Runtimes construct one per inference process; users reach it through
    ``InferenceProcess``. Thread-safe.

    Args:
        pipeline: the pipeline to run.
        parameters: cell ref to Parameters (instances or field mappings); defaults elsewhere.
        models: cell ref to a model path handed to that cell's ``load_model``.
        devices: cell ref to the device it runs on (``"cpu"`` by default).
        batching: cell ref to a :class:`BatchingPolicy` overriding the cell's own limits.
        state_ttl: seconds an idle sid's state is kept; ``None`` keeps it until dropped.
        max_states: most sids whose state is kept; the least recently used idle one goes first.
        workers: worker threads; by default one per allowed concurrent call (the sum of the
            cells' ``concurrency``). With ``0`` cells run only in threads that wait on a
            request's ``future.result()``.
        clock: seconds, monotonic; what batch waits, timings and state expiry are measured
            with. Tests pass a fake one to make batching decisions deterministic (after
            moving it, call :meth:`recheck_timers`).
        stuck_after: seconds after which a call still running counts as stuck: the executor
            is then not :meth:`ready` and :meth:`stats` lists it under ``stuck``; ``None``
            never counts a call as stuck.
        on_broken: called once, with the reason, if the executor can no longer serve (a
            worker thread died); every pending request has failed by then. Runtimes end
            the inference process so that it turns FAILED.
        state_store: a durable store (:mod:`rvai_sdk.execution.state_store`) that per-sid
            state is checkpointed to and restored from; ``None`` keeps state in memory only.
            Connected in :meth:`start`, disconnected in :meth:`stop`.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        parameters: Mapping[str, Any] | None = None,
        models: Mapping[str, Any] | None = None,
        devices: Mapping[str, str] | None = None,
        batching: Mapping[str, BatchingPolicy] | None = None,
        state_ttl: float | None = 3600.0,
        max_states: int = 100_000,
        workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        stuck_after: float | None = 60.0,
        on_broken: Callable[[str], None] | None = None,
        state_store: DurableStateStore | None = None,
    ) -> None:
        plan = Plan(pipeline, batching=batching, devices=devices)
        super().__init__(plan, states=StateStore(ttl=state_ttl, max_states=max_states), clock=clock)
        self.pipeline = pipeline
        self.stuck_after = stuck_after
        self._on_broken = on_broken
        self.broken: str | None = None
        """Why the executor can no longer serve (a worker thread died), or ``None``."""
        self._workers = workers
        self._model_paths = check_model_paths(pipeline, models or {}, where="models=")
        params = resolve_parameters(pipeline, parameters)
        cells = plan.cells
        self._config = Config(tuple(params[c.ref] for c in cells), (None,) * len(cells))
        self._model_deps: list[frozenset[str]] = [frozenset()] * len(cells)
        self._ids = itertools.count(1)
        self._started = False
        self._params_lock = threading.Lock()
        self.submitted = 0
        self._deadlines: list[tuple[float, int, weakref.ReferenceType[Request]]] = []  # (due, rid, request) heap
        self._deadline_cv = threading.Condition(threading.Lock())
        self._deadline_thread: threading.Thread | None = None
        self.expired_deadlines = 0
        self._state_store = state_store

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Load every cell's model (in this thread) and start the worker threads.

        Raises:
            CellError: a cell's ``load_model`` raised; names the cell.
        """
        if self._started:
            return
        if self._state_store is not None and self._durable is None:
            self._open_state_store(self._state_store)
        models = list(self._config.models)
        deps = list(self._model_deps)
        for cell in self._plan.cells:
            if cell.spec.has_load_model:
                models[cell.index], deps[cell.index] = self._load_model(cell, self._config.params[cell.index])
        self._config = Config(self._config.params, tuple(models))
        self._model_deps = deps
        workers = sum(c.concurrency for c in self._plan.cells) if self._workers is None else self._workers
        if self._durable is not None and self._workers is None:
            workers += 1  # a call runs while another thread writes the checkpoints of the one before
        self._nworkers = workers
        name = self.pipeline.name
        for n in range(workers):
            t = threading.Thread(target=self._worker, name=f"rvai-{name}-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        if any(c.max_batch_wait > 0 for c in self._plan.batched):
            t = threading.Thread(target=self._timer_loop, name=f"rvai-{name}-batch-timer", daemon=True)
            t.start()
            self._threads.append(t)
        self._started = True

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop accepting requests, let those in flight finish for up to ``timeout`` seconds, fail the rest.

        Requests still pending after the timeout fail with :class:`~rvai_sdk.exc.ProcessError`.
        Idempotent.
        """
        with self._lock:
            if self._closed and not self._threads:
                return
            self._closed = True
            # Batches waiting to fill go now: nothing new will join them, and the batch timer stops.
            works: list[Work] = []
            now = self._clock()
            for stage in self._batched:
                if stage.former:
                    self._dispatch(stage, now, works)
        self._post(works)
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._inflight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._idle.wait(remaining)
            leftovers = self._take_inflight()
        self._fail_all(leftovers, "stopped", "send it again once the process is running")
        if not self._nworkers:
            self._post([])  # wake waiters of the requests just failed
        for _ in self._threads:
            self._runq.put(None)
        with self._timer_cv:
            self._timer_cv.notify_all()
        with self._deadline_cv:
            self._deadline_cv.notify_all()
        # Idle workers exit at once; one stuck in a cell cannot be killed (it is a thread): stop()
        # does not wait for it beyond a short grace, so it returns within its timeout.
        current = threading.current_thread()
        grace = time.monotonic() + 0.5
        for t in self._threads:
            if t is not current:
                t.join(timeout=max(0.0, grace - time.monotonic()))
        self._threads = []
        durable = self._durable
        if durable is not None:
            durable.wait_written(max(0.0, grace - time.monotonic()) + 5.0)  # requests done but still writing
            self._durable = None
            try:
                durable.close()  # the interval policy writes what it queued
            except Exception as exc:  # stopping goes on; say what was not written
                logging.getLogger(__name__).error(
                    "the last checkpoints of pipeline %r were not written to %s: %s: %s",
                    self.pipeline.name, durable.store.describe(), type(exc).__name__, exc,
                )

    def _open_state_store(self, store: DurableStateStore) -> None:
        classes = {c.ref: c.state_cls for c in self._plan.cells if c.state_cls is not None}
        try:
            durable = Checkpointer(store, classes, self._states.ttl)
        except RvaiError:
            raise
        except Exception as exc:
            raise ProcessError(
                f"pipeline {self.pipeline.name!r} cannot open {store.describe()}: {type(exc).__name__}: {exc}; "
                "check that the store is reachable (or leave Inference(state_store=...) out to keep state in memory)"
            ) from exc
        self._durable = durable

        def restore(sid: str, now: float) -> StateEntry | None:
            try:
                found = durable.restore(sid)
            except StateRestoreError as exc:
                raise StateRestoreError(
                    f"{exc} (in {store.describe()}); sending the request again cannot help: drop that sid's state "
                    f"(drop_state({sid!r})) to start it afresh, or restore the State class it was written with",
                    sid=sid,
                ) from exc
            except Exception as exc:
                raise ProcessError(
                    f"cannot restore the state of sid {sid!r} from {store.describe()}: {type(exc).__name__}: {exc}; "
                    "check that the store is reachable, then send the request again"
                ) from exc
            if found is None:
                return None
            entry = StateEntry(sid, now)
            entry.seq, entry.states = found
            return entry

        self._states.loader = restore

    @property
    def closed(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._closed

    # -- requests --------------------------------------------------------------------

    def submit(
        self,
        inputs: Mapping[str, Any],
        sid: str | None = None,
        timeout: float | None = None,
        *,
        here: bool = False,
        done: Callable[[Future[dict[str, Any]]], None] | None = None,
    ) -> Future[dict[str, Any]]:
        """Queue one request whose inputs were already validated.

        Args:
            inputs: pipeline input ref to typed value (see ``Pipeline.validate_inputs``).
            sid: the state id; ``None`` runs with fresh state that is not kept.
            timeout: seconds the request may take from now; past that its future fails with
                :class:`~rvai_sdk.exc.DeadlineExceededError` naming the cell it was in (a call
                already running finishes in the background; its result is dropped).
                ``None``: no deadline.
            here: run the request's first calls in this thread before returning when their cells'
                recent calls are quick (``Scheduler._run_here``): for the thread that reads requests.
            done: a completion callback, attached before anything runs: with ``here``, it also
                answers a request whose deadline passes while its call hangs in this thread.

        Returns:
            A future resolving to output ref → typed value, or failing with
            :class:`~rvai_sdk.exc.CellError` (or ``DeadlineExceededError``).

        Raises:
            ProcessStateError: the executor is stopped, broken or not started.
        """
        now = self._clock()
        # Build the request before taking the lock: many client threads submit at once (a batch's
        # callers all wake together), and every microsecond under the lock is one they queue for.
        req = Request(0, sid, _NO_ENTRY, inputs, self._config, self._plan.preds, now, bool(self._batched))
        future = req.future
        future._token, future._name = self, self.pipeline.name  # a wait for it in one of our callbacks is refused
        if timeout is None:
            req.future._help = functools.partial(self._help, weakref.ref(req))
        else:
            # A waiting caller never runs the cells of a request with a deadline: it could not
            # return from a cell that hangs.
            req.timeout = timeout
        req.future.set_running_or_notify_cancel()
        if done is not None:
            future.add_done_callback(done)
        restored = None
        loader = self._states.loader
        if loader is not None and sid is not None and self._states.get(sid) is None:
            # A sid not in memory: its state is read from the durable store here, outside the lock, so
            # that a slow (or hung) store delays this request only, never every other sid's. (The look
            # above is a hint; acquire() decides under the lock, by the generation, whether it still holds.)
            restored = (self._states.generation, loader(sid, now))
        with self._lock:
            if self._closed or not self._started or self.broken is not None:
                state = "FAILED" if self.broken is not None else "STOPPED" if self._closed else "STARTING"
                why = f"broken ({self.broken})" if self.broken is not None else "stopped" if self._closed else "not started"
                raise ProcessStateError(
                    f"the executor of pipeline {self.pipeline.name!r} is {why}; start a new inference process",
                    state=state,
                )
            req.rid = next(self._ids)
            req.entry = self._states.acquire(sid, now, restored)
            self.submitted += 1
            works = self._admit(req, now)
        if timeout is not None:
            self._add_deadline(req, now + timeout)  # once in flight: a deadline already past fails it at once
        if here and self._durable is None and all(work.stage.here for work in works):
            self._run_here(works)
        else:
            self._post(works)
        return req.future

    def drop_state(self, sid: str) -> None:
        """Forget the state of ``sid`` (in the durable store too); its next request starts fresh.

        Raises:
            UnknownSidError: no state is kept for ``sid``.
        """
        durable = self._durable
        deleting = False
        try:
            with self._lock:
                kept = self._states.drop(sid, deleted=True)  # a new generation: a reading made before is read again
                if durable is not None:
                    # From here the sid's requests start fresh and write only after the delete, which runs
                    # outside the lock: a slow or hung store does not hold up the other sids' requests.
                    deleting = True
                    kept = durable.begin_delete(sid) or kept
            if durable is not None:
                try:
                    kept = durable.delete(sid) or kept
                except Exception as exc:
                    raise ProcessError(
                        f"sid {sid!r} was dropped from memory but its checkpoint could not be deleted from "
                        f"{durable.store.describe()}: {type(exc).__name__}: {exc}; check the store and drop it again"
                    ) from exc
        finally:
            if deleting and durable is not None:
                durable.end_delete(sid)
        if not kept:
            raise UnknownSidError(f"no state is kept for sid {sid!r} (it never ran, expired or was dropped already)")

    def get_state(self, sid: str) -> dict[str, Any]:
        """A deep copy of ``sid``'s state: cell ref to State instance, for the stateful cells that ran.

        A sid that is not in memory is read from the durable store, if there is one (without holding up
        the requests of other sids meanwhile).

        Raises:
            UnknownSidError: no state is kept for ``sid``.
            ProcessError: the durable store could not be read (it names the store).
            StateRestoreError: the sid's stored state is damaged.
        """
        with self._lock:
            now = self._clock()
            self._states.expire(now)
            entry = self._states.get(sid)
            if entry is not None:
                return copy.deepcopy(entry.states)
            loader = self._states.loader
        if loader is not None:  # read outside the lock, as submit() does: a hung store holds no other sid
            restored = loader(sid, now)  # its errors name the store (ProcessError) or the sid (StateRestoreError)
            if restored is not None:
                return restored.states
        raise UnknownSidError(f"no state is kept for sid {sid!r} (it never ran, expired or was dropped)")

    def sids(self) -> list[str]:
        """The sids whose state is kept, least recently used first."""
        with self._lock:
            self._states.expire(self._clock())
            return self._states.sids()

    # -- hand-over (a sid moving to another executor, e.g. another Ray replica) ------------

    def export_state(self, sid: str) -> tuple[int, dict[str, bytes]] | None:
        """Take ``sid``'s state out of this executor, for another executor's :meth:`import_state`.

        The state leaves memory (a checkpoint in the durable store stays: the importer
        continues from it or from the exported copy, whichever it gets); a request of
        ``sid`` still in flight here finishes with the old state and writes no checkpoint.
        Callers wait for the sid's requests to finish first.

        Returns:
            ``(sequence number, cell ref -> pickled State fields)``, or ``None`` when no state
            of ``sid`` is in memory here.

        Raises:
            StateSerialisationError: a State field cannot be pickled (the state is dropped here all the same).
        """
        with self._lock:
            entry = self._states.get(sid)
            if entry is None:
                return None
            self._states.drop(sid)
        blobs: dict[str, bytes] = {}
        for ref, state in entry.states.items():
            try:
                blobs[ref] = dump_state(state)
            except Exception as exc:
                raise Checkpointer._unserialisable(ref, sid, state, exc) from exc
        return entry.seq, blobs

    def import_state(self, sid: str, seq: int, blobs: Mapping[str, bytes]) -> None:
        """Keep the state exported by another executor's :meth:`export_state` as ``sid``'s state here.

        Raises:
            ProcessStateError: a request of ``sid`` is in flight here.
        """
        classes = {c.ref: c.state_cls for c in self._plan.cells if c.state_cls is not None}
        entry = StateEntry(sid, 0.0)
        entry.seq = seq
        entry.states = {ref: load_state(classes[ref], blob) for ref, blob in blobs.items() if ref in classes}
        with self._lock:
            try:
                self._states.put(entry, self._clock())
            except ValueError as exc:
                raise ProcessStateError(f"cannot import the state of sid {sid!r}: {exc}") from exc

    def flush_checkpoints(self) -> None:
        """Write the checkpoints queued by an interval policy now (nothing to do without one)."""
        durable = self._durable
        if durable is not None and not durable.every:
            durable.flush()

    # -- statistics -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and timing summaries since the executor started, for a metrics endpoint and benchmarks.

        Returns:
            A dict (plain numbers, lists and dicts; JSON-serialisable). ``requests``:
            ``submitted``, ``succeeded``, ``failed``, ``in_flight``, ``deadline_exceeded`` (of
            the failed, those that ran past their deadline), and ``latency`` (a timing
            summary of succeeded requests, submit to last cell done). ``stuck``: the calls
            running longer than ``stuck_after`` (see :meth:`stuck_calls`: cell, sid, seconds).
            ``broken``: why the executor can no longer serve, or ``None``. ``sids``: ``live``,
            ``expired``, ``evicted``. ``cells``: cell ref to ``calls``, ``items``,
            ``failures``, ``busy_seconds``, ``queued``, ``running``, ``batch_sizes`` (exact:
            batch size to calls, batched cells only), ``batch_size`` (count, mean, p50, p90,
            p99, max of items per call), ``queue_wait`` (a timing summary per item: inputs
            complete to its call starting; for a batched cell this includes the wait for the
            batch to fill) and ``call_time`` (a timing summary per call). A cell whose mean
            call is under 50 µs records the timings of one call in 16 (``busy_seconds /
            calls`` stays the exact mean call time), and so does the latency of requests that
            such a cell finishes; every other cell records every call.

            A timing summary holds ``count``, ``sum``, ``mean``, ``p50``, ``p90``, ``p99`` and
            ``max`` in seconds, and ``buckets``: the non-empty histogram buckets as
            ``(upper edge, count)`` pairs. Percentiles are estimated from buckets at most
            25% wide (see :mod:`rvai_sdk.execution.metrics`); count, sum, mean and max are exact.
            The schema is typed in :mod:`rvai_sdk.execution.stats`: the dict is an
            :class:`~rvai_sdk.execution.stats.ExecutorStats`.
        """
        with self._lock:
            self._states.expire(self._clock())
            self._latency_hist.add(self._latencies)
            self._latencies = []
            snapshot: ExecutorStats = {
                "requests": {
                    "submitted": self.submitted,
                    "succeeded": self.succeeded,
                    "failed": self.failed,
                    "in_flight": len(self._inflight),
                    "deadline_exceeded": self.expired_deadlines,
                    "latency": timing_summary(self._latency_hist),
                },
                "stuck": self.stuck_calls(),
                "broken": self.broken,
                "sids": {"live": len(self._states), "expired": self._states.expired, "evicted": self._states.evicted},
                "cells": {
                    s.plan.ref: s.counters.snapshot(queued=s.queued(), running=s.running, batched=s.plan.batched)
                    for s in self._stages
                },
            }
        # Typed above, so that the keys are checked here; returned as a plain dict (the signature
        # runtimes and users rely on). Readers can cast it to ExecutorStats.
        return typing.cast(dict[str, Any], snapshot)

    # -- deadlines and stuck calls ------------------------------------------------------------

    def _add_deadline(self, req: Request, due: float) -> None:
        with self._deadline_cv:
            heapq.heappush(self._deadlines, (due, req.rid, weakref.ref(req)))
            self._deadline_cv.notify()
            if self._deadline_thread is None:
                self._deadline_thread = t = threading.Thread(
                    target=self._deadline_loop, name=f"rvai-{self.pipeline.name}-deadlines", daemon=True
                )
                t.start()
                self._threads.append(t)

    def _deadline_loop(self) -> None:
        cv = self._deadline_cv
        heap = self._deadlines
        while True:
            with cv:
                while True:
                    if self._closed:
                        return
                    if not heap:
                        cv.wait()
                        continue
                    due = heap[0][0]
                    delay = due - self._clock()
                    if delay > 0:
                        cv.wait(min(delay, _LONGEST_WAIT))
                        continue
                    ref = heapq.heappop(heap)[2]
                    break
            req = ref()
            if req is not None:
                try:
                    self._expire(req)
                except Exception:  # a bug: reported, and the other requests' deadlines are still kept
                    logging.getLogger(__name__).exception("pipeline %r: expiring request %s failed", self.pipeline.name, req.rid)

    def _expire(self, req: Request) -> None:
        """Fail ``req`` with DeadlineExceededError if it is still in flight."""
        with self._lock:
            if req.failed or req.left == 0 or req.rid not in self._inflight:
                return
            error = req.error
            ref, where = self._whereabouts(req)
            self._mark_failed(req)
            self.expired_deadlines += 1
            works: list[_Work] = []
            self._dispatch_all(self._clock(), works)
        if works:
            self._post(works)
        if error is not None:  # a cell failed it already and its other branches were still running: that error
            set_exception(req.future, error)
            return
        sid = "a one-off request" if req.sid is None else f"sid {req.sid!r}"
        set_exception(
            req.future,
            DeadlineExceededError(
                f"request {req.rid} ({sid}) exceeded its deadline of {req.timeout:g} s {where}; give it a longer "
                f"timeout=, or find out why cell {ref!r} is slow (proc.stats()['stuck'] lists calls running long)",
                ref=ref,
                sid=req.sid,
                timeout=req.timeout,
            ),
        )

    def _whereabouts(self, req: Request) -> tuple[str, str]:
        """The cell ``req`` is in, and a phrase saying how (caller holds the lock)."""
        now = self._clock()
        for work in list(self._calls.values()):
            if req in work.reqs:
                ref = work.stage.plan.ref
                return ref, f"in cell {ref!r} (its call has run for {now - work.started:.3g} s)"
        results, remaining = req.results, req.remaining
        for cell in self._plan.cells:
            i = cell.index
            if remaining[i] == 0 and type(results[i]) is float:
                return cell.ref, f"waiting for cell {cell.ref!r} (queued behind other calls)"
        last = self._plan.cells[-1].ref  # pragma: no cover - every unfinished request has a ready cell
        return last, f"in cell {last!r}"

    def stuck_calls(self, after: float | None = None) -> list[StuckCall]:
        """The calls running for longer than ``after`` seconds (default: ``stuck_after``).

        Returns:
            One dict per request in such a call: ``cell`` (ref), ``sid`` and ``seconds``
            (how long the call has run), longest first. Empty when ``after`` and
            ``stuck_after`` are ``None``.
        """
        after = self.stuck_after if after is None else after
        if after is None:
            return []
        now = self._clock()
        found: list[StuckCall] = [
            {"cell": work.stage.plan.ref, "sid": req.sid, "seconds": now - work.started}
            for work in list(self._calls.values())
            if now - work.started > after
            for req in work.reqs
        ]
        found.sort(key=lambda item: -item["seconds"])
        return found

    def ready(self) -> bool:
        """Whether the executor serves: started, not stopped, not broken, no call stuck."""
        return self._started and not self._closed and self.broken is None and not self.stuck_calls()

    def _break(self, reason: str) -> None:
        """The executor can no longer serve: fail every pending request and report it once."""
        with self._lock:
            if self.broken is not None:
                return
            self.broken = reason
            leftovers = self._take_inflight()
        self._fail_all(leftovers, f"failed ({reason})", "restart it (proc.restart()) and send it again")
        if not self._nworkers:
            self._post([])
        if self._on_broken is not None:
            self._on_broken(reason)

    def _fail_all(self, leftovers: list[Request], happened: str, advice: str) -> None:
        """Fail the futures of ``leftovers`` with ProcessError: the process ``happened`` before they finished."""
        for req in leftovers:
            if req.error is not None:  # a cell failed it already: that is its answer
                set_exception(req.future, req.error)
                continue
            set_exception(
                req.future,
                ProcessError(
                    f"the inference process of pipeline {self.pipeline.name!r} {happened} before request "
                    f"{req.rid} (sid {req.sid!r}) finished; {advice}"
                ),
            )
