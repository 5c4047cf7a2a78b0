"""FastAPIDriver: the pipeline driver that serves the HTTP app with uvicorn, on the port the runtime allocates."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rvai_sdk._compat import require
from rvai_sdk.drivers import DriverParameters, PipelineDriver, service_record
from rvai_sdk.exc import DriverError
from rvai_sdk.resources import DriverResources, DriverResourcesRequest

from .errors import HTTPError
from .parameters import FastAPIDriverParameters, LiveState
from .service import Service

if TYPE_CHECKING:
    import uvicorn

    from rvai_sdk.drivers import RestrictedInferenceProcess
else:
    uvicorn = require("uvicorn", extra="fastapi")

__all__ = ["FastAPIDriver"]

logger = logging.getLogger("rvai_sdk.http")

_GRACE = 2.0
"""Seconds the requests in flight get to finish when the server closes (a stop, or a new address)."""


class FastAPIDriver(PipelineDriver):
    """Serve the pipeline over HTTP with FastAPI and uvicorn, on the port the runtime allocates.

    Construct it through ``proc.add_driver(ref, FastAPIDriver, parameters)``; the
    runtime allocates the port named ``"http"`` and publishes the service record
    ``get_service("http")``. Construction is cheap: the app, the server and its
    socket appear only in :meth:`run`, which returns soon after :meth:`stop`.
    Every parameter (see :class:`FastAPIDriverParameters`) can change while it runs.

    Args:
        parameters: a :class:`FastAPIDriverParameters` or a mapping of its fields.

    Example:
        >>> int(FastAPIDriver({"task_ttl": 60}).get_parameters().task_ttl)
        60
    """

    parameters_class = FastAPIDriverParameters

    def __init__(self, parameters: FastAPIDriverParameters | Mapping[str, Any] | None = None) -> None:
        super().__init__(parameters)
        self._state = LiveState(parameters=self._parameters)  # type: ignore[arg-type]
        self._server: Any = None
        self._service: Service | None = None
        self._rebind = False
        self._last_error: str | None = None
        self._resources = DriverResources()
        self._bound_port = 0
        self.instance = secrets.token_hex(8)
        """This driver's id: in its ``"http"`` service record (``instance``) and in ``/health`` and ``/ready``."""

    def resources_request(self) -> DriverResourcesRequest:
        """One port, named ``"http"``."""
        return DriverResourcesRequest(ports=["http"])

    def services(self, resources: DriverResources) -> list[dict[str, Any]]:
        """The ``"http"`` service record: where clients reach the server."""
        host = str(self._state.parameters.host)
        address = resources.host if host in ("0.0.0.0", "::", "") else host
        return [{**service_record("http", self._port(resources), address=address), "instance": self.instance}]

    def _port(self, resources: DriverResources) -> int:
        """The port to listen on: the ``listen_port`` parameter, else the one the runtime allocated."""
        return int(self._state.parameters.listen_port) or resources.ports["http"]

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        """Apply new parameters at once; a new ``host`` re-binds the same port; a new ``api_key`` updates the docs."""
        assert isinstance(new, FastAPIDriverParameters) and isinstance(old, FastAPIDriverParameters)
        self._state.parameters = new
        service = self._service
        if service is not None and bool(old.api_key) != bool(new.api_key):
            service.forget_openapi()
        if (old.host != new.host or old.listen_port != new.listen_port) and self._server is not None:
            self._rebind = True
            self._server.should_exit = True

    def stop(self) -> None:
        """Ask the server to shut down; :meth:`run` returns once it has."""
        super().stop()
        server = self._server
        if server is not None:
            server.should_exit = True

    def stats(self) -> dict[str, Any]:
        """Counters: requests per route, error responses per status, tasks by outcome, callbacks."""
        service = self._service
        counters: dict[str, Any] = dict(self._state.counters) if service is None else service.counters(service.tasks.kept_blocking())
        if self._last_error is not None:
            counters["last_error"] = self._last_error
        return counters

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        """Serve until :meth:`stop`.

        Raises:
            DriverError: the port cannot be bound (names host and port).
        """
        self._resources = resources
        port = self._port(resources)
        service = Service(self._state, inference, self.instance)
        self._service = service
        config = uvicorn.Config(
            service.asgi,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=int(_GRACE) + 1,  # after the drain (see _drain), nothing should be left
            server_header=False,
        )
        self._state.bound_host = str(self._state.parameters.host)
        self._bound_port = port
        sock = _bind(self._state.bound_host, port)  # a bad host fails the driver at once, naming it
        _run_loop(self._serve(config, sock, port, service), config)

    async def _serve(self, config: Any, sock: socket.socket, port: int, service: Service) -> None:
        """Serve on ``sock``; after a ``host`` change, on a new socket, on the same loop (tasks go on)."""
        try:
            service.start(asyncio.get_running_loop())
        except BaseException:  # e.g. the task store cannot be opened: the driver fails, naming it
            sock.close()
            raise
        try:
            while True:
                server = _Server(config)
                server.before_shutdown = lambda: self._drain(service)
                self._rebind = False
                self._server = server
                if self.stopped.is_set():
                    server.should_exit = True
                try:
                    await server.serve(sockets=[sock])
                finally:
                    sock.close()
                    self._server = None
                if not self._rebind or self.stopped.is_set():
                    return
                sock = self._rebound(self._bound_port, self._state.bound_host)
        finally:
            await service.close()

    async def _drain(self, service: Service) -> None:
        """Before the server closes (a stop, or a new address): requests still in flight after the grace get a
        JSON 503 saying so, not the plain-text 500 uvicorn answers for a handler it cancels."""
        moving = self._rebind and not self.stopped.is_set()
        why = "moved to a new address" if moving else "was stopped"

        def failure() -> HTTPError:
            return HTTPError(
                503,
                "DriverStopping",
                f"the HTTP driver {why} before this request was answered; the request may still run in the inference "
                "process (its outcome is unknown here): send it again once the server answers",
                headers={"Retry-After": "1"},
            )

        left = await service.dispatcher.drain(_GRACE, failure)
        if left:
            self._state.count("requests_cut_off")
            logger.warning("FastAPIDriver %s with %d requests in flight: answered 503", why, left)

    def _rebound(self, port: int, previous: str) -> socket.socket:
        """A socket on the new host and port; when it cannot be bound, back on the previous ones (parameters too)."""
        host = str(self._state.parameters.host)
        wanted = self._port(self._resources)
        try:
            sock = _bind(host, wanted)
        except DriverError as exc:
            self._state.count("host_changes_refused")
            self._last_error = str(exc)
            kept = 0 if port == self._resources.ports.get("http") else port
            reverted = self.take_back_parameters({"host": previous, "listen_port": kept})
            assert isinstance(reverted, FastAPIDriverParameters)
            self._state.parameters = reverted
            sock = _bind(previous, port)
            host, wanted = previous, port
        self._state.bound_host = host
        self._bound_port = wanted
        return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the driver stops through :meth:`FastAPIDriver.stop`.

    (In a driver process uvicorn would otherwise take SIGINT/SIGTERM from the runtime.)
    """

    before_shutdown: Callable[[], Awaitable[None]] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: Any = None) -> None:
        """Answer what is still in flight (``before_shutdown``), then close as uvicorn does."""
        hook = self.before_shutdown
        if hook is not None:
            await hook()
        await super().shutdown(sockets=sockets)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DriverError(
                f"FastAPIDriver cannot listen on {host}:{port}: port {port} is in use (another server holds it); "
                "pick another listen_port, or 0 for any free port"
            ) from exc
        raise DriverError(
            f"FastAPIDriver cannot listen on {host}:{port}: {exc}; check the 'host' parameter "
            "(an address of this machine, e.g. 127.0.0.1 or 0.0.0.0)"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _run_loop(coro: Awaitable[None], config: Any) -> None:
    """Run ``coro`` on a fresh event loop of uvicorn's choice (uvloop when installed)."""
    factory = getattr(config, "get_loop_factory", lambda: None)()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
