"""The debug runtime: the executor runs in the calling process, on threads.

Best for notebooks and for stepping through a cell with a debugger.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from rvai_sdk.data import Parameters
from rvai_sdk.execution.executor import Executor
from rvai_sdk.runtime._backend import Runtime
from rvai_sdk.runtime._devices import resolve_devices
from rvai_sdk.runtime.inference import Inference
from rvai_sdk.runtime.process import InferenceProcess, ProcessStatus

__all__ = ["DebugRuntime", "DebugInferenceProcess"]


class DebugInferenceProcess(InferenceProcess):
    """An inference process that lives in the calling process (see :class:`InferenceProcess`)."""

    def __init__(self, inference: Inference) -> None:
        super().__init__(inference.pipeline)
        self.inference = inference
        devices = resolve_devices(inference.pipeline.order, inference.resources)
        self._executor = Executor(
            inference.pipeline,
            parameters=inference.parameters,
            models={ref: str(path) for ref, path in inference.models.items()},
            devices=devices,
            batching=inference.batching,
            state_ttl=inference.state_ttl,
            max_states=inference.max_states,
        )

    def _start(self) -> None:
        try:
            self._executor.start()
        except BaseException as exc:
            self._transition(ProcessStatus.FAILED, failure=str(exc))
            raise
        self._transition(ProcessStatus.RUNNING)

    def _predict(self, inputs: dict[str, Any], sid: str | None) -> Future[dict[str, Any]]:
        return self._executor.submit(inputs, sid)

    def get_parameters(self) -> dict[str, Parameters]:
        return self._executor.get_parameters()

    def set_parameters(self, parameters: Mapping[str, Any]) -> None:
        self._require_running("set parameters")
        self._executor.set_parameters(parameters)

    def drop_state(self, sid: str) -> None:
        self._executor.drop_state(sid)

    def get_state(self, sid: str) -> dict[str, Any]:
        return self._executor.get_state(sid)

    def sids(self) -> list[str]:
        return self._executor.sids()

    def stats(self) -> dict[str, Any]:
        return self._executor.stats()

    def stop(self, timeout: float | None = 10.0) -> None:
        if self._status in (ProcessStatus.STOPPED, ProcessStatus.STOPPING):
            return
        self._transition(ProcessStatus.STOPPING)
        try:
            self._executor.stop(timeout)
        finally:
            self._status = ProcessStatus.STOPPED


class DebugRuntime(Runtime):
    """Runs inference processes in the calling process; made by ``init("debug")``."""

    name = "debug"

    def _start_inference(self, inference: Inference) -> InferenceProcess:
        process = DebugInferenceProcess(inference)
        process._start()
        return process


def create(**options: Any) -> Runtime:
    """Make the debug runtime; it takes no options."""
    if options:
        from rvai_sdk.exc import ParameterError

        raise ParameterError(f"init('debug') takes no options, got {', '.join(sorted(options))}")
    return DebugRuntime()
