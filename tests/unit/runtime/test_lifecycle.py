"""The one process handle over a backend: every status change through the table, restart and stop in one place.

The backend here is a real one in all but name: it builds a real executor with
``build_executor`` and serves it through a real ``InProcessLink``; it only counts
what the handle asks of it, and can be told to fail its next launch.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.exc import CellError, ProcessError, ProcessStateError
from rvai_sdk.execution.executor import Executor
from rvai_sdk.runtime import Inference, InferenceProcess, ProcessStatus
from rvai_sdk.runtime.driver_process import DriverFactory, PipelineDriverProcess
from rvai_sdk.runtime.inference import build_executor
from rvai_sdk.runtime.process import ProcessBackend
from rvai_sdk.transport.inproc import InProcessLink
from rvai_sdk.transport.link import Link
from tests.conftest import FailNegative, Scale, single

RUNTIME = Path(__file__).resolve().parents[3] / "rvai_sdk" / "runtime"


class CountingBackend(ProcessBackend):
    def __init__(self, inference: Inference) -> None:
        self.inference = inference
        self.calls: list[str] = []
        self.launched_with: list[dict[str, Any]] = []
        self.fail_next_launch = False
        self.executor: Executor | None = None

    def launch(self, parameters: Mapping[str, Any]) -> Link:
        self.calls.append("launch")
        self.launched_with.append(dict(parameters))
        if self.fail_next_launch:
            self.fail_next_launch = False
            raise ProcessError("the test refused this launch\nsecond line")
        self.executor = build_executor(self.inference, parameters=parameters)
        self.executor.start()
        return InProcessLink(self.executor, self.inference.pipeline.name)

    def watch(self) -> None:
        self.calls.append("watch")

    def shutdown(self, timeout: float | None) -> None:
        self.calls.append("shutdown")
        if self.executor is not None:
            self.executor.stop(timeout)

    def release(self) -> None:
        self.calls.append("release")

    def start_driver(
        self, ref: str, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PipelineDriverProcess:
        raise NotImplementedError


def _started() -> tuple[InferenceProcess, CountingBackend]:
    inference = Inference(pipeline=single(Scale), parameters={"c0": {"factor": 2}})
    backend = CountingBackend(inference)
    process = InferenceProcess(inference, backend)
    process._start()
    return process, backend


def test_a_started_process_runs_and_serves_through_its_link() -> None:
    process, backend = _started()
    assert process.status is ProcessStatus.RUNNING and backend.calls == ["launch", "watch"]
    assert float(process.predict({"x": 3}).result(timeout=10)["value"]) == 6.0
    assert process.is_ready()
    process.stop()
    assert process.status is ProcessStatus.STOPPED and backend.calls[-2:] == ["shutdown", "release"]


def test_a_lost_process_fails_and_restarts_with_the_parameters_last_set() -> None:
    process, backend = _started()
    process.set_parameters({"c0": {"factor": 5}})
    process._lost("the test killed it; call proc.restart()")
    assert process.status is ProcessStatus.FAILED and process.failure == "the test killed it; call proc.restart()"
    with pytest.raises(ProcessStateError, match="cannot predict: .* is FAILED \\(the test killed it"):
        process.predict({"x": 1})
    process._lost("a second report changes nothing")
    assert process.failure == "the test killed it; call proc.restart()"
    process.restart()
    assert process.status is ProcessStatus.RUNNING
    assert int(backend.launched_with[-1]["c0"].factor) == 5
    assert float(process.predict({"x": 2}).result(timeout=10)["value"]) == 10.0
    process.stop()
    with pytest.raises(ProcessStateError, match="cannot restart: .* is STOPPED"):
        process.restart()


def test_a_failed_restart_leaves_the_process_failed_with_the_first_line_of_the_reason() -> None:
    process, backend = _started()
    backend.fail_next_launch = True
    with pytest.raises(ProcessError, match="refused this launch"):
        process.restart()
    assert process.status is ProcessStatus.FAILED and process.failure == "the test refused this launch"
    process.restart()
    assert process.status is ProcessStatus.RUNNING
    process.stop()
    process.stop()  # idempotent
    assert backend.calls.count("release") == 1


def test_stop_from_many_threads_at_once_stops_once() -> None:
    process, backend = _started()
    threads = [threading.Thread(target=process.stop) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert process.status is ProcessStatus.STOPPED
    assert backend.calls.count("shutdown") == 1 and backend.calls.count("release") == 1


def test_a_cell_error_crosses_the_handle_as_itself_and_the_process_goes_on() -> None:
    inference = Inference(pipeline=single(FailNegative))
    process = InferenceProcess(inference, CountingBackend(inference))
    process._start()
    try:
        with pytest.raises(CellError, match="negative input -1") as caught:
            process.predict({"x": -1}, sid="s").result(timeout=10)
        assert caught.value.ref == "c0"
        assert int(process.predict({"x": 4}, sid="s").result(timeout=10)["y"]) == 4
    finally:
        process.stop()


def test_no_module_of_the_runtime_writes_a_status_outside_its_transition() -> None:
    offenders = []
    for path in sorted(RUNTIME.glob("*.py")):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr == "_status" and func.name not in ("__init__", "_transition"):
                        offenders.append(f"{path.name}:{node.lineno} in {func.name}()")
    assert not offenders, "status written outside _transition: " + ", ".join(offenders)


def test_the_port_validates_once_and_submit_takes_inputs_validated_already() -> None:
    from rvai_sdk.drivers import RestrictedInferenceProcess as FromDrivers
    from rvai_sdk.exc import InputValidationError
    from rvai_sdk.runtime import RestrictedInferenceProcess as FromRuntime

    assert FromDrivers is FromRuntime
    process, _ = _started()
    try:
        port = process.restricted()
        checked = port.pipeline.validate_inputs({"x": 3})
        assert float(port.submit(checked, sid="s").result(timeout=10)["value"]) == 6.0
        with pytest.raises(InputValidationError, match="sid is 300 characters long"):
            port.submit(checked, sid="s" * 300)
        with pytest.raises(InputValidationError, match="timeout must be"):
            port.submit(checked, timeout=-1)
        with pytest.raises(InputValidationError, match="'x'"):
            port.predict({})
        process._lost("gone")
        with pytest.raises(ProcessStateError, match="cannot predict"):
            port.submit(checked)
        assert not port.is_ready()
    finally:
        process.stop()
