"""The local runtime: the inference process and each driver are real processes on this machine.

Processes are spawned (never forked: CUDA-safe) through ``multiprocess``, so
cells, drivers and factories defined in a notebook or ``__main__`` travel by
value (dill), once, at start. Requests then go straight from the process that
makes them (this one, or a driver process) to the inference process over a Unix
socket (:mod:`rvai_sdk.transport`): the standard pickler, coalesced frames, and
shared memory for large arrays. The runtime only starts, watches and stops
processes; it is never on the data path.

Every child watches its parent and exits when it dies, so no child outlives the
Python that started it, even after ``kill -9``.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from rvai_sdk._logging import ChildLogConfig, child_log_config, forward_logs
from rvai_sdk.drivers.driver import DriverParameters
from rvai_sdk.drivers.port import RestrictedInferenceProcess
from rvai_sdk.exc import DriverError, ProcessError
from rvai_sdk.execution.gc_tuning import tune_for_serving
from rvai_sdk.pipeline.graph import Pipeline
from rvai_sdk.resources import DriverResources
from rvai_sdk.runtime._backend import Runtime
from rvai_sdk.runtime._devices import gpu_ids, gpu_need, resolve_devices
from rvai_sdk.runtime.driver_process import (
    DriverFactory,
    PipelineDriverProcess,
    driver_resources,
    failure_text,
    make_driver,
)
from rvai_sdk.runtime.inference import Inference, build_executor, exit_process
from rvai_sdk.runtime.process import ProcessBackend
from rvai_sdk.runtime.status import ProcessStatus
from rvai_sdk.transport.channel import new_address
from rvai_sdk.transport.client import UnixLink
from rvai_sdk.transport.link import Link
from rvai_sdk.transport.server import InferenceServer
from rvai_sdk.types._generic import register_with_dill
from rvai_sdk.transport.shm import SlotPool, pin_with_cuda, shm_supported

__all__ = ["LocalRuntime", "LocalBackend", "LocalDriverProcess"]


_no_main = threading.local()


def _context() -> Any:
    import multiprocess
    import multiprocess.spawn

    if not getattr(multiprocess.spawn.get_preparation_data, "_rvai", False):
        original = multiprocess.spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            if getattr(_no_main, "on", False):
                # Our children get everything by value (dill): they must not re-run the user's script or
                # notebook module, so a script without an ``if __name__ == "__main__"`` guard works too.
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data._rvai = True  # type: ignore[attr-defined]
        multiprocess.spawn.get_preparation_data = get_preparation_data
    return multiprocess.get_context("spawn")


def _start(process: Any) -> None:
    _no_main.on = True
    try:
        process.start()
    finally:
        _no_main.on = False


def _dumps(obj: Any, what: str) -> bytes:
    import dill

    register_with_dill()
    try:
        with warnings.catch_warnings():
            # Classes local to a function or a notebook have no importable reference: dill sends them by value.
            warnings.simplefilter("ignore", dill.PicklingWarning)
            data: bytes = dill.dumps(obj, recurse=True)
    except Exception as exc:
        raise ProcessError(
            f"{what} cannot be sent to a child process ({type(exc).__name__}: {exc}); keep objects that hold "
            "open files, sockets, locks or threads out of it (create them in load_model or run() instead)"
        ) from exc
    return data


def _exit_text(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


# -- in the children ------------------------------------------------------------------------------


def _child_setup(env: Mapping[str, str], log: ChildLogConfig | None = None) -> None:
    """First thing in every child: environment, logs to the parent's handlers, no Ctrl-C from the
    terminal, and die with the parent."""
    os.environ.update(env)
    forward_logs(log)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import multiprocess

    parent = multiprocess.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        from multiprocess.connection import wait

        wait([sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="rvai-parent-watch", daemon=True).start()


def _inference_main(
    blob: bytes,
    params_blob: bytes,
    address: str,
    authkey: bytes,
    conn: Any,
    env: dict[str, str],
    log: ChildLogConfig | None = None,
) -> None:
    _child_setup(env, log)
    import dill

    try:
        inference: Inference = dill.loads(blob)
        parameters, models = dill.loads(params_blob)
        executor = build_executor(inference, parameters=parameters, models=models, on_broken=exit_process)
        devices = resolve_devices(inference.pipeline.order, inference.resources)
        if any(device.startswith("cuda") for device in devices.values()):
            pin_with_cuda()  # frames arriving in shared memory copy to the GPU by DMA
        executor.start()
        pool = SlotPool() if shm_supported() else None
        server = InferenceServer(executor, address, authkey, pool)
        server.start()
    except BaseException as exc:
        _send_error(conn, exc)
        os._exit(1)
    conn.send(("ready", os.getpid()))
    try:
        message = conn.recv()
    except (EOFError, OSError):
        message = ("stop", 0.0)
    timeout = message[1] if isinstance(message, tuple) and message[0] == "stop" else 0.0
    executor.stop(timeout)
    server.close()
    try:
        conn.send(("stopped",))
    except OSError:
        pass
    os._exit(0)


def _send_error(conn: Any, exc: BaseException) -> None:
    try:
        conn.send(("error", exc))
    except Exception:
        conn.send(("error", ProcessError(f"{type(exc).__name__}: {exc}")))


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
    _child_setup(env, log)
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
        send(("failed", failure_text(ref, driver, exc)))
        client.close()
        os._exit(1)
    send(("finished",))
    client.close()
    os._exit(0)


# -- in the parent -------------------------------------------------------------------------------


class LocalBackend(ProcessBackend):
    """The inference process is a child process, reached over a :class:`~rvai_sdk.transport.client.UnixLink`;
    each driver is a child process of its own (see :class:`ProcessBackend`)."""

    def __init__(self, runtime: LocalRuntime, inference: Inference, start_timeout: float) -> None:
        self.inference = inference
        self.name = inference.pipeline.name
        self._runtime = runtime
        self._start_timeout = start_timeout
        self.load_timeout = start_timeout  # a model swap may take as long as loading at start
        self._blob = _dumps(inference, f"the inference of pipeline {self.name!r} (its cells and parameters)")
        self._pipeline_blob: bytes | None = None  # made on the first add_driver: drivers need the pipeline alone
        self.address = new_address()
        self._authkey = secrets.token_bytes(32)
        self._env, self._gpus = runtime._assign_gpus(inference)
        self._process: Any = None
        self._conn: Any = None
        self._exited = threading.Event()
        self._link: UnixLink | None = None
        self.pool = SlotPool() if shm_supported() else None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The inference process's pid (``None`` before it started and once stopped)."""
        process = self._process
        return None if process is None else int(process.pid)

    def _explain_loss(self) -> str:
        process, exited = self._process, self._exited
        if process is None:
            return "it was stopped"
        exited.wait(0.5)  # the watcher reaps it; two threads must not wait for one child at once
        return f"inference process pid {process.pid} {_exit_text(process.exitcode)}"

    def launch(self, parameters: Mapping[str, Any]) -> Link:
        ctx = _context()
        parent_conn, child_conn = ctx.Pipe()
        params_blob = _dumps(
            (dict(parameters), self.process.get_models()), f"the parameters and models of pipeline {self.name!r}"
        )
        process = ctx.Process(
            target=_inference_main,
            args=(
                self._blob,
                params_blob,
                self.address,
                self._authkey,
                child_conn,
                self._env,
                child_log_config(f"inference[{self.name}]"),
            ),
            name=f"rvai-inference-{self.name}",
            daemon=True,
        )
        self._exited = threading.Event()
        _start(process)
        child_conn.close()
        self._process, self._conn = process, parent_conn
        from multiprocess.connection import wait

        ready = wait([parent_conn, process.sentinel], timeout=self._start_timeout)
        message: Any = None
        if parent_conn in ready:
            try:
                message = parent_conn.recv()
            except (EOFError, OSError):
                message = None
        if not message or message[0] != "ready":
            if message is None:
                process.kill() if process.is_alive() else None
                process.join(5.0)
                detail = (
                    f"it did not report ready within {self._start_timeout} s"
                    if not ready
                    else f"pid {process.pid} {_exit_text(process.exitcode)} while starting"
                )
                error: BaseException = ProcessError(
                    f"the inference process of pipeline {self.name!r} failed to start: {detail}"
                )
            else:
                error = message[1]
                process.join(5.0)
            self._exited.set()
            raise error
        link = UnixLink(self.address, self._authkey, name=self.name, pool=self.pool, explain_loss=self._explain_loss)
        link.connect()
        self._link = link
        return link

    def watch(self) -> None:
        process, exited = self._process, self._exited
        threading.Thread(target=self._watch, args=(process, exited), name="rvai-inference-watch", daemon=True).start()

    def _watch(self, process: Any, exited: threading.Event) -> None:
        process.join()
        exited.set()
        if self._process is process:
            self.process._lost(
                f"the inference process (pid {process.pid}) {_exit_text(process.exitcode)}; "
                "call proc.restart() to start a fresh one"
            )

    def shutdown(self, timeout: float | None) -> None:
        process, conn, link = self._process, self._conn, self._link
        if process is None:
            return
        if not self._exited.is_set():
            try:
                conn.send(("stop", timeout))
            except OSError:
                pass
            # The child stops its executor within ``timeout`` and exits; one that does not
            # (a cell stuck in native code, a wedged interpreter) is killed: stop() returns in time.
            if not self._exited.wait(None if timeout is None else timeout + 0.6):
                process.kill()
                self._exited.wait(0.3)
        conn.close()
        if link is not None:
            link.close()

    def release(self) -> None:
        self._process = None
        self._runtime._release_gpus(self._gpus)
        if self.pool is not None:
            self.pool.close()

    def _pipeline_bytes(self) -> bytes:
        if self._pipeline_blob is None:
            self._pipeline_blob = _dumps(self.inference.pipeline, f"pipeline {self.name!r}")
        return self._pipeline_blob

    def start_driver(
        self, ref: str, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PipelineDriverProcess:
        handle = LocalDriverProcess(ref)
        handle._launch(
            _dumps((factory, args, kwargs), f"driver {ref!r} (its factory and arguments)"),
            self._pipeline_bytes(),
            self.address,
            self._authkey,
            self._env,
            (self.inference.max_sid_length, self.inference.request_timeout),
        )
        return handle


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
        ctx = _context()
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
        _start(process)
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
            text = f"driver {self.ref!r} (pid {process.pid}) {_exit_text(process.exitcode)} while starting"
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
            kind = message[0]
            if kind == "reply":
                future = self._calls.pop(message[1], None)
                if future is not None:
                    if message[2]:
                        future.set_result(message[3])
                    else:
                        future.set_exception(message[3])
            elif kind == "failed":
                self._fail(message[1])
            elif kind == "finished":
                self._transition(ProcessStatus.STOPPED, when=(ProcessStatus.RUNNING,))
        process.join()
        self._exited.set()
        if self._status is ProcessStatus.RUNNING:
            self._fail(f"driver {self.ref!r} (pid {process.pid}) {_exit_text(process.exitcode)}")
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

    def stats(self) -> dict[str, Any]:
        self._require_running("get stats")
        result: dict[str, Any] = self._call("stats")
        return result


class LocalRuntime(Runtime):
    """Runs inference processes and drivers as child processes; made by ``init("local")``.

    Args:
        start_timeout: most seconds an inference process may take to load its models and report ready.
    """

    name = "local"

    def __init__(self, start_timeout: float = 300.0) -> None:
        super().__init__()
        self.start_timeout = start_timeout
        self._gpu_load: dict[str, float] = {}
        self._gpu_lock = threading.Lock()

    def _backend(self, inference: Inference) -> ProcessBackend:
        return LocalBackend(self, inference, self.start_timeout)

    def _assign_gpus(self, inference: Inference) -> tuple[dict[str, str], dict[str, float]]:
        """The child's environment (``CUDA_VISIBLE_DEVICES``) and the GPU shares it takes."""
        need = gpu_need(inference.resources)
        if need <= 0:
            return {}, {}
        ids = gpu_ids()
        resolve_devices(inference.pipeline.order, inference.resources, count=len(ids))  # raises without a GPU
        if not ids:
            return {"CUDA_VISIBLE_DEVICES": ""}, {}
        count = max(1, math.ceil(need))
        share = need / count
        with self._gpu_lock:
            chosen = sorted(ids, key=lambda i: self._gpu_load.get(i, 0.0))[:count]
            for gpu in chosen:
                self._gpu_load[gpu] = self._gpu_load.get(gpu, 0.0) + share
        return {"CUDA_VISIBLE_DEVICES": ",".join(chosen)}, {gpu: share for gpu in chosen}

    def _release_gpus(self, taken: dict[str, float]) -> None:
        with self._gpu_lock:
            for gpu, share in taken.items():
                self._gpu_load[gpu] = max(0.0, self._gpu_load.get(gpu, 0.0) - share)
        taken.clear()


def create(start_timeout: float = 300.0, **options: Any) -> Runtime:
    """Make the local runtime.

    Args:
        start_timeout: most seconds an inference process may take to become ready.

    Raises:
        ParameterError: an unknown option.
    """
    if options:
        from rvai_sdk.exc import ParameterError

        raise ParameterError(f"init('local') takes only start_timeout, got {', '.join(sorted(options))}")
    return LocalRuntime(start_timeout=start_timeout)
