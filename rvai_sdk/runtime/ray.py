"""The ray runtime: the inference process as Ray actors (replicas), drivers as Ray actors.

``init("ray")`` starts a local Ray instance (or reuses the one this Python
process already has); ``init("ray", address="ray://head:10001")`` or
``address="auto"`` joins a cluster. ``rt.stop()`` shuts Ray down only if it
started it.

- ``start_inference`` starts one replica: an async Ray actor holding an
  :class:`~rvai_sdk.execution.executor.Executor`, reserving the GPUs and CPUs
  that ``Inference(resources=...)`` asks for (summed over the cells).
  ``proc.set_replicas(n)`` scales it; a sid always goes to the same replica
  (rendezvous hashing), ``sid=None`` to the least busy one.
- Requests go straight from the caller (your process, or a driver actor) to
  the replica; arrays above 100 kB travel through Ray's object store.
- ``proc.set_replicas(n)`` hands the sids that move over to their new replica,
  state included (see :mod:`~rvai_sdk.transport.ray_replica`): no sid starts fresh
  because of a rescale, and each sid's requests keep their order.
- A replica that dies fails its pending requests at once with
  :class:`~rvai_sdk.exc.ProcessError` and is started again, with fresh state for
  its sids (or their last checkpoints, with a durable state store) and the parameters
  and models in force; the other replicas go on serving.
- ``proc.set_parameters`` and ``proc.set_models`` roll across the replicas, one at
  a time (:meth:`RayBackend.reconfigure`).
- ``add_driver`` starts the driver in its own Ray actor; its ports are allocated
  on that actor's node and its services carry that node's address. The actor and
  its handle (:class:`RayDriverProcess`, re-exported here) are in
  :mod:`rvai_sdk.runtime._ray_driver`.

Ray is imported when a runtime is created, never when ``rvai_sdk`` is imported.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rvai_sdk._logging import ChildLogConfig, child_log_config, forward_logs
from rvai_sdk.exc import ParameterError, ProcessError, RvaiError
from rvai_sdk.runtime._backend import Runtime
from rvai_sdk.runtime._devices import gpu_need
from rvai_sdk.runtime._ray_driver import RayDriverProcess, ray_module as _ray
from rvai_sdk.runtime.driver_process import DriverFactory, PipelineDriverProcess
from rvai_sdk.runtime.inference import Inference, build_executor, exit_process
from rvai_sdk.runtime.process import InferenceProcess, ProcessBackend, ProcessStatus, first_line
from rvai_sdk.transport.link import Link
from rvai_sdk.transport.ray_link import RayLink, Route, translate_ray_error, unwrap
from rvai_sdk.transport.ray_replica import ReplicaActor

__all__ = ["RayRuntime", "RayBackend", "RayInferenceProcess", "RayDriverProcess", "create"]

_RUNTIME_OPTIONS = ("replicas", "replica_options", "driver_options", "start_timeout")
_MAX_RESTARTS = 5
"""Attempts at restarting a dead replica before the inference process is marked FAILED."""


def _forwarding_logs(log: ChildLogConfig, build: Callable[[], Any]) -> Any:
    """In a replica actor: forward its log records to the parent (same machine only), then build."""
    forward_logs(log)
    return build()


class _LoggedFactory:
    """A driver factory that first forwards the driver actor's log records to the parent (same machine only)."""

    def __init__(self, log: ChildLogConfig, factory: DriverFactory) -> None:
        self.log = log
        self.factory = factory
        self.__qualname__ = str(getattr(factory, "__qualname__", None) or getattr(factory, "__name__", None) or factory)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        forward_logs(self.log)
        return self.factory(*args, **kwargs)


class RayRuntime(Runtime):
    """Runs inference processes and drivers as Ray actors; made by ``init("ray", ...)``.

    Args:
        address: a cluster to join (``"auto"``: the one ``ray start`` started on this machine,
            ``"host:6379"`` or ``"ray://head:10001"``); ``None`` starts a local Ray instance
            unless this process is connected to one already.
        replicas: replicas each inference process starts with (``proc.set_replicas`` changes it).
        replica_options: extra Ray actor options for replicas (``resources``, ``scheduling_strategy``...).
        driver_options: extra Ray actor options for drivers (``proc.set_driver_options`` per ref).
        start_timeout: seconds a replica or driver may take to be placed and started.
        **ray_init_options: passed to ``ray.init`` when this runtime starts or joins Ray.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        replicas: int = 1,
        replica_options: Mapping[str, Any] | None = None,
        driver_options: Mapping[str, Any] | None = None,
        start_timeout: float = 120.0,
        **ray_init_options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(replicas, int) or replicas < 1:
            raise ParameterError(f"init('ray', replicas=...) must be an int >= 1, got {replicas!r}", field="replicas")
        if start_timeout <= 0:
            raise ParameterError(f"init('ray', start_timeout=...) must be > 0 seconds, got {start_timeout!r}")
        ray = _ray()
        self.replicas = replicas
        self.replica_options = dict(replica_options or {})
        self.driver_options = dict(driver_options or {})
        self.start_timeout = float(start_timeout)
        self.started_ray = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False} if address is None else {}
            options.update(ray_init_options)
            try:
                # "local" always starts a fresh instance; None would join a cluster that `ray start` left here
                ray.init(address=address or "local", **options)
            except Exception as exc:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                raise ProcessError(f"could not start or join {where}: {type(exc).__name__}: {exc}") from exc
            self.started_ray = True
        self.address = str(ray.get_runtime_context().gcs_address)

    def _backend(self, inference: Inference) -> ProcessBackend:
        return RayBackend(self, inference)

    def _handle(self, inference: Inference, backend: ProcessBackend) -> InferenceProcess:
        return RayInferenceProcess(inference, backend)

    def cluster_resources(self) -> dict[str, float]:
        """The cluster's total resources (``CPU``, ``GPU``, custom ones), as Ray reports them."""
        return {str(k): float(v) for k, v in _ray().cluster_resources().items()}

    def stop(self) -> None:
        """Stop every inference process (and its drivers); shut Ray down if this runtime started it."""
        super().stop()
        if self.started_ray:
            self.started_ray = False
            _ray().shutdown()

    def __repr__(self) -> str:
        return f"<RayRuntime address={self.address!r} processes={len(self.list_inferences())}>"


class _Replica:
    """A replica as its inference process keeps it: the actor and its death watch."""

    def __init__(self, index: int, generation: int, handle: Any, where: dict[str, Any]) -> None:
        self.index = index
        self.generation = generation
        self.handle = handle
        self.where = where
        self.watch = handle.watch.remote()
        self.ended = False

    def route(self) -> Route:
        return Route(self.index, self.handle, self.generation, str(self.where.get("node", "")))


class RayBackend(ProcessBackend):
    """Replicas are Ray actors reached over a :class:`~rvai_sdk.transport.ray_link.RayLink`; drivers are
    Ray actors too (see :class:`ProcessBackend`).

    It watches its replicas and starts a dead one again (fresh state for its sids) up to
    :data:`_MAX_RESTARTS` times per replica; past that, or when one cannot be started
    again, it reports the process lost.
    """

    def __init__(self, runtime: RayRuntime, inference: Inference) -> None:
        self.runtime = runtime
        self.inference = inference
        self.name = inference.pipeline.name
        self.count = runtime.replicas
        self._parameters: Mapping[str, Any] = dict(inference.parameters)
        self._models: dict[str, str] = {ref: str(path) for ref, path in inference.models.items()}
        self.load_timeout = runtime.start_timeout
        self.link = RayLink(self.name)
        self._replicas: dict[int, _Replica] = {}
        self._generations = itertools.count(1)
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._stopping = threading.Event()  # a shutdown is waiting for the lock: a replacement starting gives up
        self._monitor: threading.Thread | None = None
        self._restarts = 0
        self.driver_options: dict[str, dict[str, Any]] = {}
        self._options = self._actor_options()
        self._drivers: list[RayDriverProcess] = []
        self._epoch = 0
        """The replica set's epoch: counted up each time the set (or a replica's incarnation) changes."""
        self.last_rescale: dict[str, float] = {}
        """Timings of the last :meth:`set_replicas` (seconds: ``launch``, ``hand_over``, ``stop``; and
        ``hand_over_began``/``hand_over_ended``, ``time.perf_counter()`` stamps): for benchmarks."""

    # -- placement ---------------------------------------------------------------------------

    def _actor_options(self) -> dict[str, Any]:
        """Ray options of a replica: the CPUs its cells ask for, summed; the GPUs, the largest share (as local)."""
        resources = self.inference.resources
        gpus = gpu_need(resources)  # the cells share the process's GPU(s): 1 + 1 is one GPU, not two
        cpus = sum(r.cpus for r in resources.values())
        if gpus > 0:
            have = float(_ray().cluster_resources().get("GPU", 0.0))
            if have < min(gpus, 1.0):
                strict = [ref for ref, r in resources.items() if r.gpus > 0 and not r.allow_cpu]
                if strict:
                    raise ProcessError(
                        f"cell {strict[0]!r} asks for {resources[strict[0]].gpus:g} GPU but the Ray cluster has "
                        f"{have:g}; add a GPU node, or pass CellResources(gpus=..., allow_cpu=True) to fall back to the CPU"
                    )
                gpus = 0.0
        options: dict[str, Any] = {"num_cpus": cpus, "max_restarts": 0, "scheduling_strategy": "SPREAD"}
        if gpus > 0:
            options["num_gpus"] = gpus
        options.update(self.runtime.replica_options)
        return options

    def _describe_need(self) -> str:
        need = {k: v for k, v in (("CPU", self._options.get("num_cpus", 0)), ("GPU", self._options.get("num_gpus", 0))) if v}
        need.update(self._options.get("resources", {}))
        return f"it needs {need or 'nothing'}; the cluster has {self.runtime.cluster_resources()}"

    # -- replicas ----------------------------------------------------------------------------

    def _where(self, index: int) -> str:
        return f"replica {index} of the inference process of pipeline {self.name!r}"

    def _launch(self, indices: list[int]) -> list[_Replica]:
        """Start replicas at ``indices`` at once; all ready, or none (the started ones are killed)."""
        ray = _ray()
        actor_cls = ray.remote(ReplicaActor).options(**self._options)
        build = functools.partial(
            _forwarding_logs,
            child_log_config(f"inference[{self.name}]"),
            functools.partial(
                build_executor,
                self.inference,
                parameters=dict(self._parameters),
                models=dict(self._models),
                on_broken=exit_process,
            ),
        )
        handles = {i: actor_cls.remote(i, build) for i in indices}
        refs = {i: handles[i].start.remote() for i in indices}
        ready = self._wait_started(list(refs.values()))
        started: list[_Replica] = []
        error: BaseException | None = None
        if self._stopping.is_set():
            error = ProcessError(f"the inference process of pipeline {self.name!r} was stopped while its replicas started")
        for i in indices:
            if refs[i] not in ready:
                error = error or ProcessError(
                    f"{self._where(i)} was not placed and started within {self.runtime.start_timeout:g} s; "
                    + self._describe_need()
                )
                continue
            try:
                where = unwrap(ray.get(refs[i]))
            except RvaiError as exc:
                error = error or exc
                continue
            except Exception as exc:
                if error is None:
                    error = translate_ray_error(exc, self._where(i), "start")
                    error.__cause__ = exc
                continue
            started.append(_Replica(i, next(self._generations), handles[i], where))
        if error is not None:
            for handle in handles.values():
                ray.kill(handle, no_restart=True)
            raise error
        return started

    def _wait_started(self, refs: list[Any]) -> list[Any]:
        """The ``refs`` that are ready within ``start_timeout``, waiting in steps so that a stop cuts it short."""
        ray = _ray()
        deadline = time.monotonic() + self.runtime.start_timeout
        ready: list[Any] = []
        while refs and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done, refs = ray.wait(refs, num_returns=len(refs), timeout=min(left, 0.25))
            ready += done
        return ready

    def launch(self, parameters: Mapping[str, Any]) -> Link:
        self._stopping.clear()
        with self._lock:
            self._parameters = dict(parameters)
            self._models = self.process.get_models()
            self._restarts = 0
            try:
                for replica in self._launch(list(range(self.count))):
                    self._replicas[replica.index] = replica
            except BaseException as exc:
                self.link.close(f"the inference process of pipeline {self.name!r} failed to start: {first_line(exc)}")
                raise
            self._publish_routes()
        return self.link

    def watch(self) -> None:
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name=f"rvai-ray-{self.name}-monitor", daemon=True)
            self._monitor.start()

    def _publish_routes(
        self, previous: list[Route] | None = None, leaving: Sequence[_Replica] = (), drain_wait: float | None = 10.0
    ) -> int:
        """Give the replica set, with a new epoch, to every replica (``leaving`` ones too), then to every link.

        Replicas learn it first, so that a caller holding the new set never reaches a replica
        that does not know it yet for long. ``previous``: the set before, when sids move
        (their new replicas pull their state from there). Returns the epoch.
        """
        ray = _ray()
        with self._lock:
            self._epoch += 1
            epoch = self._epoch
            replicas = [self._replicas[i] for i in sorted(self._replicas)]
            routes = [r.route() for r in replicas]
            refs = [r.handle.set_routes.remote(epoch, routes, previous, drain_wait) for r in [*replicas, *leaving]]
            # A replica that died does not answer: the monitor replaces it (and publishes again).
            ray.wait(refs, num_returns=len(refs), timeout=30.0)
        self.link.update(routes, epoch)
        for driver in list(self._drivers):
            driver._update_routes(routes, epoch)
        return epoch

    def _watch(self) -> None:
        """Restart replicas whose actor died, until the process stops."""
        ray = _ray()
        while not self._closing.is_set():
            with self._lock:
                watched = {r.watch: r for r in self._replicas.values() if not r.ended}
            if not watched:
                self._closing.wait(0.2)
                continue
            ready, _ = ray.wait(list(watched), num_returns=1, timeout=0.5)
            for ref in ready:
                if self._closing.is_set():
                    return
                watched[ref].ended = True  # handled once, even if it cannot be replaced
                self._replace(watched[ref])

    def _replace(self, dead: _Replica) -> None:
        with self._lock:
            if self._replicas.get(dead.index) is not dead or self._closing.is_set():
                return  # scaled away, or replaced by restart()
            self._restarts += 1
            if self._restarts > _MAX_RESTARTS * max(1, len(self._replicas)):
                self._lose(f"{self._where(dead.index)} died and was restarted too often; call proc.restart()")
                return
            try:
                (fresh,) = self._launch([dead.index])
            except BaseException as exc:
                if not self._stopping.is_set():  # else stopped (or restarted) meanwhile: nothing is lost
                    self._lose(f"{self._where(dead.index)} died and could not be started again: {exc}")
                return
            self._replicas[dead.index] = fresh
            self._publish_routes()  # under the lock: whoever sees the new replica can reach it

    def reconfigure(self, method: str, value: Mapping[str, Any]) -> None:
        """Rolling update: reconfigure the replicas one after the other, in index order.

        Each replica loads its new model while it (and every other replica) keeps serving
        with the old one, then swaps; the next starts only once it has. So at most one
        replica holds two models at a time, and the fleet never stops serving. While it
        runs, requests of sids on replicas already swapped see the new models, the others
        the old; once it returns, every request submitted runs with the new ones. If a
        replica fails (its ``load_model`` raised, or it died), the replicas already
        swapped are swapped back and the error is raised: nothing changes. Replicas
        started later (after a crash, or by ``set_replicas``) start with what is in force.
        The backend lock is held throughout: a dead replica is started again only after.
        """
        with self._lock:
            replicas = [self._replicas[i] for i in sorted(self._replicas)]
            if not replicas:
                raise ProcessError(f"the inference process of pipeline {self.name!r} has no replica")
            if method == "set_parameters":
                undo: Mapping[str, Any] = self.link.call_route(replicas[0].route(), "get_parameters")
            else:
                undo = {ref: self._models.get(ref) for ref in value}
            done: list[_Replica] = []
            try:
                for replica in replicas:
                    self._reconfigure_one(replica, method, value)
                    done.append(replica)
            except BaseException as exc:
                self._undo(method, undo, done, exc)
                raise
            if method == "set_parameters":
                self._parameters = self.link.call_route(replicas[0].route(), "get_parameters")
            else:
                merged: dict[str, str | None] = {**self._models, **value}
                self._models = {ref: path for ref, path in merged.items() if path is not None}

    def _reconfigure_one(self, replica: _Replica, method: str, value: Mapping[str, Any]) -> None:
        """``method`` on one replica, which discards models loaded past ``load_timeout`` (see ``ProcessBackend.reconfigure``)."""
        self.link.call_route(replica.route(), method, dict(value), self.load_timeout, timeout=self.reconfigure_wait)

    def _undo(self, method: str, undo: Mapping[str, Any], done: list[_Replica], error: BaseException) -> None:
        """Swap the replicas in ``done`` back after a rolling update failed with ``error``."""
        for replica in reversed(done):
            try:
                self._reconfigure_one(replica, method, undo)
            except Exception as exc:  # it keeps the new configuration: restart it so that it takes the old one
                logging.getLogger(__name__).error(
                    "%s could not be swapped back after %s failed (%s): %s: %s; restarting it",
                    self._where(replica.index), method, first_line(error), type(exc).__name__, exc,
                )
                try:
                    _ray().kill(replica.handle, no_restart=True)  # the monitor starts it again with the old one
                except Exception:
                    pass

    def _lose(self, failure: str) -> None:
        self.process._lost(failure)
        self.link.close(failure)

    def shutdown(self, timeout: float | None) -> None:
        self._stopping.set()  # before the lock: a replica being started again (the monitor holds it) gives up
        with self._lock:
            replicas = list(self._replicas.values())
            self._replicas.clear()
        ray = _ray()
        refs = [r.handle.stop.remote(timeout) for r in replicas]
        if refs:
            # A replica stops its executor within ``timeout``; one that does not is killed: stop() returns in time.
            ray.wait(refs, num_returns=len(refs), timeout=None if timeout is None else timeout + 0.6)
        for replica in replicas:
            ray.kill(replica.handle, no_restart=True)

    def release(self) -> None:
        self._closing.set()
        self.link.close(f"the inference process of pipeline {self.name!r} is STOPPED; start a new one with rt.start_inference(...)")
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(0.6)  # it checks for closing at least every 0.5 s

    # -- scaling -----------------------------------------------------------------------------

    def replicas(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"index": r.index, "generation": r.generation, **r.where}
                for r in (self._replicas[i] for i in sorted(self._replicas))
            ]

    def set_replicas(self, n: int, timeout: float | None) -> None:
        """Scale to ``n`` replicas, handing the sids that move over to their new replica (see the module docstring).

        1. start the added replicas; 2. give every replica, then every link, the new set
        with the previous one (from then on a replica refuses a sid it does not own, and
        the new owner of a sid pulls its state before its first request there);
        3. every replica takes over the sids it now owns that are still in memory elsewhere
        (idle ones too); 4. the hand-over ends (:meth:`ReplicaActor.settle`);
        5. the removed replicas, empty now, stop.
        """
        ray = _ray()
        with self._lock:
            current = sorted(self._replicas)
            if n == len(current):
                return
            began = time.perf_counter()
            previous = [self._replicas[i].route() for i in current]
            added = self._launch([i for i in range(n) if i not in self._replicas]) if n > len(current) else []
            launched = time.perf_counter()
            removed = [self._replicas[i] for i in current if i >= n]
            for replica in added:
                self._replicas[replica.index] = replica
            for replica in removed:
                del self._replicas[replica.index]
            self.count = n  # what a restart starts again
            epoch = self._publish_routes(previous, removed, timeout)
            replicas = [self._replicas[i] for i in sorted(self._replicas)]
            wait = None if timeout is None else timeout + 60.0
            for method, args in (("take_over", ()), ("settle", (epoch,))):
                refs = [getattr(r.handle, method).remote(*args) for r in replicas]
                # A replica that dies meanwhile is replaced by the monitor (its sids: from the store, or fresh).
                ray.wait(refs, num_returns=len(refs), timeout=wait)
            handed = time.perf_counter()
        for replica in removed:
            try:
                ray.get(replica.handle.stop.remote(timeout), timeout=None if timeout is None else timeout + 10)
            except Exception:  # dead or stuck: it is killed below either way
                pass
            ray.kill(replica.handle, no_restart=True)
        self.last_rescale = {
            "launch": launched - began,
            "hand_over": handed - launched,
            "stop": time.perf_counter() - handed,
            "hand_over_began": launched,
            "hand_over_ended": handed,
        }

    # -- drivers -----------------------------------------------------------------------------

    def start_driver(
        self, ref: str, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> PipelineDriverProcess:
        options = {"num_cpus": 0, "max_concurrency": 16, "max_restarts": 0}
        options.update(self.runtime.driver_options)
        options.update(self.driver_options.get(ref, {}))
        handle = RayDriverProcess(ref, self)
        factory = _LoggedFactory(child_log_config(f"driver[{ref}]"), factory)
        epoch = self.link.epoch
        handle._launch(factory, args, kwargs, options, self.link.routes(), epoch)
        with self._lock:  # routes are published under it
            self._drivers = [d for d in self._drivers if d.status is ProcessStatus.RUNNING] + [handle]
            if self.link.epoch != epoch:  # published while the driver started (a replica replaced): it missed them
                handle._update_routes(self.link.routes(), self.link.epoch)
        return handle


class RayInferenceProcess(InferenceProcess):
    """An inference process made of Ray actor replicas (see :class:`InferenceProcess`).

    Beyond the common contract it can scale: :meth:`set_replicas` / :meth:`get_replicas`;
    :meth:`set_parameters` and :meth:`set_models` update the replicas one at a time.
    Each sid is served by one replica, chosen by rendezvous hashing on the sid; its
    state lives there. When the replica set changes, the sids that move to another
    replica are handed over with their state (see :meth:`set_replicas`); a replica
    that dies is started again with fresh state for its sids (or their checkpoints,
    with a durable state store).
    """

    _backend: RayBackend

    def get_replicas(self) -> int:
        """How many replicas serve this inference process."""
        return len(self._backend.replicas())

    def replicas(self) -> list[dict[str, Any]]:
        """Each replica's ``index``, ``generation`` (starts so far), ``pid``, ``host`` and Ray ``node`` id."""
        return self._backend.replicas()

    def set_replicas(self, n: int, timeout: float | None = 10.0) -> None:
        """Scale to ``n`` replicas; returns once the new ones are ready, every moved sid is handed over and the removed ones stopped.

        Sids keep their replica unless it is removed or a new replica now owns them
        (rendezvous hashing moves about ``1/n`` of them when one is added). A sid that
        moves is handed over with its state, in memory or in a durable store alike: its
        requests in flight finish on the old replica, its state moves to the new one,
        and its next request runs there with that state, after every earlier request of
        the same caller (your process or a driver). Requests keep flowing meanwhile; a
        moved sid pauses for about one hand-over. If the old replica dies during the
        hand-over, its sids continue from the durable store, or fresh without one.
        See docs/guides/durability.md, "Rescaling Ray replicas".

        Args:
            n: the number of replicas, at least 1.
            timeout: seconds a replica waits for a moved sid's requests in flight there before
                handing it over, and a removed replica may take to finish its requests in flight.

        Raises:
            ParameterError: ``n`` is not an int >= 1.
            ProcessStateError: the process is not running.
            ProcessError: a new replica could not be placed or started (nothing changes).
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ParameterError(f"set_replicas() takes an int >= 1, got {n!r}")
        self._require_running("set replicas")
        self._backend.set_replicas(n, timeout)

    def replica_for(self, sid: str) -> int:
        """The index of the replica that serves ``sid`` now."""
        return self._backend.link.replica_for(sid).index

    def set_driver_options(self, ref: str, **ray_actor_options: Any) -> None:
        """Ray actor options for the driver added (or re-added) under ``ref``.

        Example::

            proc.set_driver_options("webapi", resources={"edge-node": 0.01})
            proc.add_driver("webapi", FastAPIDriver)
        """
        self._backend.driver_options[ref] = dict(ray_actor_options)


def create(address: str | None = None, **options: Any) -> Runtime:
    """Make the ray runtime: ``init("ray", address=None, **options)``.

    Args:
        address: a Ray cluster to join; ``None`` starts a local Ray instance (or reuses
            the one this process is already connected to).
        **options: ``replicas``, ``replica_options``, ``driver_options`` and
            ``start_timeout`` (see :class:`RayRuntime`); everything else goes to ``ray.init``.

    Raises:
        MissingExtraError: Ray is not installed (``pip install 'rvai_sdk[ray]'``).
        ProcessError: Ray could not be started or joined.
    """
    runtime_options = {k: options.pop(k) for k in _RUNTIME_OPTIONS if k in options}
    return RayRuntime(address, **runtime_options, **options)
