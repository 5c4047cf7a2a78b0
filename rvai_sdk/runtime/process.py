"""The one handle on an inference process: its state machine, validation, drivers, parameters and stats.

Every runtime returns this class (the ray runtime a subclass that adds scaling).
What differs between runtimes is only how a process is launched, watched,
stopped and restarted, and where a driver runs: a :class:`ProcessBackend`
(``runtime/debug.py``, ``local.py``, ``ray.py``) supplies that and hands back a
:class:`~rvai_sdk.transport.link.Link` for the data path. Every status change
goes through :meth:`InferenceProcess._transition` and the table in
:mod:`rvai_sdk.runtime.status`.
"""

from __future__ import annotations

import abc
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk.data import Parameters
from rvai_sdk.drivers.port import RestrictedInferenceProcess, await_result, check_request, check_timeout
from rvai_sdk.exc import ProcessStateError, RvaiError
from rvai_sdk.execution.parameters import check_model_paths
from rvai_sdk.runtime.driver_process import DriverFactory, DriverRegistry, PipelineDriverProcess
from rvai_sdk.runtime.inference import Inference
from rvai_sdk.runtime.status import ProcessStatus, check_transition
from rvai_sdk.transport.link import Link

__all__ = ["ProcessStatus", "InferenceProcess", "ProcessBackend"]

_UNANSWERED_AFTER = 10.0
"""The supervisor restarts a process that does not answer its ``ping`` for ``max(stuck_after, this)`` seconds."""

_STATS_UNANSWERED = 3
"""... or answers ``ping`` but not ``stats()`` (its executor's lock held) this many times in a row."""


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a wait that ran out of time, not a process that is gone."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (its type's name when it has none)."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


RECONFIGURE_GRACE = 10.0
"""Seconds a backend waits, past ``load_timeout``, for a process to say whether a change was made or discarded."""


class ProcessBackend(abc.ABC):
    """How one runtime launches, watches, stops and restarts an inference process, and hosts drivers.

    A backend holds no status: it reports a process that died or broke to
    :meth:`InferenceProcess._lost`, and the handle decides. Methods are called by the
    handle only, never two at once for one process (except :meth:`start_driver`).
    """

    process: InferenceProcess

    def bind(self, process: InferenceProcess) -> None:
        """Called once by the handle it serves."""
        self.process = process

    @abc.abstractmethod
    def launch(self, parameters: Mapping[str, Any]) -> Link:
        """Start the inference process with these parameters; its link once every ``load_model`` ran.

        Raises:
            CellError: a ``load_model`` failed.
            ProcessError: the process could not be started (nothing is left running).
        """

    @property
    def pid(self) -> int | None:
        """The inference process's pid, where it is one process of this machine (``None`` otherwise)."""
        return None

    load_timeout: float | None = None
    """Most seconds :meth:`reconfigure` waits for the process to load new models (``None``: no limit)."""

    def watch(self) -> None:
        """Start watching the process just launched; report its death with ``process._lost(reason)``."""

    def reconfigure(self, method: str, value: Mapping[str, Any]) -> None:
        """Run ``set_parameters`` or ``set_models`` in the launched process (drain-then-swap there).

        The handle calls it with its configuration lock held, one change at a time; a backend
        with replicas reconfigures them one after the other (see the ray backend). A backend
        launches later processes with :meth:`InferenceProcess.get_models` as their model paths.

        The process is given ``load_timeout`` too: models it loads later than that are
        discarded rather than swapped in, so that a change reported as failed never takes
        effect afterwards. This waits ``RECONFIGURE_GRACE`` seconds longer for the process's
        own answer (swapped, or discarded) before giving up on an unresponsive process.

        Raises:
            ParameterError: a rejected value; nothing changed.
            CellError: a ``load_model`` failed; nothing changed, the old models serve on.
            ProcessError: loading took longer than ``load_timeout`` (nothing changed), or the
                process could not be reached or did not answer at all.
        """
        self.process._link.call(method, dict(value), self.load_timeout, timeout=self.reconfigure_wait)

    @property
    def reconfigure_wait(self) -> float | None:
        """Seconds to wait for a process's answer to a change: ``load_timeout`` + ``RECONFIGURE_GRACE`` (``None``: no limit)."""
        return None if self.load_timeout is None else self.load_timeout + RECONFIGURE_GRACE

    @abc.abstractmethod
    def shutdown(self, timeout: float | None) -> None:
        """Stop the launched process within ``timeout`` seconds (killing it past that); pending requests fail."""

    def release(self) -> None:
        """The handle is STOPPED for good: free what the backend holds (GPU shares, memory pools, threads)."""

    @abc.abstractmethod
    def start_driver(
        self, ref: str, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PipelineDriverProcess:
        """Start a driver and return its handle once it runs (or raise DriverError)."""


class _HandleLink(Link):
    """A link onto the handle itself: what a driver in this process (debug runtime) sends through.

    It follows the handle across ``restart()`` and refuses requests unless it is RUNNING.
    """

    def __init__(self, process: InferenceProcess) -> None:
        self._process = process

    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> Future[dict[str, Any]]:
        process = self._process
        process._require_running("predict")
        return process._link.submit(inputs, sid, timeout)

    def call(self, method: str, *args: Any, timeout: float | None = 60.0) -> Any:
        return self._process._control(method, *args)

    def is_ready(self) -> bool:
        return self._process.is_ready()

    def close(self) -> None:
        pass


class _ClosedLink(Link):
    """The link of a process that has none (not launched yet, or stopped)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _error(self) -> ProcessStateError:
        return ProcessStateError(f"the inference process of pipeline {self.name!r} is not running", state="STOPPED")

    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> Future[dict[str, Any]]:
        raise self._error()

    def call(self, method: str, *args: Any, timeout: float | None = 60.0) -> Any:
        raise self._error()

    def is_ready(self) -> bool:
        return False

    def close(self) -> None:
        pass


class InferenceProcess:
    """A running pipeline that takes requests; made by ``Runtime.start_inference``.

    Every runtime returns this class with the same behaviour: ``predict`` returns a
    :class:`concurrent.futures.Future` of output ref → typed value; bad inputs raise
    :class:`~rvai_sdk.exc.InputValidationError` at once; a failing cell fails only
    that request with a :class:`~rvai_sdk.exc.CellError`. Use it as a context
    manager to stop it on exit.

    Args:
        inference: what runs.
        backend: how this runtime launches, watches and stops it (see :class:`ProcessBackend`).
    """

    def __init__(self, inference: Inference, backend: ProcessBackend) -> None:
        self.inference = inference
        self.pipeline = inference.pipeline
        self._status = ProcessStatus.STARTING
        self.failure: str | None = None
        self._drivers = DriverRegistry()
        self.max_sid_length = inference.max_sid_length
        self.request_timeout = inference.request_timeout
        self.supervisor_restarts: list[str] = []
        """Why the opt-in supervisor (``Inference(supervise=True)``) restarted the process, oldest first."""
        self._parameters: Mapping[str, Any] = dict(inference.parameters)
        self._models: dict[str, str] = {ref: str(path) for ref, path in inference.models.items()}
        self._config_lock = threading.Lock()  # one parameter or model change, or restart, at a time
        self._link: Link = _ClosedLink(self.pipeline.name)
        self._lock = threading.RLock()
        self._backend = backend
        backend.bind(self)

    @property
    def status(self) -> ProcessStatus:
        """The current :class:`ProcessStatus`."""
        return self._status

    @property
    def pid(self) -> int | None:
        """The inference process's pid on the local runtime (``None`` on the others, or before it started)."""
        return self._backend.pid

    def _transition(self, new: ProcessStatus, failure: str | None = None) -> None:
        with self._lock:
            check_transition(f"inference process of pipeline {self.pipeline.name!r}", self._status, new)
            self._status = new
            if failure is not None:
                self.failure = failure

    def _require_running(self, action: str) -> None:
        if self._status is not ProcessStatus.RUNNING:
            why = f" ({self.failure})" if self.failure else ""
            raise ProcessStateError(
                f"cannot {action}: the inference process of pipeline {self.pipeline.name!r} is {self._status.name}{why}; "
                "start a new one with rt.start_inference(...)",
                state=self._status.name,
            )

    # -- life cycle (the backend launches, watches and stops; the handle decides) ------------------

    def _start(self) -> None:
        """Launch (first start, or after ``restart``): STARTING → RUNNING, or FAILED and raise."""
        try:
            link = self._backend.launch(self._parameters)
        except BaseException as exc:
            with self._lock:
                stopped = self._status in (ProcessStatus.STOPPING, ProcessStatus.STOPPED)
                if not stopped:
                    self._transition(ProcessStatus.FAILED, failure=first_line(exc))
            if stopped:  # stop() came meanwhile (and may have cut the launch short)
                raise self._stopped_while("it started") from exc
            raise
        with self._lock:
            stopped = self._status in (ProcessStatus.STOPPING, ProcessStatus.STOPPED)
            if not stopped:
                self._link = link
                self._transition(ProcessStatus.RUNNING)
        if stopped:  # stop() came while this launched, and stopped what ran before: what was launched goes too
            try:
                self._backend.shutdown(0.0)
            finally:
                self._backend.release()
            raise self._stopped_while("it started")
        self._backend.watch()

    def _stopped_while(self, what: str) -> ProcessStateError:
        return ProcessStateError(
            f"the inference process of pipeline {self.pipeline.name!r} was stopped while {what}; "
            "start a new one with rt.start_inference(...)",
            state=self._status.name,
        )

    def _lost(self, reason: str) -> None:
        """The backend reports that the process died or can no longer serve: RUNNING → FAILED."""
        with self._lock:
            if self._status is ProcessStatus.RUNNING:
                self._transition(ProcessStatus.FAILED, failure=reason)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the drivers, then stop taking requests, finish those in flight for up to ``timeout`` seconds
        and fail the rest. Idempotent."""
        with self._lock:
            if self._status in (ProcessStatus.STOPPED, ProcessStatus.STOPPING):
                return
            self._transition(ProcessStatus.STOPPING)
        try:
            self._backend.shutdown(self._stop_drivers(timeout))
        finally:
            self._transition(ProcessStatus.STOPPED)
            self._link = _ClosedLink(self.pipeline.name)
            self._backend.release()

    def restart(self, timeout: float | None = 10.0) -> None:
        """Replace the inference process by a fresh one (models loaded again; sid state gone, unless
        ``Inference(state_store=...)`` keeps it: then every sid continues from its last checkpoint).

        Requests in flight fail with :class:`~rvai_sdk.exc.ProcessError`; attached drivers
        stay attached and send to the new process once it is ready; parameters set with
        :meth:`set_parameters` and model paths set with :meth:`set_models` are kept. Use it after the process failed (``status`` is FAILED).

        Raises:
            ProcessStateError: the process was stopped, or is starting.
            CellError: a ``load_model`` failed in the new process.
        """
        with self._lock:
            if self._status in (ProcessStatus.STOPPED, ProcessStatus.STOPPING, ProcessStatus.STARTING):
                raise ProcessStateError(
                    f"cannot restart: the inference process of pipeline {self.pipeline.name!r} is {self._status.name}; "
                    "start a new one with rt.start_inference(...)",
                    state=self._status.name,
                )
            self._transition(ProcessStatus.STARTING)
        with self._config_lock:  # a change in progress completes first: the new process gets it
            self._backend.shutdown(timeout)
            self._start()

    # -- requests ---------------------------------------------------------------------------------

    def predict(
        self, inputs: Mapping[str, Any], sid: str | None = None, *, timeout: float | None = None
    ) -> Future[dict[str, Any]]:
        """Run the pipeline on one request.

        Args:
            inputs: pipeline input ref → value; plain values are coerced losslessly (``1`` → ``Integer(1)``).
            sid: the state id of the stream; requests of one sid see each other's cell state,
                in order. ``None`` runs with fresh state that is not kept. At most
                ``Inference(max_sid_length=...)`` characters (256 by default).
            timeout: the request's deadline in seconds, counted from now; ``None`` takes
                ``Inference(request_timeout=...)`` (no deadline by default). Past it the future
                fails promptly with :class:`~rvai_sdk.exc.DeadlineExceededError` naming the cell
                the request was in; a call already running finishes in the background.

        Returns:
            A future resolving to a dict of output ref → typed value.

        Raises:
            InputValidationError: a missing, unknown or wrongly typed input, a bad or too long sid,
                or a bad timeout (raised here, not in the future).
            ProcessStateError: the process is not running.
            ProcessError: the process (on ``ray``: the sid's replica) cannot be reached right now, e.g. it
                died and is being started again; nothing was sent: send it again later.

        Example::

            proc.predict({"input": 1}, sid="camera-1", timeout=2.0).result()  # {'output': Integer(2)}
        """
        self._require_running("predict")
        check_timeout(timeout)
        checked = check_request(self.pipeline, inputs, sid, self.max_sid_length)
        if _tracing.TRACER is not None:  # traced: an rvai.predict span around the request
            return _tracing.predict(self._link.submit, checked, sid, self.request_timeout if timeout is None else timeout)
        return self._link.submit(checked, sid, self.request_timeout if timeout is None else timeout)

    async def apredict(
        self, inputs: Mapping[str, Any], sid: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """``await`` form of :meth:`predict`: run the pipeline on one request from a coroutine.

        The request is validated and sent at once, as by :meth:`predict`; awaiting its result
        does not block the event loop, so one task can have many requests in flight
        (``asyncio.gather``). Works the same on every runtime.

        Args:
            inputs: as :meth:`predict`.
            sid: as :meth:`predict`.
            timeout: as :meth:`predict`.

        Returns:
            Output ref → typed value.

        Raises:
            InputValidationError: a missing, unknown or wrongly typed input, a bad sid or timeout.
            ProcessStateError: the process is not running.
            CellError: a cell failed for this request.
            DeadlineExceededError: the request ran past its deadline.

        Example::

            outputs = await proc.apredict({"input": 1}, sid="camera-1")  # {'output': Integer(2)}
        """
        return await await_result(self.predict(inputs, sid, timeout=timeout))

    def is_ready(self) -> bool:
        """Whether the process serves now: RUNNING, reachable, and no call stuck past ``stuck_after``.

        This is what drivers report as readiness (HTTP ``/ready``). A process with a stuck
        call stays RUNNING (requests with a deadline still fail promptly) but is not ready;
        ``stats()["stuck"]`` says which cell, sid and for how long.
        """
        return self._status is ProcessStatus.RUNNING and self._link.is_ready()

    def _control(self, method: str, *args: Any) -> Any:
        self._require_running(method.replace("_", " "))
        return self._link.call(method, *args)

    def get_parameters(self) -> dict[str, Parameters]:
        """Cell ref → a copy of that cell's current Parameters."""
        result: dict[str, Parameters] = self._control("get_parameters")
        return result

    def set_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Change parameters for every request submitted after this returns; kept across ``restart()``.

        A cell whose ``load_model`` read a changed field gets its model reloaded, without
        stopping: drain-then-swap (docs/guides/durability.md, "Model update"). The new
        model loads while requests keep running with the old one; then the swap is atomic:
        requests submitted before the call finish with the old parameters and model, every
        request submitted after it returns runs with the new ones. No request fails
        because of the swap and per-sid state is kept. On the ray runtime the replicas
        reload one after the other, each serving with its old model while it loads; a
        replica restarted later starts with the new parameters.

        Args:
            parameters: cell ref to a Parameters instance or a mapping of changed fields.

        Raises:
            ParameterError: an unknown ref or field, or a rejected value; nothing changes.
            CellError: a reloading ``load_model`` failed (names the cell); nothing changes,
                the old model keeps serving (on ray, replicas already swapped are swapped back).
            ProcessError: a reloading ``load_model`` took longer than the runtime's
                ``start_timeout``: its models are discarded, not swapped in later; nothing changes.
            ProcessStateError: the process is not running.
        """
        with self._config_lock:
            self._require_running("set parameters")
            self._backend.reconfigure("set_parameters", dict(parameters))
            self._parameters = self._link.call("get_parameters")

    def get_models(self) -> dict[str, str]:
        """Cell ref → the model path its ``load_model`` gets: ``Inference(models=...)`` as changed by :meth:`set_models`.

        This is what the process runs with, and what ``restart()`` (and the supervisor, and
        a ray replica started again) loads; answered by the handle, in any status.
        """
        return dict(self._models)

    def set_models(self, models: Mapping[str, str | os.PathLike[str] | None]) -> None:
        """Swap cells' models for new model paths without stopping; kept across ``restart()``.

        Each named cell's ``load_model`` runs again with its new path (and the parameters
        in force). Drain-then-swap, as :meth:`set_parameters`: the new models load while
        requests keep running with the old ones; requests submitted before the call finish
        with the old models, every request submitted after it returns uses the new ones;
        no request fails because of the swap; per-sid state is kept. On the ray runtime
        the replicas swap one after the other.

        Args:
            models: cell ref → model path (``str`` or ``pathlib.Path``); ``None`` gives that
                cell's ``load_model`` no path, as when ``Inference(models=...)`` leaves it out.

        Raises:
            ParameterError: an unknown ref, a cell without ``load_model``, or a path of
                another type; nothing changes.
            CellError: a ``load_model`` failed with its new path (names the cell); nothing
                changes, the old models keep serving.
            ProcessError: loading took longer than the runtime's ``start_timeout``: the new
                models are discarded, not swapped in later; nothing changes.
            ProcessStateError: the process is not running.

        Example::

            proc.set_models({"detect": "/models/yolo-v2.onnx"})
        """
        paths = check_model_paths(self.pipeline, models, where="set_models(...)")
        with self._config_lock:
            self._require_running("set models")
            self._backend.reconfigure("set_models", paths)
            merged: dict[str, str | None] = {**self._models, **paths}
            self._models = {ref: path for ref, path in merged.items() if path is not None}

    def drop_state(self, sid: str) -> None:
        """Forget the state kept for ``sid``.

        Raises:
            UnknownSidError: no state is kept for ``sid``.
        """
        self._control("drop_state", sid)

    def get_state(self, sid: str) -> dict[str, Any]:
        """A copy of ``sid``'s cell states: cell ref → State.

        Raises:
            UnknownSidError: no state is kept for ``sid``.
        """
        result: dict[str, Any] = self._control("get_state", sid)
        return result

    def sids(self) -> list[str]:
        """The sids whose state is kept."""
        result: list[str] = self._control("sids")
        return result

    def stats(self) -> dict[str, Any]:
        """Counters: requests by outcome, live sids, per-cell calls, items, batch sizes and busy time."""
        result: dict[str, Any] = self._control("stats")
        return result

    # -- the opt-in supervisor ------------------------------------------------------------

    def _start_supervisor(self, stuck_after: float) -> None:
        """Watch the process on a thread: restart it when it died or a call is stuck (``Inference(supervise=True)``)."""
        threading.Thread(
            target=self._supervise, args=(stuck_after,), name=f"rvai-supervisor-{self.pipeline.name}", daemon=True
        ).start()

    def _supervise(self, stuck_after: float) -> None:
        reason: str | None
        tick = threading.Event()
        interval = min(1.0, stuck_after / 4)
        backoff = interval
        unanswered = 0  # stats() calls in a row that answered ping but not stats (the executor's lock held)
        watched = self._link  # ... of this process
        while True:
            tick.wait(backoff)
            status = self._status
            if status in (ProcessStatus.STOPPING, ProcessStatus.STOPPED):
                return
            reason = None
            if status is not ProcessStatus.RUNNING or self._link is not watched:
                unanswered, watched = 0, self._link  # counted for one process: a restart (anyone's) starts again
            if status is ProcessStatus.FAILED:
                reason = f"the process failed ({self.failure})"
            elif status is ProcessStatus.RUNNING:
                wait = max(stuck_after, _UNANSWERED_AFTER)
                stuck: list[dict[str, Any]] = []
                try:
                    # ping needs the interpreter only (stats also the executor's lock, which a restore from
                    # a slow store holds): it is what a call holding the interpreter keeps from answering
                    self._link.call("ping", timeout=wait)
                except RvaiError as exc:
                    unanswered = 0
                    if self._status is not ProcessStatus.RUNNING or not _timed_out(exc):
                        continue  # died or restarting meanwhile: looked at again next time
                    # alive but mute: a call holding the interpreter (a C extension, a regex) or a deadlock,
                    # which the process cannot report as stuck itself, nor expire its requests' deadlines
                    reason = f"the process did not answer for {wait:g} s (a call holding the interpreter?)"
                else:
                    try:
                        stuck = self._link.call("stats", timeout=wait).get("stuck") or []
                        unanswered = 0
                    except RvaiError as exc:
                        if self._status is not ProcessStatus.RUNNING or not _timed_out(exc):
                            unanswered = 0
                            continue  # died or restarting meanwhile: looked at again next time
                        unanswered += 1  # a restore from a slow store holds the lock a while: not at once
                        if unanswered < _STATS_UNANSWERED:
                            continue
                        reason = (
                            f"the process answered ping but not stats() {unanswered} times in a row ({wait:g} s "
                            "each): its executor is wedged"
                        )
                if stuck:
                    first = stuck[0]
                    reason = (
                        f"a call of cell {first['cell']!r} (sid {first['sid']!r}) was stuck for "
                        f"{first['seconds']:.1f} s (stuck_after={stuck_after:g} s)"
                    )
            if reason is None:
                backoff = interval
                continue
            try:
                self.restart()
            except RvaiError:  # stopped meanwhile, or the new process failed: try again later, more slowly
                backoff = min(30.0, backoff * 2)
                continue
            self.supervisor_restarts.append(reason)
            backoff = interval
            unanswered = 0  # (its own restart: on ray the link object stays the same)

    # -- drivers -------------------------------------------------------------------------

    def restricted(self) -> RestrictedInferenceProcess:
        """A :class:`RestrictedInferenceProcess` on this process, as drivers in this process get it.

        It follows this handle across ``restart()`` and refuses requests unless it is RUNNING.
        """
        return RestrictedInferenceProcess(
            self.pipeline,
            _HandleLink(self),
            max_sid_length=self.max_sid_length,
            request_timeout=self.request_timeout,
        )

    def add_driver(self, ref: str, factory: DriverFactory, /, *args: Any, **kwargs: Any) -> PipelineDriverProcess:
        """Start a driver that feeds this inference process; returns once it runs.

        The driver is made by ``factory(*args, **kwargs)`` where it runs (a separate
        process on the local runtime, a thread on the debug runtime), so a class or a
        local function defined in a notebook both work.

        Args:
            ref: a name for the driver, unique among this process's drivers.
            factory: a :class:`~rvai_sdk.drivers.PipelineDriver` subclass or a callable returning one.
            *args: positional arguments for the factory.
            **kwargs: keyword arguments for the factory.

        Returns:
            The driver's handle, RUNNING, with its services published.

        Raises:
            DriverError: the ref is taken, the factory failed, or the driver failed while starting
                (the message has its error and traceback).
            ProcessStateError: this inference process is not running.

        Example::

            http = proc.add_driver("webapi", FastAPIDriver)
            http.get_service("http")["port"]
        """
        self._require_running("add a driver")
        self._drivers.reserve(ref)
        try:
            handle = self._backend.start_driver(ref, factory, args, kwargs)
        except BaseException:
            self._drivers.unreserve(ref)
            raise
        self._drivers.add(handle)
        if self._status in (ProcessStatus.STOPPING, ProcessStatus.STOPPED):  # stop() came while it started
            try:
                handle.stop()  # stop() stopped the drivers it saw; this one may have come after
            except RvaiError:
                pass
            raise self._stopped_while(f"driver {ref!r} started")
        return handle

    def get_driver(self, key: int | str) -> PipelineDriverProcess:
        """The attached driver with this pid or ref.

        Raises:
            DriverNotFoundError: none has it; the message lists the attached drivers.
        """
        return self._drivers.find(key)

    def list_drivers(self) -> list[PipelineDriverProcess]:
        """The attached drivers, running or not (a stopped or failed one stays listed until removed)."""
        return self._drivers.all()

    def remove_driver(self, key: int | str, timeout: float | None = 10.0) -> None:
        """Stop the driver with this pid or ref and detach it.

        Raises:
            DriverNotFoundError: no attached driver has that pid or ref.
        """
        driver = self._drivers.find(key)
        driver.stop(timeout)
        self._drivers.remove(driver)

    def _stop_drivers(self, timeout: float | None) -> float | None:
        """Stop every driver within ``timeout`` seconds in all; the seconds left (``None``: no limit).

        A driver that cannot be stopped is reported (its handle FAILED); stopping goes on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for driver in self._drivers.all():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                driver.stop(left)
            except RvaiError:  # recorded on the driver's handle; the inference process still stops
                pass
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def __enter__(self) -> InferenceProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pipeline={self.pipeline.name!r} status={self._status.name}>"
