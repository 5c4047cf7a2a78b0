"""A driver of a ray inference process: both sides of it.

- :class:`DriverActor`: a threaded Ray actor running ``PipelineDriver.run``. The class is
  plain Python; :class:`RayDriverProcess` turns it into a Ray actor, so this module imports
  without Ray. The driver's ports are allocated on the node the actor runs on, and its
  :class:`~rvai_sdk.resources.DriverResources` carry that node's address, so the services
  it publishes are reachable from other machines.
- :class:`RayDriverProcess`: the handle ``proc.add_driver`` returns on the ray runtime
  (start, watch, stop, parameters and stats of the actor), re-exported by
  :mod:`rvai_sdk.runtime.ray`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from rvai_sdk._compat import require
from rvai_sdk.drivers.driver import DriverParameters, PipelineDriver
from rvai_sdk.exc import DriverError, RvaiError
from rvai_sdk.execution.gc_tuning import tune_for_serving
from rvai_sdk.pipeline.graph import Pipeline
from rvai_sdk.resources import DriverResources
from rvai_sdk.drivers.port import RestrictedInferenceProcess
from rvai_sdk.runtime.driver_process import (
    DriverFactory,
    PipelineDriverProcess,
    allocate_ports,
    failure_text,
    final_counters,
    make_driver,
)
from rvai_sdk.runtime.status import ProcessStatus
from rvai_sdk.transport.ray_link import RayLink, Route, translate_ray_error, unwrap
from rvai_sdk.transport.ray_replica import Outcome, failed, node_ip

if TYPE_CHECKING:
    from rvai_sdk.runtime.ray import RayBackend

__all__ = ["DriverActor", "RayDriverProcess", "ray_module"]


class DriverActor:
    """Hosts one driver: builds it from its factory, allocates its ports, runs it on a thread.

    Args:
        ref: the driver's ref.
        pipeline: the pipeline of the inference process it feeds.
        routes: the inference process's replicas.
        limits: the inference's ``max_sid_length`` and ``request_timeout``.
        epoch: the epoch of ``routes`` (see :class:`~rvai_sdk.transport.ray_link.RayLink`).
    """

    def __init__(
        self,
        ref: str,
        pipeline: Pipeline,
        routes: Sequence[Route],
        limits: tuple[int, float | None] = (256, None),
        epoch: int = 0,
    ) -> None:
        self.limits = limits
        self.ref = ref
        self.pipeline = pipeline
        self.router = RayLink(pipeline.name, routes, epoch)
        self.driver: PipelineDriver | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._failure: str | None = None
        self._final: dict[str, Any] | None = None

    def start(self, factory: DriverFactory, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
        """Make the driver, allocate its ports here, start ``run`` on a thread.

        Returns:
            ``(True, {"pid", "host", "node", "services"})``, or ``(False, error)``.
        """
        import ray

        try:
            driver = make_driver(self.ref, factory, args, kwargs)
            host = node_ip()
            resources = DriverResources(
                ports=allocate_ports(driver.resources_request()), host=host, node=socket.gethostname(), ref=self.ref
            )
            services = list(driver.services(resources))
        except BaseException as exc:
            return failed(exc)
        self.driver = driver
        tune_for_serving()  # the actor's process hosts this driver only: its collector set for many requests in flight
        restricted = RestrictedInferenceProcess(
            self.pipeline, self.router, max_sid_length=self.limits[0], request_timeout=self.limits[1]
        )
        self._thread = threading.Thread(
            target=self._run, args=(driver, restricted, resources), name=f"rvai-driver-{self.ref}", daemon=True
        )
        self._thread.start()
        return (
            True,
            {
                "pid": os.getpid(),
                "host": host,
                "node": ray.get_runtime_context().get_node_id(),
                "services": services,
            },
        )

    def _run(self, driver: PipelineDriver, restricted: RestrictedInferenceProcess, resources: DriverResources) -> None:
        try:
            driver.run(restricted, resources)
        except BaseException as exc:
            self._failure = failure_text(self.ref, driver, exc)
        finally:
            self._final = final_counters(driver)
            self._done.set()

    def wait_done(self) -> Outcome:
        """Block until ``run`` returns: ``(True, (failure text or None, the driver's final counters or None))``."""
        self._done.wait()
        return (True, (self._failure, self._final))

    def stop(self, timeout: float | None) -> Outcome:
        """Ask the driver to stop; ``(True, returned)``: whether ``run`` returned within ``timeout``.

        The driver keeps its route to the inference process until ``run`` has returned (or
        the timeout has passed), so the requests it has in flight when asked to stop finish
        and reach its sinks or clients instead of failing because of the stop itself.
        """
        try:
            if self.driver is not None:
                try:
                    self.driver.stop()
                except BaseException as exc:
                    return failed(exc)
            return (True, self._done.wait(timeout) if self._thread is not None else True)
        finally:
            self.router.close(f"driver {self.ref!r} is stopped")

    def update_routes(self, routes: Sequence[Route], epoch: int | None = None) -> Outcome:
        """The inference process's replica set (of ``epoch``) changed (scaling, restart)."""
        self.router.update(routes, epoch)
        return (True, None)

    def close_routes(self, reason: str) -> Outcome:
        """The inference process stopped: refuse requests with ``reason``."""
        self.router.close(reason)
        return (True, None)

    def _require(self) -> PipelineDriver:
        if self.driver is None:
            raise DriverError(f"driver {self.ref!r} is not started")
        return self.driver

    def get_parameters(self) -> Outcome:
        """The driver's parameters."""
        try:
            return (True, self._require().get_parameters())
        except BaseException as exc:
            return failed(exc)

    def set_parameters(self, parameters: DriverParameters | dict[str, Any]) -> Outcome:
        """Deliver new parameters to the running driver."""
        try:
            self._require().set_parameters(parameters)
        except BaseException as exc:
            return failed(exc)
        return (True, None)

    def stats(self) -> Outcome:
        """The driver's counters."""
        try:
            return (True, self._require().stats())
        except BaseException as exc:
            return failed(exc)


def ray_module() -> Any:
    """The ``ray`` module, imported on first use (``MissingExtraError`` naming the ``ray`` extra without it)."""
    return require("ray", extra="ray")


class RayDriverProcess(PipelineDriverProcess):
    """A driver running in its own Ray actor, possibly on another node.

    Attributes:
        node: the Ray node id the driver runs on.
        host: that node's address (the services' address).
    """

    def __init__(self, ref: str, process: RayBackend) -> None:
        super().__init__(ref)
        self._process = process
        self._actor: Any = None
        self.node = ""
        self.host = ""
        self._done: Future[Any] | None = None

    def _what(self) -> str:
        return f"driver {self.ref!r}"

    def _launch(
        self,
        factory: DriverFactory,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        routes: list[Route],
        epoch: int = 0,
    ) -> None:
        ray = ray_module()
        timeout = self._process.runtime.start_timeout
        try:
            self._actor = ray.remote(DriverActor).options(**options).remote(
                self.ref,
                self._process.inference.pipeline,
                routes,
                (self._process.inference.max_sid_length, self._process.inference.request_timeout),
                epoch,
            )
            ref = self._actor.start.remote(factory, args, kwargs)
            info = unwrap(ray.get(ref, timeout=timeout))
        except DriverError:
            self._kill()
            raise
        except Exception as exc:
            self._kill()
            if isinstance(exc, ray.exceptions.GetTimeoutError):
                raise DriverError(
                    f"driver {self.ref!r} was not placed and started within {timeout:g} s with options {options}; "
                    f"the cluster has {self._process.runtime.cluster_resources()}"
                ) from exc
            error = translate_ray_error(exc, self._what(), "start")
            raise DriverError(f"driver {self.ref!r} failed to start: {error}") from exc
        self.pid = int(info["pid"])
        self.node = str(info["node"])
        self.host = str(info["host"])
        self._services = list(info["services"])
        self._transition(ProcessStatus.RUNNING)
        done: Future[Any] = self._actor.wait_done.remote().future()
        self._done = done
        done.add_done_callback(self._ended)

    def _ended(self, done: Future[Any]) -> None:
        try:
            _, (failure, self.final_stats) = done.result()
        except BaseException as exc:
            if self._status in (ProcessStatus.STOPPING, ProcessStatus.STOPPED):
                return
            self._fail(f"driver {self.ref!r}: {translate_ray_error(exc, 'its actor', 'run()')}")
            return
        if failure is not None:
            self._fail(failure)
        else:
            self._transition(ProcessStatus.STOPPED, when=(ProcessStatus.RUNNING,))

    def _kill(self) -> None:
        if self._actor is not None:
            ray_module().kill(self._actor, no_restart=True)

    def _update_routes(self, routes: list[Route], epoch: int | None = None) -> None:
        if self._actor is None or self._status is not ProcessStatus.RUNNING:
            return
        try:
            ray_module().get(self._actor.update_routes.remote(routes, epoch), timeout=10)
        except Exception:  # a dead driver is reported by _ended
            pass

    def is_alive(self) -> bool:
        return self._done is not None and not self._done.done()

    def stop(self, timeout: float | None = 10.0) -> None:
        if self._status in (ProcessStatus.STOPPED,) and not self.is_alive():
            self._kill()
            return
        self._transition(ProcessStatus.STOPPING, when=(ProcessStatus.RUNNING,))
        ray = ray_module()
        returned = False
        if self._actor is not None and self.is_alive():
            try:
                returned = bool(unwrap(ray.get(self._actor.stop.remote(timeout), timeout=None if timeout is None else timeout + 0.5)))
            except Exception:  # dead or stuck: killed below
                pass
        if self._done is not None:  # run() returned: its counters are on their way (wait_done), before the kill
            try:
                if self._done.exception(timeout=5.0 if returned else 0.5) is None:
                    self.final_stats = self._done.result()[1][1]
            except Exception:
                pass
        self._kill()
        self._transition(ProcessStatus.STOPPED, when=(ProcessStatus.STOPPING,))

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return unwrap(ray_module().get(getattr(self._actor, method).remote(*args), timeout=30))
        except RvaiError:
            raise
        except Exception as exc:
            raise DriverError(f"driver {self.ref!r}: {translate_ray_error(exc, 'its actor', method + '()')}") from exc

    def get_parameters(self) -> DriverParameters:
        self._require_running("get parameters")
        return self._call("get_parameters")  # type: ignore[no-any-return]

    def set_parameters(self, parameters: DriverParameters | dict[str, Any]) -> None:
        self._require_running("set parameters")
        self._call("set_parameters", parameters)

    def _live_stats(self) -> dict[str, Any]:
        return self._call("stats")  # type: ignore[no-any-return]
