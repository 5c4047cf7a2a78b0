"""The small interface every runtime implements: a :class:`Runtime` makes a :class:`ProcessBackend` per process.

The handle (:class:`~rvai_sdk.runtime.process.InferenceProcess`) is the same for every
runtime; a runtime only says how to launch, watch, stop and restart a process and
where drivers run (its backend).
"""

from __future__ import annotations

import abc
import threading
from types import TracebackType

from rvai_sdk.runtime.inference import Inference
from rvai_sdk.runtime.process import InferenceProcess, ProcessBackend, ProcessStatus

__all__ = ["Runtime", "ProcessBackend"]


class Runtime(abc.ABC):
    """A place to run inference processes: made by :func:`rvai_sdk.runtime.init`.

    ``start_inference`` returns a running :class:`InferenceProcess`; ``stop`` stops
    every process it started. Use it as a context manager to stop on exit.
    """

    name: str = ""

    def __init__(self) -> None:
        self._processes: list[InferenceProcess] = []
        self._lock = threading.Lock()
        self._stopped = False

    def start_inference(self, inference: Inference) -> InferenceProcess:
        """Start an inference process for ``inference`` and return it once it is ready.

        ``load_model`` of every cell has run when this returns.

        Raises:
            ProcessStateError: the runtime was stopped.
            CellError: a cell's ``load_model`` failed.
            ProcessError: the process could not start (e.g. a GPU was asked for and none is present).
        """
        from rvai_sdk.exc import ParameterError, ProcessStateError

        if self._stopped:
            raise ProcessStateError(f"the {self.name!r} runtime is stopped; call init({self.name!r}) again", state="STOPPED")
        if not isinstance(inference, Inference):
            raise ParameterError(
                f"start_inference() takes an Inference(pipeline=...), got {type(inference).__name__}"
            )
        process = self._start_inference(inference)
        with self._lock:
            self._processes.append(process)
        return process

    @abc.abstractmethod
    def _backend(self, inference: Inference) -> ProcessBackend:
        """A backend for one new process (cheap: nothing starts until ``launch``)."""

    def _handle(self, inference: Inference, backend: ProcessBackend) -> InferenceProcess:
        """The handle for a new process (a runtime may return a subclass with more methods)."""
        return InferenceProcess(inference, backend)

    def _start_inference(self, inference: Inference) -> InferenceProcess:
        """Start and return a RUNNING process (with its supervisor when ``Inference(supervise=True)``)."""
        backend = self._backend(inference)
        process = self._handle(inference, backend)
        try:
            process._start()
        except BaseException:
            backend.release()
            raise
        if inference.supervise and inference.stuck_after is not None:
            process._start_supervisor(inference.stuck_after)
        return process

    def list_inferences(self) -> list[InferenceProcess]:
        """The processes this runtime started that are not stopped."""
        with self._lock:
            return [p for p in self._processes if p.status is not ProcessStatus.STOPPED]

    def stop(self) -> None:
        """Stop every process this runtime started; idempotent."""
        with self._lock:
            processes, self._processes = self._processes, []
            self._stopped = True
        for process in processes:
            process.stop()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} processes={len(self.list_inferences())}>"
