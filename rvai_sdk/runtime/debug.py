"""The debug runtime: the executor runs in the calling process, on threads.

Best for notebooks and for stepping through a cell with a debugger.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from rvai_sdk.data import Parameters
from rvai_sdk.execution.executor import Executor
from rvai_sdk.runtime._backend import Runtime
from rvai_sdk.drivers.driver import DriverParameters, PipelineDriver
from rvai_sdk.exc import DriverError, ProcessStateError
from rvai_sdk.runtime._devices import resolve_devices
from rvai_sdk.runtime.driver_process import (
    DriverFactory,
    PipelineDriverProcess,
    driver_resources,
    failure_text,
    make_driver,
)
from rvai_sdk.runtime.inference import Inference
from rvai_sdk.runtime.process import InferenceProcess, ProcessStatus

__all__ = ["DebugRuntime", "DebugInferenceProcess", "DebugDriverProcess"]

_driver_ids = itertools.count(1)


class DebugInferenceProcess(InferenceProcess):
    """An inference process that lives in the calling process (see :class:`InferenceProcess`)."""

    def __init__(self, inference: Inference) -> None:
        super().__init__(inference.pipeline)
        self.inference = inference
        self.max_sid_length = inference.max_sid_length
        self.request_timeout = inference.request_timeout
        self._devices = resolve_devices(inference.pipeline.order, inference.resources)
        self._executor = self._make_executor(inference.parameters)

    def _make_executor(self, parameters: Mapping[str, Any]) -> Executor:
        inference = self.inference
        return Executor(
            inference.pipeline,
            parameters=parameters,
            models={ref: str(path) for ref, path in inference.models.items()},
            devices=self._devices,
            batching=inference.batching,
            state_ttl=inference.state_ttl,
            max_states=inference.max_states,
            stuck_after=inference.stuck_after,
            on_broken=self._broken,
        )

    def _broken(self, reason: str) -> None:
        # The executor cannot serve any more (a worker thread died): FAILED, never a silent hang.
        if self._status is ProcessStatus.RUNNING:
            self._transition(
                ProcessStatus.FAILED,
                failure=f"the executor failed: {reason}; call proc.restart() to start a fresh one",
            )

    def _ready(self) -> bool:
        return self._executor.ready()

    def _start(self) -> None:
        try:
            self._executor.start()
        except BaseException as exc:
            self._transition(ProcessStatus.FAILED, failure=str(exc))
            raise
        self._transition(ProcessStatus.RUNNING)

    def _predict(self, inputs: dict[str, Any], sid: str | None, timeout: float | None) -> Future[dict[str, Any]]:
        return self._executor.submit(inputs, sid, timeout)

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
            self._executor.stop(self._stop_drivers(timeout))
        finally:
            self._status = ProcessStatus.STOPPED

    def restart(self, timeout: float | None = 10.0) -> None:
        if self._status in (ProcessStatus.STOPPED, ProcessStatus.STOPPING):
            raise ProcessStateError(
                f"cannot restart: the inference process of pipeline {self.pipeline.name!r} is {self._status.name}; "
                "start a new one with rt.start_inference(...)",
                state=self._status.name,
            )
        parameters = self._executor.get_parameters()
        self._transition(ProcessStatus.STARTING)
        self._executor.stop(timeout)
        self._executor = self._make_executor(parameters)
        self._start()

    def _start_driver(
        self, ref: str, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PipelineDriverProcess:
        handle = DebugDriverProcess(ref, make_driver(ref, factory, args, kwargs), self)
        handle._launch()
        return handle


class DebugDriverProcess(PipelineDriverProcess):
    """A driver running on a thread of the calling process (the debug runtime)."""

    def __init__(self, ref: str, driver: PipelineDriver, process: InferenceProcess) -> None:
        super().__init__(ref)
        self.pid = next(_driver_ids)
        self.driver = driver
        self._process = process
        self._thread: threading.Thread | None = None

    def _launch(self) -> None:
        resources = driver_resources(self.driver.resources_request(), self.ref)
        self._services = list(self.driver.services(resources))
        self._thread = threading.Thread(
            target=self._run, args=(resources,), name=f"rvai-driver-{self.ref}", daemon=True
        )
        self._status = ProcessStatus.RUNNING
        self._thread.start()

    def _run(self, resources: Any) -> None:
        try:
            self.driver.run(self._process.restricted(), resources)
        except BaseException as exc:
            self._fail(failure_text(self.ref, self.driver, exc))
        else:
            if self._status is ProcessStatus.RUNNING:
                self._status = ProcessStatus.STOPPED

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = 10.0) -> None:
        if self._status is ProcessStatus.RUNNING:
            self._status = ProcessStatus.STOPPING
        self.driver.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._fail(
                    f"driver {self.ref!r} ({type(self.driver).__name__}) did not return from run() within "
                    f"{timeout} s of stop(); its thread is left running (threads cannot be killed)"
                )
                raise DriverError(self.failure or "")
        if self._status is ProcessStatus.STOPPING:
            self._status = ProcessStatus.STOPPED

    def get_parameters(self) -> DriverParameters:
        self._require_running("get parameters")
        return self.driver.get_parameters()

    def set_parameters(self, parameters: DriverParameters | dict[str, Any]) -> None:
        self._require_running("set parameters")
        self.driver.set_parameters(parameters)

    def stats(self) -> dict[str, Any]:
        self._require_running("get stats")
        return self.driver.stats()


class DebugRuntime(Runtime):
    """Runs inference processes in the calling process; made by ``init("debug")``."""

    name = "debug"

    def _start_inference(self, inference: Inference) -> InferenceProcess:
        if inference.supervise:
            from rvai_sdk.exc import ParameterError

            raise ParameterError(
                "Inference(supervise=True) restarts a stuck or dead inference process, which the debug runtime "
                "cannot do (its cells run on threads of this process, and a thread cannot be killed); use "
                "init('local') or init('ray'), or leave supervise off",
                field="supervise",
            )
        process = DebugInferenceProcess(inference)
        process._start()
        return process


def create(**options: Any) -> Runtime:
    """Make the debug runtime; it takes no options."""
    if options:
        from rvai_sdk.exc import ParameterError

        raise ParameterError(f"init('debug') takes no options, got {', '.join(sorted(options))}")
    return DebugRuntime()
