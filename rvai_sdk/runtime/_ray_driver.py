"""A driver of a ray inference process: a threaded Ray actor running ``PipelineDriver.run``.

The class is plain Python; ``rvai_sdk.runtime.ray`` turns it into a Ray actor, so
this module imports without Ray. The driver's ports are allocated on the node the
actor runs on, and its :class:`~rvai_sdk.resources.DriverResources` carry that
node's address, so the services it publishes are reachable from other machines.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

from rvai_sdk.drivers.driver import DriverParameters, PipelineDriver
from rvai_sdk.exc import DriverError
from rvai_sdk.execution.gc_tuning import tune_for_serving
from rvai_sdk.pipeline.graph import Pipeline
from rvai_sdk.resources import DriverResources
from rvai_sdk.drivers.port import RestrictedInferenceProcess
from rvai_sdk.runtime.driver_process import DriverFactory, allocate_ports, failure_text, make_driver
from rvai_sdk.transport.ray_link import RayLink, Route
from rvai_sdk.transport.ray_replica import Outcome, failed, node_ip

__all__ = ["DriverActor"]


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
            self._done.set()

    def wait_done(self) -> Outcome:
        """Block until ``run`` returns: ``(True, None)`` when it returned, ``(True, failure text)`` when it raised."""
        self._done.wait()
        return (True, self._failure)

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
