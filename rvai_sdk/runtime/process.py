"""Handles on inference processes, with an explicit state machine."""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from rvai_sdk.data import Parameters
from rvai_sdk.exc import ProcessStateError, RvaiError
from rvai_sdk.pipeline.graph import Pipeline
from rvai_sdk.runtime.driver_process import DriverFactory, DriverRegistry, PipelineDriverProcess
from rvai_sdk.runtime.restricted import (
    DEFAULT_MAX_SID_LENGTH,
    RestrictedInferenceProcess,
    check_request,
    check_timeout,
)
from rvai_sdk.runtime.status import TRANSITIONS as _TRANSITIONS
from rvai_sdk.runtime.status import ProcessStatus

__all__ = ["ProcessStatus", "InferenceProcess"]


class InferenceProcess(abc.ABC):
    """A running pipeline that takes requests; made by ``Runtime.start_inference``.

    Every runtime returns a subclass with the same behaviour: ``predict`` returns a
    :class:`concurrent.futures.Future` of output ref → typed value; bad inputs raise
    :class:`~rvai_sdk.exc.InputValidationError` at once; a failing cell fails only
    that request with a :class:`~rvai_sdk.exc.CellError`. Use it as a context
    manager to stop it on exit.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._status = ProcessStatus.STARTING
        self.failure: str | None = None
        self._drivers = DriverRegistry()
        self.max_sid_length = DEFAULT_MAX_SID_LENGTH
        self.request_timeout: float | None = None
        self.supervisor_restarts: list[str] = []
        """Why the opt-in supervisor (``Inference(supervise=True)``) restarted the process, oldest first."""

    @property
    def status(self) -> ProcessStatus:
        """The current :class:`ProcessStatus`."""
        return self._status

    def _transition(self, new: ProcessStatus, failure: str | None = None) -> None:
        if new not in _TRANSITIONS[self._status]:
            raise ProcessStateError(
                f"inference process of pipeline {self.pipeline.name!r} cannot go from {self._status.name} to {new.name}",
                state=self._status.name,
            )
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

        Example::

            proc.predict({"input": 1}, sid="camera-1", timeout=2.0).result()  # {'output': Integer(2)}
        """
        self._require_running("predict")
        check_timeout(timeout)
        checked = check_request(self.pipeline, inputs, sid, self.max_sid_length)
        return self._predict(checked, sid, self.request_timeout if timeout is None else timeout)

    @abc.abstractmethod
    def _predict(self, inputs: dict[str, Any], sid: str | None, timeout: float | None) -> Future[dict[str, Any]]:
        """Submit validated inputs with their deadline (seconds from now, or ``None``)."""

    def is_ready(self) -> bool:
        """Whether the process serves now: RUNNING, reachable, and no call stuck past ``stuck_after``.

        This is what drivers report as readiness (HTTP ``/ready``). A process with a stuck
        call stays RUNNING (requests with a deadline still fail promptly) but is not ready;
        ``stats()["stuck"]`` says which cell, sid and for how long.
        """
        return self._status is ProcessStatus.RUNNING and self._ready()

    def _ready(self) -> bool:
        """The backend's part of :meth:`is_ready` (the process answers and reports no stuck call)."""
        return True

    @abc.abstractmethod
    def get_parameters(self) -> dict[str, Parameters]:
        """Cell ref → a copy of that cell's current Parameters."""

    @abc.abstractmethod
    def set_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Change parameters for requests submitted from now on; see ``Executor.set_parameters``.

        Raises:
            ParameterError: an unknown ref or field, or a rejected value; nothing changes.
        """

    @abc.abstractmethod
    def drop_state(self, sid: str) -> None:
        """Forget the state kept for ``sid``.

        Raises:
            UnknownSidError: no state is kept for ``sid``.
        """

    @abc.abstractmethod
    def get_state(self, sid: str) -> dict[str, Any]:
        """A copy of ``sid``'s cell states: cell ref → State.

        Raises:
            UnknownSidError: no state is kept for ``sid``.
        """

    @abc.abstractmethod
    def sids(self) -> list[str]:
        """The sids whose state is kept."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: requests by outcome, live sids, per-cell calls, items, batch sizes and busy time."""

    @abc.abstractmethod
    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the drivers, then stop taking requests, finish those in flight for up to ``timeout`` seconds
        and fail the rest. Idempotent."""

    @abc.abstractmethod
    def restart(self, timeout: float | None = 10.0) -> None:
        """Replace the inference process by a fresh one (models loaded again, all sid state gone).

        Requests in flight fail with :class:`~rvai_sdk.exc.ProcessError`; attached drivers
        stay attached and send to the new process once it is ready. Use it after the
        process failed (``status`` is FAILED).

        Raises:
            ProcessStateError: the process was stopped.
            CellError: a ``load_model`` failed in the new process.
        """

    # -- the opt-in supervisor ------------------------------------------------------------

    def _start_supervisor(self, stuck_after: float) -> None:
        """Watch the process on a thread: restart it when it died or a call is stuck (``Inference(supervise=True)``)."""
        threading.Thread(
            target=self._supervise, args=(stuck_after,), name=f"rvai-supervisor-{self.pipeline.name}", daemon=True
        ).start()

    def _supervise(self, stuck_after: float) -> None:
        tick = threading.Event()
        interval = min(1.0, stuck_after / 4)
        backoff = interval
        while True:
            tick.wait(backoff)
            status = self._status
            if status in (ProcessStatus.STOPPING, ProcessStatus.STOPPED):
                return
            reason = None
            if status is ProcessStatus.FAILED:
                reason = f"the process failed ({self.failure})"
            elif status is ProcessStatus.RUNNING:
                try:
                    stuck = self.stats().get("stuck") or []
                except RvaiError:  # died or restarting meanwhile: looked at again next time
                    continue
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

    # -- drivers -------------------------------------------------------------------------

    def restricted(self) -> RestrictedInferenceProcess:
        """A :class:`RestrictedInferenceProcess` on this process, as drivers get it (in this process)."""
        return RestrictedInferenceProcess(
            self.pipeline,
            predict=self._predict_checked,
            is_ready=self.is_ready,
            stats=self.stats,
            max_sid_length=self.max_sid_length,
            request_timeout=self.request_timeout,
        )

    def _predict_checked(self, inputs: dict[str, Any], sid: str | None, timeout: float | None) -> Future[dict[str, Any]]:
        self._require_running("predict")
        return self._predict(inputs, sid, timeout)

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
            handle = self._start_driver(ref, factory, args, kwargs)
        except BaseException:
            self._drivers.unreserve(ref)
            raise
        self._drivers.add(handle)
        return handle

    @abc.abstractmethod
    def _start_driver(
        self, ref: str, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PipelineDriverProcess:
        """Start a driver and return its handle once it runs (or raise DriverError)."""

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
