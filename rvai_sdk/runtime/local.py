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

This module holds the runtime, the backend and the inference process's child
(``_inference_main``). The driver side lives in :mod:`rvai_sdk.runtime._local_driver`:
:class:`LocalDriverProcess` (a driver's handle, re-exported here) and ``_driver_main``
(what a driver's child runs). How both kinds of child are spawned and set up
(``spawn_context``, ``start_child``, ``child_setup``, ``exit_text``) lives in
:mod:`rvai_sdk.runtime._local_spawn`.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from rvai_sdk._logging import ChildLogConfig, child_log_config
from rvai_sdk.exc import ProcessError
from rvai_sdk.runtime._backend import Runtime
from rvai_sdk.runtime._devices import gpu_ids, gpu_need, resolve_devices
from rvai_sdk.runtime._local_driver import LocalDriverProcess
from rvai_sdk.runtime._local_spawn import child_setup, exit_text, spawn_context, start_child
from rvai_sdk.runtime.driver_process import DriverFactory, PipelineDriverProcess
from rvai_sdk.runtime.inference import Inference, build_executor, exit_process
from rvai_sdk.runtime.process import ProcessBackend
from rvai_sdk.transport.channel import new_address
from rvai_sdk.transport.client import UnixLink
from rvai_sdk.transport.link import Link
from rvai_sdk.transport.server import InferenceServer
from rvai_sdk.types._generic import register_with_dill
from rvai_sdk.transport.shm import SlotPool, pin_with_cuda, shm_supported

__all__ = ["LocalRuntime", "LocalBackend", "LocalDriverProcess"]


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


# -- in the children ------------------------------------------------------------------------------


def _inference_main(
    blob: bytes,
    params_blob: bytes,
    address: str,
    authkey: bytes,
    conn: Any,
    env: dict[str, str],
    log: ChildLogConfig | None = None,
) -> None:
    child_setup(env, log)
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
        return f"inference process pid {process.pid} {exit_text(process.exitcode)}"

    def launch(self, parameters: Mapping[str, Any]) -> Link:
        ctx = spawn_context()
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
        start_child(process)
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
                    else f"pid {process.pid} {exit_text(process.exitcode)} while starting"
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
                f"the inference process (pid {process.pid}) {exit_text(process.exitcode)}; "
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
