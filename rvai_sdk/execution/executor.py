"""The executor: runs a pipeline for many concurrent requests and owns per-sid state.

Scheduling model
----------------
Each cell has a FIFO queue of requests whose inputs are ready and a limit on
concurrent calls (``concurrency``, default 1). A pool of worker threads, one per
allowed concurrent call, runs cells; when a worker finishes cell A for a request
and a successor B becomes ready and free, the same worker runs B at once (no
thread hand-off), so a chain costs one hand-off per request while independent
branches and consecutive requests still overlap on other workers.

Ordering: a sid's requests reach each cell in arrival order and a sid's state is
never used by two calls at once (per cell, a sid is "busy" while a call holds
it). Batched cells (``call_batch``) take up to ``max_batch_size`` ready requests
of distinct sids. A batch that is not full waits for more requests at most
``max_batch_wait``, counted from when the cell is free to take it, and goes at
once when nothing could still join it: no request in flight upstream, no
completion callbacks running, and, if the batch holds fewer streams than the
cell's last two batches, none of those streams between requests (so
closed-loop streams, which send again only when answered, come together in one
batch instead of splitting into groups that alternate).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import heapq
import itertools
import threading
import time
import traceback
import typing
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from queue import SimpleQueue
from typing import Any

import attrs

from rvai_sdk.cell import CellSpec
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Parameters
from rvai_sdk.exc import (
    CellError,
    DeadlineExceededError,
    InputValidationError,
    ParameterError,
    ProcessError,
    ProcessStateError,
    UnknownSidError,
)
from rvai_sdk.execution.metrics import Histogram
from rvai_sdk.execution.state import StateEntry, StateStore
from rvai_sdk.pipeline.graph import Pipeline

__all__ = ["BatchingPolicy", "Executor", "resolve_parameters"]


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
        if value < 0:
            raise ParameterError(f"BatchingPolicy.max_batch_wait must be >= 0, got {value!r}", field="max_batch_wait")


def resolve_parameters(pipeline: Pipeline, given: Mapping[str, Any] | None) -> dict[str, Parameters]:
    """Every cell's Parameters: the given ones validated, defaults for the rest.

    Args:
        pipeline: the pipeline.
        given: cell ref to a Parameters instance or a mapping of field to value.

    Returns:
        Cell ref to a validated Parameters instance, for every cell.

    Raises:
        ParameterError: an unknown ref, a value of the wrong class, a rejected field,
            or a cell whose Parameters have required fields and none were given.
    """
    given = dict(given or {})
    unknown = [ref for ref in given if ref not in pipeline.cells]
    if unknown:
        raise ParameterError(
            f"parameters given for unknown cell ref {unknown[0]!r}; the pipeline's cells are: {', '.join(pipeline.order)}",
            ref=str(unknown[0]),
        )
    resolved: dict[str, Parameters] = {}
    for ref in pipeline.order:
        cls = pipeline.spec(ref).parameters
        value = given.get(ref)
        resolved[ref] = _coerce_parameters(ref, cls, value, None)
    return resolved


def _coerce_parameters(ref: str, cls: type[Parameters], value: Any, current: Parameters | None) -> Parameters:
    if value is None and current is None:
        try:
            return cls()
        except TypeError as exc:
            raise ParameterError(
                f"cell {ref!r} needs parameters: {cls.__name__} has required fields; pass "
                f"Inference(parameters={{{ref!r}: {cls.__name__}(...)}})",
                ref=ref,
            ) from exc
    return cls.coerce(value, current, owner=f"cell {ref!r}", ref=ref)


def _differs(a: Any, b: Any) -> bool:
    if a is b:
        return False
    try:
        return bool(a != b)
    except Exception:  # arrays and other values without a truth value
        return True


_FAST_CALL_SECONDS = 50e-6
"""A cell whose mean call is shorter than this runs on the thread that made it ready (no wake-up)."""
_FAST_AFTER_CALLS = 16
"""Calls observed before a cell may count as fast."""
_FAST_SAMPLE = 16
"""Fast cells record the timings of one call in this many (their per-call bookkeeping would cost more than the call)."""
_FOLD_EVERY = 1024
"""A cell's raw timings (and the request latencies) are folded into histograms, vectorised, every this many calls."""


class _Stage:
    """One cell's runtime record: how to call it, its queue and its limits."""

    __slots__ = (
        "index",
        "ref",
        "spec",
        "call",
        "call_batch",
        "batched",
        "inputs_cls",
        "outputs_cls",
        "bindings",
        "successors",
        "n_preds",
        "state_cls",
        "concurrency",
        "max_batch_size",
        "max_batch_wait",
        "track_busy",
        "queue",
        "running",
        "busy",
        "expected",
        "timer_due",
        "free_since",
        "last_entries",
        "recent",
        "recent_count",
        "scan",
        "device",
        "calls",
        "items",
        "busy_seconds",
        "failures",
        "batch_sizes",
        "fast",
        "has_call",
        "waits",
        "times",
        "wait_hist",
        "time_hist",
        "out_checks",
    )

    def __init__(self, index: int, ref: str, spec: CellSpec, policy: BatchingPolicy | None, device: str) -> None:
        self.index = index
        self.ref = ref
        self.spec = spec
        cls = spec.cell_class
        self.call = cls.call
        self.call_batch = cls.call_batch
        self.batched = spec.has_call_batch
        self.inputs_cls = spec.inputs
        self.outputs_cls = spec.outputs
        self.bindings: tuple[tuple[str, int, str], ...] = ()
        self.successors: tuple[int, ...] = ()
        self.n_preds = 0
        self.state_cls = spec.state
        self.concurrency = spec.concurrency
        self.max_batch_size = policy.max_batch_size if policy else spec.max_batch_size
        self.max_batch_wait = policy.max_batch_wait if policy else spec.max_batch_wait
        self.track_busy = self.batched or self.concurrency > 1
        self.queue: deque[Any] = deque()
        self.running = 0
        self.busy: set[str] = set()
        self.expected = 0
        self.timer_due: float | None = None
        self.free_since = -float("inf")  # when a call of this (batched) cell last ended
        self.last_entries: list[StateEntry] = []  # the streams (kept sids) of its last batch
        self.recent: list[StateEntry] = []  # those of its last two batches: streams likely to send again
        self.recent_count = 0  # how many distinct streams that is
        self.scan = 0  # where the search for an idle recent stream resumes
        self.device = device
        self.calls = 0
        self.items = 0
        self.busy_seconds = 0.0
        self.failures = 0
        self.batch_sizes: dict[int, int] = {}
        self.fast = False
        self.has_call = spec.has_call
        self.waits: list[float] = []  # per item: seconds from ready (inputs complete) to its call starting
        self.times: list[float] = []  # per call: seconds the call took
        self.wait_hist = Histogram()
        self.time_hist = Histogram()
        # (field name, declared type, declaration for bounds, coercer) of every output field:
        # outputs are checked at the cell boundary (a field never set, or re-assigned to a wrong type).
        self.out_checks: tuple[tuple[str, Any, Any, Any], ...] = spec.outputs._coercers()

    def fold(self) -> None:
        """Move the raw timings into the histograms."""
        self.wait_hist.add(self.waits)
        self.waits = []
        self.time_hist.add(self.times)
        self.times = []


class _Config:
    """An immutable snapshot of parameters and models; a request keeps the one current at submit."""

    __slots__ = ("params", "models")

    def __init__(self, params: tuple[Parameters, ...], models: tuple[Any, ...]) -> None:
        self.params = params
        self.models = models


class _Work:
    """Cells to run: one request, or one batch, at one stage; claimed exactly once by whoever runs it."""

    __slots__ = ("stage", "reqs", "_token", "started")

    def __init__(self, stage: _Stage, reqs: list[_Request]) -> None:
        self.stage = stage
        self.reqs = reqs
        self._token = [True]
        self.started = 0.0  # when its call started (set by whoever runs it)

    def claim(self) -> bool:
        """Take the right to run this work; True for exactly one caller (``list.pop`` is atomic)."""
        try:
            self._token.pop()
        except IndexError:
            return False
        return True


class _RequestFuture(Future):  # type: ignore[type-arg]
    """A request's future: waiting on it with ``result()`` runs the request's unstarted cells in the waiting thread."""

    _help: Any = None

    def result(self, timeout: float | None = None) -> Any:
        help_ = self._help
        if help_ is not None and timeout is None and not self.done():
            help_()
        return super().result(timeout)


class _Request:
    __slots__ = (
        "rid",
        "sid",
        "entry",
        "inputs",
        "config",
        "results",
        "remaining",
        "left",
        "future",
        "failed",
        "taken",
        "works",
        "t0",
        "timeout",
        "__weakref__",
    )

    def __init__(
        self,
        rid: int,
        sid: str | None,
        entry: StateEntry,
        inputs: Mapping[str, Any],
        config: _Config,
        preds: list[int],
        t0: float,
        batched: bool,
    ) -> None:
        self.rid = rid
        self.sid = sid
        self.entry = entry
        self.inputs = inputs
        self.config = config
        # results[i] holds the time cell i's inputs were complete (its queue-wait start) until it
        # holds cell i's outputs; successors read it only after cell i is done.
        self.results: list[Any] = [t0] * len(preds)
        self.remaining = preds.copy()
        self.left = len(preds)
        self.future: _RequestFuture = _RequestFuture()
        self.failed = False
        self.taken = [False] * len(preds) if batched else preds  # read only for batched cells
        self.works: list[_Work] = []
        self.t0 = t0
        self.timeout: float | None = None


class Executor:
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
        max_states: int = 10_000,
        workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        stuck_after: float | None = 60.0,
        on_broken: Callable[[str], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.stuck_after = stuck_after
        self._on_broken = on_broken
        self.broken: str | None = None
        """Why the executor can no longer serve (a worker thread died), or ``None``."""
        self._clock = clock
        self._workers = workers
        batching = dict(batching or {})
        devices = dict(devices or {})
        for ref in batching:
            if ref not in pipeline.cells:
                raise ParameterError(f"batching given for unknown cell ref {ref!r}", ref=ref)
            if not pipeline.spec(ref).has_call_batch:
                raise ParameterError(
                    f"batching given for cell {ref!r}, which has no call_batch(); only batched cells take a policy",
                    ref=ref,
                )
        self._stages = [
            _Stage(i, ref, pipeline.spec(ref), batching.get(ref), devices.get(ref, "cpu"))
            for i, ref in enumerate(pipeline.order)
        ]
        index = {s.ref: s.index for s in self._stages}
        for stage in self._stages:
            bindings = []
            for port, binding in pipeline.bindings[stage.ref].items():
                if binding.cell is None:
                    bindings.append((port, -1, binding.port))
                else:
                    bindings.append((port, index[binding.cell], binding.port))
            stage.bindings = tuple(bindings)
            stage.successors = tuple(index[s] for s in pipeline.successors(stage.ref))
            stage.n_preds = len(pipeline.predecessors(stage.ref))
        self._preds = [s.n_preds for s in self._stages]
        self._roots = [s for s in self._stages if s.n_preds == 0]
        self._batched = [s for s in self._stages if s.batched]
        self._has_batched = bool(self._batched)
        self._outputs = tuple((o.ref, index[o.cell], o.port) for o in pipeline.outputs.values())
        self._model_paths = dict(models or {})
        for ref in self._model_paths:
            if ref not in pipeline.cells:
                raise ParameterError(f"model path given for unknown cell ref {ref!r}", ref=ref)
        params = resolve_parameters(pipeline, parameters)
        self._config = _Config(tuple(params[s.ref] for s in self._stages), (None,) * len(self._stages))
        self._model_deps: list[frozenset[str]] = [frozenset()] * len(self._stages)
        self._states = StateStore(ttl=state_ttl, max_states=max_states)
        self._lock = threading.Lock()
        self._runq: SimpleQueue[_Work | None] = SimpleQueue()
        self._timer_cv = threading.Condition(threading.Lock())
        self._timers: list[tuple[float, int]] = []
        self._ids = itertools.count(1)
        self._inflight: dict[int, _Request] = {}
        self._idle = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        self._nworkers = 0
        self._wake_lock = threading.Lock()
        self._params_lock = threading.Lock()
        self._posted = threading.Condition(threading.Lock())
        self._resolving = 0
        self._worker_idents: set[int] = set()
        self._lazy: deque[_Work] = deque()
        self._active = 0
        self.submitted = 0
        self.succeeded = 0
        self.failed = 0
        self._latencies: list[float] = []
        self._latency_hist = Histogram()
        self._calls: dict[int, _Work] = {}  # the calls running now, by id(work): stuck-call detection
        self._deadlines: list[tuple[float, int, weakref.ReferenceType[_Request]]] = []  # (due, rid, request) heap
        self._deadline_cv = threading.Condition(threading.Lock())
        self._deadline_thread: threading.Thread | None = None
        self.expired_deadlines = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Load every cell's model (in this thread) and start the worker threads.

        Raises:
            CellError: a cell's ``load_model`` raised; names the cell.
        """
        if self._started:
            return
        models = list(self._config.models)
        deps = list(self._model_deps)
        for stage in self._stages:
            if stage.spec.has_load_model:
                models[stage.index], deps[stage.index] = self._load_model(stage, self._config.params[stage.index])
        self._config = _Config(self._config.params, tuple(models))
        self._model_deps = deps
        workers = sum(s.concurrency for s in self._stages) if self._workers is None else self._workers
        self._nworkers = workers
        name = self.pipeline.name
        for n in range(workers):
            t = threading.Thread(target=self._worker, name=f"rvai-{name}-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        if any(s.batched and s.max_batch_wait > 0 for s in self._stages):
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
            works: list[_Work] = []
            now = self._clock()
            for stage in self._batched:
                if stage.queue:
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._closed

    # -- requests --------------------------------------------------------------------

    def submit(
        self, inputs: Mapping[str, Any], sid: str | None = None, timeout: float | None = None
    ) -> Future[dict[str, Any]]:
        """Queue one request whose inputs were already validated.

        Args:
            inputs: pipeline input ref to typed value (see ``Pipeline.validate_inputs``).
            sid: the state id; ``None`` runs with fresh state that is not kept.
            timeout: seconds the request may take from now; past that its future fails with
                :class:`~rvai_sdk.exc.DeadlineExceededError` naming the cell it was in (a call
                already running finishes in the background; its result is dropped).
                ``None``: no deadline.

        Returns:
            A future resolving to output ref → typed value, or failing with
            :class:`~rvai_sdk.exc.CellError` (or ``DeadlineExceededError``).

        Raises:
            ProcessStateError: the executor is stopped, broken or not started.
        """
        now = self._clock()
        with self._lock:
            if self._closed or not self._started or self.broken is not None:
                state = "FAILED" if self.broken is not None else "STOPPED" if self._closed else "STARTING"
                why = f"broken ({self.broken})" if self.broken is not None else "stopped" if self._closed else "not started"
                raise ProcessStateError(
                    f"the executor of pipeline {self.pipeline.name!r} is {why}; start a new inference process",
                    state=state,
                )
            rid = next(self._ids)
            entry = self._states.acquire(sid, now)
            req = _Request(rid, sid, entry, inputs, self._config, self._preds, now, self._has_batched)
            if timeout is None:
                req.future._help = functools.partial(self._help, weakref.ref(req))
            else:
                # A waiting caller never runs the cells of a request with a deadline: it could not
                # return from a cell that hangs.
                req.timeout = timeout
                self._add_deadline(req, now + timeout)
            req.future.set_running_or_notify_cancel()
            self._inflight[rid] = req
            self.submitted += 1
            for stage in self._batched:
                stage.expected += 1  # batch-wait accounting: requests that will still reach this cell
            works: list[_Work] = []
            for stage in self._roots:
                stage.queue.append((req, now) if stage.batched else req)  # a queue entry, as in _execute
                self._dispatch(stage, now, works)
        self._post(works)
        return req.future

    def drop_state(self, sid: str) -> None:
        """Forget the state of ``sid``; its next request starts fresh.

        Raises:
            UnknownSidError: no state is kept for ``sid``.
        """
        with self._lock:
            if not self._states.drop(sid):
                raise UnknownSidError(
                    f"no state is kept for sid {sid!r} (it never ran, expired or was dropped already)"
                )

    def get_state(self, sid: str) -> dict[str, Any]:
        """A deep copy of ``sid``'s state: cell ref to State instance, for the stateful cells that ran.

        Raises:
            UnknownSidError: no state is kept for ``sid``.
        """
        with self._lock:
            self._states.expire(self._clock())
            entry = self._states.get(sid)
            if entry is None:
                raise UnknownSidError(f"no state is kept for sid {sid!r} (it never ran, expired or was dropped)")
            return copy.deepcopy(entry.states)

    def sids(self) -> list[str]:
        """The sids whose state is kept, least recently used first."""
        with self._lock:
            self._states.expire(self._clock())
            return self._states.sids()

    # -- parameters and models -----------------------------------------------------------

    def get_parameters(self) -> dict[str, Parameters]:
        """Cell ref to a copy of the cell's current Parameters."""
        return {s.ref: copy.deepcopy(self._config.params[s.index]) for s in self._stages}

    def set_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Change cell parameters for the requests submitted from now on.

        All values are validated before any takes effect. A cell whose
        ``load_model`` read a changed field gets its model reloaded first
        (in this thread); requests in flight finish with the old model.

        Args:
            parameters: cell ref to a Parameters instance or a mapping of changed fields.

        Raises:
            ParameterError: an unknown ref or field, or a rejected value; nothing changes.
            CellError: a reloading ``load_model`` raised; nothing changes.
        """
        with self._params_lock:  # one change at a time: none is lost
            self._set_parameters(parameters)

    def _set_parameters(self, parameters: Mapping[str, Any]) -> None:
        refs = {s.ref: s for s in self._stages}
        config = self._config
        new_params = list(config.params)
        for ref, value in parameters.items():
            stage = refs.get(ref)
            if stage is None:
                raise ParameterError(
                    f"unknown cell ref {ref!r}; the pipeline's cells are: {', '.join(refs)}", ref=str(ref)
                )
            new_params[stage.index] = _coerce_parameters(
                ref, stage.spec.parameters, value, config.params[stage.index]
            )
        models = list(config.models)
        deps = list(self._model_deps)
        for stage in self._stages:
            old, new = config.params[stage.index], new_params[stage.index]
            if not stage.spec.has_load_model or old is new:
                continue
            changed = {
                f.name for f in type(new).fields_info() if _differs(getattr(old, f.name), getattr(new, f.name))
            }
            if changed & self._model_deps[stage.index]:
                models[stage.index], deps[stage.index] = self._load_model(stage, new)
        with self._lock:
            self._config = _Config(tuple(new_params), tuple(models))
            self._model_deps = deps

    def _load_model(self, stage: _Stage, params: Parameters) -> tuple[Any, frozenset[str]]:
        recorded, read = _recording(params)
        context = ModelContext(stage.ref, stage.device, self.pipeline.name)
        try:
            model = stage.spec.cell_class.load_model(context, recorded, self._model_paths.get(stage.ref))
        except Exception as exc:
            raise CellError(
                f"load_model of cell {stage.ref!r} ({stage.spec.name}) failed: {type(exc).__name__}: {exc}",
                ref=stage.ref,
                sid=None,
                cause_type=type(exc).__name__,
                remote_traceback="".join(traceback.format_exception(exc)),
            ) from exc
        return model, frozenset(read)

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
        """
        with self._lock:
            self._states.expire(self._clock())
            self._latency_hist.add(self._latencies)
            self._latencies = []
            for stage in self._stages:
                stage.fold()
            return {
                "requests": {
                    "submitted": self.submitted,
                    "succeeded": self.succeeded,
                    "failed": self.failed,
                    "in_flight": len(self._inflight),
                    "deadline_exceeded": self.expired_deadlines,
                    "latency": self._latency_hist.summary(),
                },
                "stuck": self.stuck_calls(),
                "broken": self.broken,
                "sids": {"live": len(self._states), "expired": self._states.expired, "evicted": self._states.evicted},
                "cells": {
                    s.ref: {
                        "calls": s.calls,
                        "items": s.items,
                        "failures": s.failures,
                        "busy_seconds": s.busy_seconds,
                        "queued": len(s.queue),
                        "running": s.running,
                        "batch_sizes": dict(sorted(s.batch_sizes.items())),
                        "batch_size": _size_summary(s.batch_sizes if s.batched else {1: s.calls}),
                        "queue_wait": s.wait_hist.summary(),
                        "call_time": s.time_hist.summary(),
                    }
                    for s in self._stages
                },
            }

    # -- scheduling (callers hold self._lock) -----------------------------------------------

    def _dispatch(self, stage: _Stage, now: float, works: list[_Work]) -> None:
        queue = stage.queue
        if not queue:
            return
        if stage.batched:
            self._dispatch_batches(stage, now, works)
            return
        while queue and stage.running < stage.concurrency:
            if not stage.track_busy:
                req = queue.popleft()
                if req.failed:
                    continue
            else:
                req = None
                for candidate in queue:
                    if candidate.failed or candidate.sid is None or candidate.sid not in stage.busy:
                        req = candidate
                        break
                if req is None:
                    return
                queue.remove(req)
                if req.failed:
                    continue
                if req.sid is not None:
                    stage.busy.add(req.sid)
            stage.running += 1
            work = _Work(stage, [req])
            req.works.append(work)
            works.append(work)

    def _dispatch_batches(self, stage: _Stage, now: float, works: list[_Work]) -> None:
        queue = stage.queue
        limit = stage.max_batch_size
        while queue and stage.running < stage.concurrency:
            chosen: list[tuple[_Request, float]] = []
            seen = set(stage.busy)
            live = 0
            for item in queue:
                req = item[0]
                if req.failed:
                    continue
                live += 1
                if len(chosen) < limit and (req.sid is None or req.sid not in seen):
                    chosen.append(item)
                    if req.sid is not None:
                        seen.add(req.sid)
            if not chosen:
                if live == 0:
                    queue.clear()
                return
            # Go before the batch is full only when waiting cannot fill it: no request still in
            # flight could join, no thread is resolving futures whose callbacks may send more, and
            # (when the batch has fewer streams than the last two batches) no stream of those
            # batches is between requests. Closed-loop streams send their
            # next request only once the last one is answered (possibly from another process), so a
            # batch that went without them would split the streams into groups that alternate for
            # good, each batch smaller than it could be. (Streams with a request in flight elsewhere
            # are not waited for: upstream ones count in `expected`, downstream ones cannot send yet.)
            # The wait counts from when the cell could take the batch: time spent queued behind a
            # running call is not time the batch could have filled in.
            if len(chosen) < limit and not self._closed and (
                live < stage.expected
                or self._resolving
                or (len(chosen) < stage.recent_count and self._recent_idle(stage))
            ):
                due = max(chosen[0][1], stage.free_since) + stage.max_batch_wait
                if now < due:
                    self._schedule(stage, due)
                    return
            picked = {id(item) for item in chosen}
            stage.queue = queue = deque(item for item in queue if id(item) not in picked and not item[0].failed)
            batch = [item[0] for item in chosen]
            for req in batch:
                req.taken[stage.index] = True
                if req.sid is not None:
                    stage.busy.add(req.sid)
            stage.running += 1
            stage.expected -= len(batch)
            work = _Work(stage, batch)
            for req in batch:
                req.works.append(work)
            works.append(work)

    @staticmethod
    def _recent_idle(stage: _Stage) -> bool:
        """Whether a stream of the cell's last two batches has no request in flight (it may send one soon)."""
        recent = stage.recent
        n = len(recent)
        start = stage.scan
        for k in range(n):  # resumes where the last search stopped: amortised O(1) per arrival
            i = (start + k) % n
            if not recent[i].inflight:
                stage.scan = i
                return True
        return False

    def _schedule(self, stage: _Stage, due: float) -> None:
        if stage.timer_due is not None and stage.timer_due <= due:
            return
        stage.timer_due = due
        with self._timer_cv:
            heapq.heappush(self._timers, (due, stage.index))
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
                        self._timer_cv.wait(delay)
                        continue
                    heapq.heappop(self._timers)
                    break
            works: list[_Work] = []
            with self._lock:
                stage = self._stages[index]
                if stage.timer_due is not None and stage.timer_due <= due:
                    stage.timer_due = None
                self._dispatch(stage, self._clock(), works)
            self._post(works)

    # -- deadlines and stuck calls ------------------------------------------------------------

    def _add_deadline(self, req: _Request, due: float) -> None:
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
                        cv.wait(delay)
                        continue
                    ref = heapq.heappop(heap)[2]
                    break
            req = ref()
            if req is not None:
                self._expire(req)

    def _expire(self, req: _Request) -> None:
        """Fail ``req`` with DeadlineExceededError if it is still in flight."""
        with self._lock:
            if req.failed or req.left == 0 or req.rid not in self._inflight:
                return
            ref, where = self._whereabouts(req)
            self._mark_failed(req)
            self.expired_deadlines += 1
        sid = "a one-off request" if req.sid is None else f"sid {req.sid!r}"
        _set_exception(
            req.future,
            DeadlineExceededError(
                f"request {req.rid} ({sid}) exceeded its deadline of {req.timeout:g} s {where}; give it a longer "
                f"timeout=, or find out why cell {ref!r} is slow (proc.stats()['stuck'] lists calls running long)",
                ref=ref,
                sid=req.sid,
                timeout=req.timeout,
            ),
        )

    def _whereabouts(self, req: _Request) -> tuple[str, str]:
        """The cell ``req`` is in, and a phrase saying how (caller holds the lock)."""
        now = self._clock()
        for work in list(self._calls.values()):
            if req in work.reqs:
                return work.stage.ref, f"in cell {work.stage.ref!r} (its call has run for {now - work.started:.3g} s)"
        results, remaining = req.results, req.remaining
        for stage in self._stages:
            i = stage.index
            if remaining[i] == 0 and type(results[i]) is float:
                return stage.ref, f"waiting for cell {stage.ref!r} (queued behind other calls)"
        last = self._stages[-1].ref  # pragma: no cover - every unfinished request has a ready cell
        return last, f"in cell {last!r}"

    def stuck_calls(self, after: float | None = None) -> list[dict[str, Any]]:
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
        found = [
            {"cell": work.stage.ref, "sid": req.sid, "seconds": now - work.started}
            for work in list(self._calls.values())
            if now - work.started > after
            for req in work.reqs
        ]
        found.sort(key=lambda item: -typing.cast(float, item["seconds"]))
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

    def _take_inflight(self) -> list[_Request]:
        """Mark every request in flight failed and return them (caller holds the lock)."""
        leftovers = list(self._inflight.values())
        for req in leftovers:
            self._mark_failed(req)
        self._inflight.clear()
        return leftovers

    def _fail_all(self, leftovers: list[_Request], happened: str, advice: str) -> None:
        """Fail the futures of ``leftovers`` with ProcessError: the process ``happened`` before they finished."""
        for req in leftovers:
            _set_exception(
                req.future,
                ProcessError(
                    f"the inference process of pipeline {self.pipeline.name!r} {happened} before request "
                    f"{req.rid} (sid {req.sid!r}) finished; {advice}"
                ),
            )

    def _mark_failed(self, req: _Request) -> None:
        req.failed = True
        req.works = []
        for stage in self._batched:
            if not req.taken[stage.index]:
                req.taken[stage.index] = True
                stage.expected -= 1
        self._inflight.pop(req.rid, None)
        self._states.release(req.entry, self._clock())
        self.failed += 1
        if self._closed and not self._inflight:
            self._idle.notify_all()

    # -- running cells (worker threads) ---------------------------------------------------------

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
                    handoff: list[_Work] = []
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

    def _help(self, ref: weakref.ReferenceType[_Request]) -> None:
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
                    if not (req.failed or req.left == 0) and not any(w._token for w in req.works):
                        self._posted.wait()
                continue
            local = [work]
            while local:
                try:
                    local.extend(self._execute(local.pop()))
                except Exception as exc:  # a bug in the executor itself: fail loudly, never hang
                    self._break(f"running a request in a waiting thread failed: {type(exc).__name__}: {exc}")
                    return
                if local and (req.failed or req.left == 0):
                    for left in local:
                        left._token.append(True)
                    self._post(local)
                    return

    def _post(self, works: list[_Work]) -> None:
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

    def _execute(self, work: _Work) -> list[_Work]:
        stage, reqs = work.stage, work.reqs
        work.started = started = self._clock()
        calls_now = self._calls
        key = id(work)
        calls_now[key] = work  # seen by stuck-call detection and deadlines while it runs
        if stage.batched:
            results = self._call_batch(stage, reqs)
        elif reqs[0].failed:  # its deadline passed while it was queued: do not run it
            results = [None]
        else:
            results = [self._call_one(stage, reqs[0])]
        del calls_now[key]
        now = self._clock()
        elapsed = now - started

        done: list[_Request] = []
        errors: list[tuple[_Request, BaseException]] = []
        interrupt: BaseException | None = None
        works: list[_Work] = []
        stages = self._stages
        index = stage.index
        with self._lock:
            stage.running -= 1
            stage.calls = calls = stage.calls + 1
            stage.items += len(reqs)
            stage.busy_seconds += elapsed
            record = not (stage.fast and calls % _FAST_SAMPLE)  # every call; one in _FAST_SAMPLE of a fast cell
            if record:
                stage.times.append(elapsed)
                waits = stage.waits
                for req in reqs:
                    waits.append(started - req.results[index])  # still the ready time (see _Request)
            stage.fast = calls >= _FAST_AFTER_CALLS and stage.busy_seconds < calls * _FAST_CALL_SECONDS
            if stage.batched:
                stage.batch_sizes[len(reqs)] = stage.batch_sizes.get(len(reqs), 0) + 1
                entries = [req.entry for req in reqs if req.sid is not None]
                stage.recent = stage.last_entries + entries
                stage.recent_count = len(set(stage.recent))
                stage.last_entries = entries
                stage.scan = 0
                stage.free_since = now
            for req, result in zip(reqs, results):
                if stage.track_busy and req.sid is not None:
                    stage.busy.discard(req.sid)
                if req.failed:
                    continue
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        interrupt = result
                    stage.failures += 1
                    self._mark_failed(req)
                    errors.append((req, result))
                    continue
                req.results[index] = result
                remaining = req.remaining
                for j in stage.successors:
                    remaining[j] -= 1
                    if remaining[j] == 0:
                        successor = stages[j]  # enqueue: batched cells keep (request, ready time)
                        req.results[j] = now  # ready time, until the outputs replace it
                        successor.queue.append((req, now) if successor.batched else req)
                req.left -= 1
                if req.left == 0:
                    req.works = []
                    done.append(req)
                    del self._inflight[req.rid]
                    self._states.release(req.entry, now)
                    self.succeeded += 1
                    if record:  # sampled with the timings of the request's last cell
                        self._latencies.append(now - req.t0)
            if record and not calls % _FOLD_EVERY:  # a multiple of _FOLD_EVERY is a recorded call
                stage.fold()
                self._latency_hist.add(self._latencies)
                self._latencies = []
            resolving = bool(self._batched and (done or errors))
            if resolving:
                self._resolving += 1  # before dispatching: this thread's callbacks may send more
            for j in stage.successors:
                if stages[j].queue:
                    self._dispatch(stages[j], now, works)
            if stage.queue:
                self._dispatch(stage, now, works)
            if self._closed and not self._inflight:
                self._idle.notify_all()  # stop() waits for the last request
            # Run on in this thread: the first new work (a successor of this request, so a chain
            # costs no hand-off) and any work of a cell whose calls are too short to be worth
            # waking another thread for. The rest goes to other workers, to overlap.
            keep: list[_Work] = []
            rest: list[_Work] = []
            for candidate in works:
                if (not keep or candidate.stage.fast) and candidate.claim():
                    keep.append(candidate)
                else:
                    rest.append(candidate)
        for req in done:
            results_ = req.results
            try:
                outputs = {ref: getattr(results_[i], port) for ref, i, port in self._outputs}
            except Exception as lost:  # cannot happen after the output checks; fail this request, not the thread
                _set_exception(req.future, _cell_error(stage, req, lost))
                continue
            _set_result(req.future, outputs)
        for req, exc in errors:
            _set_exception(req.future, _cell_error(stage, req, exc))
        if resolving:
            # Callbacks may have sent requests that the batched cells held back: dispatch them now.
            with self._lock:
                self._resolving -= 1
                if not self._resolving:
                    later = self._clock()
                    for batched in self._batched:
                        if batched.queue:
                            self._dispatch(batched, later, rest)
        if rest:
            self._post(rest)
        elif not self._nworkers and (done or errors):
            self._post([])  # waiters re-check their requests
        keep.reverse()  # callers pop from the end: run in dispatch order
        if interrupt is not None and threading.get_ident() not in self._worker_idents:
            # Ctrl-C (or SystemExit) in a cell run by a waiting caller: the request has failed and
            # the bookkeeping is done; give the follow-up work back and let the caller see it.
            for left in keep:
                left._token.append(True)
            self._post(keep)
            raise interrupt
        return keep

    def _inputs_for(self, stage: _Stage, req: _Request) -> Any:
        results = req.results
        inputs = req.inputs
        values = {
            port: inputs[src_port] if src < 0 else getattr(results[src], src_port)
            for port, src, src_port in stage.bindings
        }
        return stage.inputs_cls(**values)

    def _context(self, stage: _Stage, req: _Request) -> InferenceContext:
        state = req.entry.state_for(stage.ref, stage.state_cls) if stage.state_cls is not None else None
        return InferenceContext(stage.ref, req.sid, state, req.config.models[stage.index], stage.device, req.rid)

    def _call_one(self, stage: _Stage, req: _Request) -> Any:
        try:
            inputs = self._inputs_for(stage, req)
            if stage.has_call:
                out = stage.call(self._context(stage, req), req.config.params[stage.index], inputs)
            else:
                out = self._unwrap_single(stage, stage.call_batch([self._context(stage, req)], req.config.params[stage.index], [inputs]))
            if type(out) is not stage.outputs_cls and not isinstance(out, stage.outputs_cls):
                raise TypeError(
                    f"call() returned {type(out).__name__}; it must return {stage.outputs_cls.__name__}"
                )
            for name, tp, like, coerce in stage.out_checks:
                if type(getattr(out, name, _ABSENT)) is not tp:
                    _check_output(stage, out, "call()", name, tp, like, coerce)
            return out
        except BaseException as exc:  # KeyboardInterrupt too: the bookkeeping must still happen
            return exc

    @staticmethod
    def _unwrap_single(stage: _Stage, result: Any) -> Any:
        if not isinstance(result, (list, tuple)) or len(result) != 1:
            raise TypeError(f"call_batch() must return a list with one item per input, got {type(result).__name__}")
        item = result[0]
        if isinstance(item, BaseException):
            raise item
        return item

    def _call_batch(self, stage: _Stage, reqs: list[_Request]) -> list[Any]:
        # Items of one batch use the parameters and model of the first item's snapshot.
        config = reqs[0].config
        try:
            inputs_list = []
            contexts = []
            for req in reqs:
                inputs_list.append(self._inputs_for(stage, req))
                state = req.entry.state_for(stage.ref, stage.state_cls) if stage.state_cls is not None else None
                contexts.append(
                    InferenceContext(stage.ref, req.sid, state, config.models[stage.index], stage.device, req.rid)
                )
            outs = stage.call_batch(contexts, config.params[stage.index], inputs_list)
            if not isinstance(outs, (list, tuple)) or len(outs) != len(reqs):
                got = f"{len(outs)} items" if isinstance(outs, (list, tuple)) else type(outs).__name__
                raise TypeError(f"call_batch() got {len(reqs)} inputs and returned {got}; return one output per input")
        except BaseException as exc:
            return [exc] * len(reqs)
        results: list[Any] = []
        checks = stage.out_checks
        for n, out in enumerate(outs):
            if isinstance(out, BaseException):
                results.append(out)
            elif isinstance(out, stage.outputs_cls):
                try:
                    for name, tp, like, coerce in checks:
                        if type(getattr(out, name, _ABSENT)) is not tp:
                            _check_output(stage, out, f"call_batch() item {n}", name, tp, like, coerce)
                except Exception as exc:
                    results.append(exc)
                else:
                    results.append(out)
            else:
                results.append(
                    TypeError(f"call_batch() returned a {type(out).__name__} item; items must be {stage.outputs_cls.__name__} or an exception")
                )
        return results


_ABSENT: Any = object()


class OutputCheckError(TypeError):
    """A cell returned Outputs with a field that is not set, or not of its declared type.

    Attributes:
        field: the name of the offending output field.
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _check_output(stage: _Stage, out: Any, where: str, name: str, tp: Any, like: Any, coerce: Any) -> None:
    """Check (and losslessly coerce) one output field whose value is not exactly of its declared type.

    Raises:
        OutputCheckError: the field is not set, or its value does not fit the declared type.
    """
    cls = stage.outputs_cls.__name__
    value = getattr(out, name, _ABSENT)
    if value is _ABSENT:
        raise OutputCheckError(
            f"{where} returned {cls} with output field {name!r} not set; construct it as {cls}({name}=...) "
            "and do not delete fields",
            name,
        )
    try:
        coerced = coerce(value, like=like)
    except (InputValidationError, TypeError, ValueError) as exc:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise OutputCheckError(
            f"{where} returned {cls} whose output field {name!r} holds {type(value).__name__} {shown}, "
            f"which does not fit its declared type {getattr(tp, '__name__', str(tp))} ({exc}); assign a value of that type",
            name,
        ) from None
    if coerced is not value:
        object.__setattr__(out, name, coerced)


def _size_summary(sizes: Mapping[int, int]) -> dict[str, Any]:
    """Count, mean, p50, p90, p99 and max of batch sizes given as size -> calls (exact)."""
    count = sum(sizes.values())
    if not count:
        return {"count": 0, "mean": 0.0, "p50": 0, "p90": 0, "p99": 0, "max": 0}
    ordered = sorted((size, n) for size, n in sizes.items() if n)

    def percentile(q: float) -> int:
        rank = max(1, -(-count * q // 100))
        seen = 0
        for size, n in ordered:
            seen += n
            if seen >= rank:
                return size
        return ordered[-1][0]  # pragma: no cover

    return {
        "count": count,
        "mean": sum(size * n for size, n in ordered) / count,
        "p50": percentile(50),
        "p90": percentile(90),
        "p99": percentile(99),
        "max": ordered[-1][0],
    }


def _cell_error(stage: _Stage, req: _Request, exc: BaseException) -> CellError:
    sid = "a one-off request" if req.sid is None else f"sid {req.sid!r}"
    if isinstance(exc, OutputCheckError):
        return CellError(
            f"cell {stage.ref!r} ({stage.spec.name}) failed for {sid}: {exc}",
            ref=stage.ref,
            sid=req.sid,
            cause_type=type(exc).__name__,
            field=exc.field,
        )
    return CellError(
        f"cell {stage.ref!r} ({stage.spec.name}) failed for {sid}: {type(exc).__name__}: {exc}",
        ref=stage.ref,
        sid=req.sid,
        cause_type=type(exc).__name__,
        remote_traceback="".join(traceback.format_exception(exc)),
    )


def _set_result(future: Future[dict[str, Any]], value: dict[str, Any]) -> None:
    try:
        future.set_result(value)
    except InvalidStateError:  # already failed by stop()
        pass


def _set_exception(future: Future[dict[str, Any]], exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except InvalidStateError:
        pass


def _recording(params: Parameters) -> tuple[Parameters, set[str]]:
    """A copy of ``params`` that records which fields are read, and the set it records into."""
    cls = type(params)
    names = {f.name for f in cls.fields_info()}
    read: set[str] = set()

    def __getattribute__(self: Any, name: str) -> Any:
        if name in names:
            read.add(name)
        return object.__getattribute__(self, name)

    recorder = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__, "__module__": cls.__module__})
    recorder.__qualname__ = cls.__qualname__
    typing.cast(Any, recorder)._rvai_fields_cache = cls.fields_info()
    typing.cast(Any, recorder)._rvai_coercers_cache = cls._coercers()
    clone = copy.copy(params)
    try:
        object.__setattr__(clone, "__class__", recorder)
    except TypeError:  # e.g. slotted dataclasses: treat every field as read
        read.update(names)
        return params, read
    return clone, read
