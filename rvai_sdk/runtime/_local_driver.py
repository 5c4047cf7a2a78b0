"""The driver side of the local runtime: each driver runs in a child process of its own.

:class:`LocalDriverProcess` is the handle this process keeps for a driver's child (re-exported by
:mod:`rvai_sdk.runtime.local`, whose :class:`~rvai_sdk.runtime.local.LocalBackend` starts it);
``_driver_main`` is what that child runs: it builds the driver from its factory, asks the
parent for its resources, reaches the inference process straight over a
:class:`~rvai_sdk.transport.client.UnixLink` (through a
:class:`~rvai_sdk.drivers.port.RestrictedInferenceProcess`), runs the driver and answers the
handle's control calls (``stop``, ``get_parameters``, ``set_parameters``, ``stats``) over its pipe.
How the child is spawned is :mod:`rvai_sdk.runtime._local_spawn`.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from typing import Any

from rvai_sdk._logging import ChildLogConfig, child_log_config
from rvai_sdk.drivers.driver import DriverParameters
from rvai_sdk.drivers.port import RestrictedInferenceProcess
from rvai_sdk.exc import DriverError
from rvai_sdk.execution.gc_tuning import tune_for_serving
from rvai_sdk.pipeline.graph import Pipeline
from rvai_sdk.resources import DriverResources
from rvai_sdk.runtime._local_spawn import child_setup, exit_text, spawn_context, start_child
from rvai_sdk.runtime.driver_process import (
    PipelineDriverProcess,
    driver_resources,
    failure_text,
    final_counters,
    make_driver,
)
from rvai_sdk.runtime.status import ProcessStatus
from rvai_sdk.transport.client import UnixLink
from rvai_sdk.transport.shm import SlotPool, shm_supported

__all__ = ["LocalDriverProcess"]


# -- in the child ---------------------------------------------------------------------------------


def _driver_main(
    ref: str,
    blob: bytes,
    pipeline_blob: bytes,
    address: str,
    authkey: bytes,
    conn: Any,
    env: dict[str, str],
    limits: tuple[int, float | None],
    log: ChildLogConfig | None = None,
) -> None:
    child_setup(env, log)
    import dill

    send_lock = threading.Lock()

    def send(message: Any) -> None:
        with send_lock:
            try:
                conn.send(message)
            except OSError:
                pass

    try:
        factory, args, kwargs = dill.loads(blob)
        pipeline: Pipeline = dill.loads(pipeline_blob)
        driver = make_driver(ref, factory, args, kwargs)
        send(("request", driver.resources_request()))
        resources: DriverResources = conn.recv()[1]
        services = list(driver.services(resources))
    except BaseException as exc:
        send(("error", f"driver {ref!r} could not start: {type(exc).__name__}: {exc}"))
        os._exit(1)
    client = UnixLink(address, authkey, name=pipeline.name, pool=SlotPool() if shm_supported() else None)
    restricted = RestrictedInferenceProcess(pipeline, client, max_sid_length=limits[0], request_timeout=limits[1])
    tune_for_serving()  # this process only hosts the driver: its collector set for many requests in flight

    def control() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                driver.stop()
                return
            _, call_id, method, args = message
            try:
                if method == "stop":
                    driver.stop()
                    value: Any = None
                elif method in ("get_parameters", "set_parameters", "stats"):
                    value = getattr(driver, method)(*args)
                else:
                    raise DriverError(f"unknown driver call {method!r}")
            except Exception as exc:
                send(("reply", call_id, False, exc))
            else:
                send(("reply", call_id, True, value))
            if method == "stop":
                return

    send(("running", services))
    threading.Thread(target=control, name="rvai-driver-control", daemon=True).start()
    try:
        driver.run(restricted, resources)
    except BaseException as exc:
        send(("failed", failure_text(ref, driver, exc), final_counters(driver)))
        client.close()
        os._exit(1)
    send(("finished", final_counters(driver)))
    client.close()
    os._exit(0)


# -- in the parent -------------------------------------------------------------------------------


class LocalDriverProcess(PipelineDriverProcess):
    """A driver running in its own child process (the local runtime)."""

    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self._process: Any = None
        self._conn: Any = None
        self._calls: dict[int, Future[Any]] = {}
        self._exited = threading.Event()
        self._call_ids = 0
        self._lock = threading.Lock()

    def _launch(
        self,
        blob: bytes,
        pipeline_blob: bytes,
        address: str,
        authkey: bytes,
        env: dict[str, str],
        limits: tuple[int, float | None],
    ) -> None:
        ctx = spawn_context()
        parent_conn, child_conn = ctx.Pipe()
        process = ctx.Process(
            target=_driver_main,
            args=(
                self.ref, blob, pipeline_blob, address, authkey, child_conn, env, limits,
                child_log_config(f"driver[{self.ref}]"),
            ),
            name=f"rvai-driver-{self.ref}",
            daemon=True,
        )
        start_child(process)
        child_conn.close()
        self._process, self._conn = process, parent_conn
        self.pid = int(process.pid)
        message = self._expect("request")
        parent_conn.send(("resources", driver_resources(message[1], self.ref)))
        message = self._expect("running")
        self._services = list(message[1])
        self._transition(ProcessStatus.RUNNING)
        threading.Thread(target=self._monitor, name=f"rvai-driver-watch-{self.ref}", daemon=True).start()

    def _expect(self, kind: str, timeout: float = 120.0) -> Any:
        from multiprocess.connection import wait

        conn, process = self._conn, self._process
        ready = wait([conn, process.sentinel], timeout=timeout)
        message: Any = None
        if conn in ready:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
        if message is not None and message[0] == kind:
            return message
        if message is not None and message[0] == "error":
            text = str(message[1])
        else:
            if process.is_alive():
                process.kill()
            process.join(5.0)
            text = f"driver {self.ref!r} (pid {process.pid}) {exit_text(process.exitcode)} while starting"
        process.join(5.0)
        self._fail(text)
        raise DriverError(text)

    def _monitor(self) -> None:
        conn, process = self._conn, self._process
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a message that does not unpickle here: lost, the watch goes on
                continue
            kind = message[0]
            if kind == "reply":
                future = self._calls.pop(message[1], None)
                if future is not None:
                    if message[2]:
                        future.set_result(message[3])
                    else:
                        future.set_exception(message[3])
            elif kind == "failed":
                self.final_stats = message[2]
                self._fail(message[1])
            elif kind == "finished":
                self.final_stats = message[1]
                self._transition(ProcessStatus.STOPPED, when=(ProcessStatus.RUNNING,))
        process.join()
        self._exited.set()
        if self._status is ProcessStatus.RUNNING:
            self._fail(f"driver {self.ref!r} (pid {process.pid}) {exit_text(process.exitcode)}")
        with self._lock:
            calls, self._calls = self._calls, {}
        for future in calls.values():
            future.set_exception(DriverError(f"driver {self.ref!r} is gone ({self.failure or 'stopped'})"))

    def _call(self, method: str, *args: Any, timeout: float = 30.0) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            self._call_ids += 1
            call_id = self._call_ids
            self._calls[call_id] = future
        try:
            self._conn.send(("call", call_id, method, args))
        except OSError as exc:
            raise DriverError(f"driver {self.ref!r} cannot be reached: {exc}") from exc
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            raise DriverError(f"driver {self.ref!r} did not answer {method}() within {timeout} s") from exc

    def is_alive(self) -> bool:
        return self._process is not None and not self._exited.is_set()

    def stop(self, timeout: float | None = 10.0) -> None:
        process = self._process
        if process is None:
            return
        self._transition(ProcessStatus.STOPPING, when=(ProcessStatus.RUNNING,))
        if not self._exited.is_set():
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                self._call("stop", timeout=5.0 if timeout is None else min(5.0, timeout))
            except DriverError:
                pass
            if not self._exited.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
                process.kill()  # did not stop in time: stop() returns within its timeout
                self._exited.wait(0.3)
        self._transition(ProcessStatus.STOPPED, when=(ProcessStatus.STOPPING,))
        try:
            self._conn.close()
        except OSError:
            pass

    def get_parameters(self) -> DriverParameters:
        self._require_running("get parameters")
        result: DriverParameters = self._call("get_parameters")
        return result

    def set_parameters(self, parameters: DriverParameters | dict[str, Any]) -> None:
        self._require_running("set parameters")
        self._call("set_parameters", parameters)

    def _live_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("stats")
        return result
