"""The debug runtime: the executor runs in the calling process, on threads.

Best for notebooks and for stepping through a cell with a debugger.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

from rvai_sdk.drivers.driver import DriverParameters, PipelineDriver
from rvai_sdk.exc import DriverError
from rvai_sdk.execution.executor import Executor
from rvai_sdk.runtime._backend import Runtime
from rvai_sdk.runtime.driver_process import (
    DriverFactory,
    PipelineDriverProcess,
    driver_resources,
    failure_text,
    final_counters,
    make_driver,
)
from rvai_sdk.runtime.inference import Inference, build_executor
from rvai_sdk.runtime.process import InferenceProcess, ProcessBackend, ProcessStatus
from rvai_sdk.transport.inproc import InProcessLink
from rvai_sdk.transport.link import Link

__all__ = ["DebugRuntime", "DebugBackend", "DebugDriverProcess"]

_driver_ids = itertools.count(1)


class DebugBackend(ProcessBackend):
    """The executor runs on threads of this process; drivers on threads too (see :class:`ProcessBackend`)."""

    def __init__(self, inference: Inference) -> None:
        self.inference = inference
        self._executor: Executor | None = None

    def launch(self, parameters: Mapping[str, Any]) -> Link:
        executor = build_executor(
            self.inference, parameters=parameters, models=self.process.get_models(), on_broken=self._broken
        )
        executor.start()
        self._executor = executor
        return InProcessLink(executor, self.inference.pipeline.name)

    def _broken(self, reason: str) -> None:
        # The executor cannot serve any more (a worker thread died): FAILED, never a silent hang.
        self.process._lost(f"the executor failed: {reason}; call proc.restart() to start a fresh one")

    def shutdown(self, timeout: float | None) -> None:
        if self._executor is not None:
            self._executor.stop(timeout)

    def start_driver(
        self, ref: str, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PipelineDriverProcess:
        handle = DebugDriverProcess(ref, make_driver(ref, factory, args, kwargs), self.process)
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
        self._transition(ProcessStatus.RUNNING)
        self._thread.start()

    def _run(self, resources: Any) -> None:
        try:
            self.driver.run(self._process.restricted(), resources)
        except BaseException as exc:
            self.final_stats = final_counters(self.driver)
            self._fail(failure_text(self.ref, self.driver, exc))
        else:
            self.final_stats = final_counters(self.driver)
            self._transition(ProcessStatus.STOPPED, when=(ProcessStatus.RUNNING,))

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._transition(ProcessStatus.STOPPING, when=(ProcessStatus.RUNNING,))
        self.driver.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._fail(
                    f"driver {self.ref!r} ({type(self.driver).__name__}) did not return from run() within "
                    f"{timeout} s of stop(); its thread is left running (threads cannot be killed)"
                )
                raise DriverError(self.failure or "")
        self._transition(ProcessStatus.STOPPED, when=(ProcessStatus.STOPPING,))

    def get_parameters(self) -> DriverParameters:
        self._require_running("get parameters")
        return self.driver.get_parameters()

    def set_parameters(self, parameters: DriverParameters | dict[str, Any]) -> None:
        self._require_running("set parameters")
        self.driver.set_parameters(parameters)

    def _live_stats(self) -> dict[str, Any]:
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
        return super()._start_inference(inference)

    def _backend(self, inference: Inference) -> ProcessBackend:
        return DebugBackend(inference)


def create(**options: Any) -> Runtime:
    """Make the debug runtime; it takes no options."""
    if options:
        from rvai_sdk.exc import ParameterError

        raise ParameterError(f"init('debug') takes no options, got {', '.join(sorted(options))}")
    return DebugRuntime()
