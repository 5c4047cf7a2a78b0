"""Handles on inference processes, with an explicit state machine."""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from rvai_sdk.data import Parameters
from rvai_sdk.exc import InputValidationError, ProcessStateError
from rvai_sdk.pipeline.graph import Pipeline

__all__ = ["ProcessStatus", "InferenceProcess"]


class ProcessStatus(enum.Enum):
    """The life cycle of a process handle.

    Allowed transitions: STARTING → RUNNING | FAILED; RUNNING → STOPPING | FAILED;
    STOPPING → STOPPED; FAILED → STOPPED (after ``stop()``).
    """

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


_TRANSITIONS = {
    ProcessStatus.STARTING: {ProcessStatus.RUNNING, ProcessStatus.FAILED, ProcessStatus.STOPPING},
    ProcessStatus.RUNNING: {ProcessStatus.STOPPING, ProcessStatus.FAILED},
    ProcessStatus.STOPPING: {ProcessStatus.STOPPED},
    ProcessStatus.FAILED: {ProcessStatus.STOPPING, ProcessStatus.STOPPED},
    ProcessStatus.STOPPED: set(),
}


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

    def predict(self, inputs: Mapping[str, Any], sid: str | None = None) -> Future[dict[str, Any]]:
        """Run the pipeline on one request.

        Args:
            inputs: pipeline input ref → value; plain values are coerced losslessly (``1`` → ``Integer(1)``).
            sid: the state id of the stream; requests of one sid see each other's cell state,
                in order. ``None`` runs with fresh state that is not kept.

        Returns:
            A future resolving to a dict of output ref → typed value.

        Raises:
            InputValidationError: a missing, unknown or wrongly typed input (raised here, not in the future).
            ProcessStateError: the process is not running.

        Example::

            proc.predict({"input": 1}, sid="camera-1").result()  # {'output': Integer(2)}
        """
        self._require_running("predict")
        if sid is not None and not isinstance(sid, str):
            raise InputValidationError(f"sid must be a str or None, got {type(sid).__name__} {sid!r}", field="sid")
        return self._predict(self.pipeline.validate_inputs(inputs), sid)

    @abc.abstractmethod
    def _predict(self, inputs: dict[str, Any], sid: str | None) -> Future[dict[str, Any]]:
        """Submit validated inputs."""

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
        """Stop taking requests, finish those in flight for up to ``timeout`` seconds, fail the rest. Idempotent."""

    def __enter__(self) -> InferenceProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pipeline={self.pipeline.name!r} status={self._status.name}>"
