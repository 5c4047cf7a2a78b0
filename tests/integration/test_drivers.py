"""The driver contract on every runtime: add, list, parameters, services, failures, remove and re-add."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from rvai_sdk.drivers import DriverParameters, PipelineDriver, service_record
from rvai_sdk.exc import DriverError, DriverNotFoundError, InputValidationError, ParameterError
from rvai_sdk.resources import DriverResources, DriverResourcesRequest
from rvai_sdk.runtime import Inference, PipelineDriverProcess, ProcessStatus, RestrictedInferenceProcess, Runtime
from rvai_sdk.types import Integer, String
from tests.conftest import Count, Remember, single

pytestmark = pytest.mark.timeout(90)


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds (bounded, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@dataclasses.dataclass
class CounterParameters(DriverParameters):
    sid: String = DriverParameters.field(default=String("drv"), description="the stream this driver feeds")
    requests: Integer = DriverParameters.field(default=Integer(3), description="requests to send")


class CountingDriver(PipelineDriver):
    """Sends ``requests`` requests for its sid, checks the state sequence, and reports through stats()."""

    parameters_class = CounterParameters

    def __init__(self, parameters: Any = None, *, label: str = "") -> None:
        super().__init__(parameters)
        self.label = label
        self.results: list[int] = []
        self.spec: list[str] = []
        self.changes = 0

    def resources_request(self) -> DriverResourcesRequest:
        return DriverResourcesRequest(ports=["http", "metrics"])

    def services(self, resources: DriverResources) -> list[dict[str, Any]]:
        return [service_record(name, port) for name, port in resources.ports.items()]

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        self.spec = [*inference.inputs, "->", *inference.outputs]
        params = self.get_parameters()
        assert isinstance(params, CounterParameters)
        for _ in range(int(params.requests)):
            self.results.append(int(inference.predict({"x": 0}, sid=str(params.sid)).result(timeout=30)["y"]))
        self.wait_stopped()

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        self.changes += 1

    def stats(self) -> dict[str, Any]:
        return {"results": list(self.results), "label": self.label, "spec": self.spec, "changes": self.changes}


class FailingDriver(PipelineDriver):
    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        inference.predict({"x": 1}).result(timeout=30)
        raise RuntimeError("camera unplugged")


class BadInputDriver(PipelineDriver):
    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        try:
            inference.predict({"x": "one"})
        except InputValidationError as exc:
            self.error = str(exc)
        self.wait_stopped()

    def stats(self) -> dict[str, Any]:
        return {"error": getattr(self, "error", None)}


def results_of(driver: PipelineDriverProcess, n: int) -> list[int]:
    wait_until(lambda: len(driver.stats()["results"]) >= n, what=f"driver {driver.ref} to get {n} results")
    results: list[int] = driver.stats()["results"]
    return results


def test_a_driver_feeds_the_process_and_publishes_its_services(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        driver = proc.add_driver("counter", CountingDriver, label="first")
        assert driver.status is ProcessStatus.RUNNING
        assert driver.is_alive()
        assert results_of(driver, 3) == [1, 2, 3]
        assert driver.stats()["label"] == "first"
        assert driver.stats()["spec"] == ["x", "->", "y"]
        http, metrics = driver.get_service("http"), driver.get_service("metrics")
        assert http["taggedAddresses"]["lan"]["port"] == http["port"] != metrics["port"]
        assert {s["name"] for s in driver.list_services()} == {"http", "metrics"}
        with pytest.raises(DriverError, match=r"driver 'counter' has no service 'grpc'; its services are: http, metrics"):
            driver.get_service("grpc")
        assert proc.predict({"x": 0}, sid="drv").result(timeout=10)["y"] == 4, "the driver's sid state lives in the process"


def test_a_stopped_drivers_stats_are_its_counters_as_its_run_ended(runtime: Runtime) -> None:
    """What a driver's stop finished or gave up is counted in stats() taken after it (they used to be unreadable
    once it stopped: a stream's summary then came from before the stop and missed what it lost)."""
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        driver = proc.add_driver("counter", CountingDriver, label="final")
        assert results_of(driver, 3) == [1, 2, 3]
        assert driver.final_stats is None  # running: stats() asks the driver
        proc.remove_driver("counter")
        assert driver.status is ProcessStatus.STOPPED
        final = driver.stats()
        assert final["results"] == [1, 2, 3] and final["label"] == "final"
        assert driver.final_stats == final
        with pytest.raises(DriverError, match="is STOPPED"):
            driver.get_parameters()  # only the counters outlive the driver
        failing = proc.add_driver("failing", FailingDriver)
        wait_until(lambda: failing.status is ProcessStatus.FAILED, what="the failing driver to fail")
        assert failing.stats() == {}, "a driver that failed reports the counters it had"


def test_drivers_are_listed_found_by_ref_or_pid_and_removed(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        a = proc.add_driver("a", CountingDriver, {"sid": "a"})
        b = proc.add_driver("b", CountingDriver, {"sid": "b"})
        assert {d.ref for d in proc.list_drivers()} == {"a", "b"}
        assert proc.get_driver("a") is a and proc.get_driver(b.pid) is b
        assert a.pid != b.pid
        with pytest.raises(DriverError, match="a driver with ref 'a' is already attached"):
            proc.add_driver("a", CountingDriver)
        proc.remove_driver(a.pid)
        assert a.status is ProcessStatus.STOPPED and not a.is_alive()
        assert [d.ref for d in proc.list_drivers()] == ["b"]
        with pytest.raises(DriverNotFoundError, match=r"no driver with pid 999999 is attached; attached drivers: 'b'"):
            proc.remove_driver(999999)
        with pytest.raises(DriverNotFoundError, match="no driver with ref 'a'"):
            proc.get_driver("a")
        again = proc.add_driver("a", CountingDriver, {"sid": "a"})
        assert results_of(again, 3) == [4, 5, 6], "re-added driver continues the sid's state"
        proc.remove_driver("b")
        again.stop()
        again.stop()  # idempotent
        assert again.status is ProcessStatus.STOPPED


def test_driver_parameters_are_delivered_to_the_running_driver(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        driver = proc.add_driver("d", CountingDriver, CounterParameters(requests=Integer(1)))
        params = driver.get_parameters()
        assert isinstance(params, CounterParameters) and params.requests == 1
        driver.set_parameters({"sid": "other"})
        assert driver.get_parameters().sid == "other"  # type: ignore[attr-defined]
        assert driver.stats()["changes"] == 1
        with pytest.raises(ParameterError, match="CounterParameters has no parameter 'nope'"):
            driver.set_parameters({"nope": 1})
        with pytest.raises(ParameterError, match=r"CounterParameters\.requests: expected Integer"):
            driver.set_parameters({"requests": "many"})
        assert driver.get_parameters().sid == "other"  # type: ignore[attr-defined]


def test_a_local_function_can_be_the_factory(runtime: Runtime) -> None:
    offset = 40

    def make_driver(label: str) -> PipelineDriver:
        return CountingDriver({"requests": 2, "sid": "f"}, label=f"{label}-{offset + 2}")

    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        driver = proc.add_driver("made", make_driver, "by-function")
        assert results_of(driver, 2) == [1, 2]
        assert driver.stats()["label"] == "by-function-42"


def test_a_driver_raising_in_run_is_failed_and_the_process_keeps_serving(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        healthy = proc.add_driver("healthy", CountingDriver)
        broken = proc.add_driver("broken", FailingDriver)
        wait_until(lambda: broken.status is ProcessStatus.FAILED, what="the failing driver to be FAILED")
        assert broken.failure is not None
        assert "driver 'broken' (FailingDriver) failed: RuntimeError: camera unplugged" in broken.failure
        assert "Traceback" in broken.failure
        with pytest.raises(DriverError, match="driver 'broken' is FAILED: driver 'broken'"):
            broken.set_parameters({})
        assert results_of(healthy, 3) == [1, 2, 3]
        assert proc.status is ProcessStatus.RUNNING
        assert proc.predict({"x": 0}, sid="z").result(timeout=10) == {"y": 1}
        replacement = proc.add_driver("broken", CountingDriver, {"sid": "r"})  # a failed ref may be reused
        assert results_of(replacement, 3) == [1, 2, 3]


def test_a_factory_that_does_not_make_a_driver_is_refused_naming_the_ref(runtime: Runtime) -> None:
    def not_a_driver() -> object:
        return object()

    def raising() -> PipelineDriver:
        raise ValueError("no camera configured")

    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        with pytest.raises(DriverError, match="driver 'odd'.*returned object, not a PipelineDriver"):
            proc.add_driver("odd", not_a_driver)
        with pytest.raises(DriverError, match="driver 'cam'.*ValueError: no camera configured"):
            proc.add_driver("cam", raising)
        assert proc.predict({"x": 0}).result(timeout=10) == {"y": 1}


def test_bad_inputs_from_a_driver_raise_input_validation_error_in_the_driver(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        driver = proc.add_driver("bad", BadInputDriver)
        wait_until(lambda: driver.stats()["error"] is not None, what="the driver to see the error")
        assert "input 'x': expected Integer, got str" in driver.stats()["error"]


class Hammer(PipelineDriver):
    """Sends ``rounds`` requests for each of its sids with many in flight; checks each sid's exact history."""

    def __init__(self, index: int, sids: int, rounds: int) -> None:
        super().__init__()
        self.index, self.nsids, self.rounds = index, sids, rounds
        self.done = threading.Event()
        self.errors: list[str] = []

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        sids = [f"d{self.index}-s{i}" for i in range(self.nsids)]
        futures = [
            (sid, r, inference.predict({"x": 1000 * self.index + r}, sid=sid)) for r in range(self.rounds) for sid in sids
        ]
        for sid, r, future in futures:
            seen = [int(v) for v in future.result(timeout=60)["seen"]]
            expected = [1000 * self.index + k for k in range(r + 1)]
            if seen != expected:
                self.errors.append(f"{sid} round {r}: {seen} != {expected}")
        self.done.set()
        self.wait_stopped()

    def stats(self) -> dict[str, Any]:
        return {"done": self.done.is_set(), "errors": self.errors[:5]}


def test_eight_drivers_hammering_one_process_keep_every_sid_sequence_exact(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Remember))) as proc:
        drivers = [proc.add_driver(f"h{i}", Hammer, i, 4, 25) for i in range(8)]
        for d in drivers:
            wait_until(lambda d=d: d.stats()["done"], timeout=60, what=f"driver {d.ref} to finish")
            assert d.stats()["errors"] == []
        assert len(proc.sids()) == 32
        assert proc.stats()["requests"]["succeeded"] == 8 * 4 * 25


def test_stopping_the_process_stops_its_drivers_first(runtime: Runtime) -> None:
    proc = runtime.start_inference(Inference(pipeline=single(Count)))
    driver = proc.add_driver("d", CountingDriver)
    results_of(driver, 3)
    proc.stop()
    assert driver.status is ProcessStatus.STOPPED
    assert not driver.is_alive()
    assert proc.status is ProcessStatus.STOPPED
