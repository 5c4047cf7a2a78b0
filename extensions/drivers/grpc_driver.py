"""GrpcDriver: serve any pipeline over gRPC with the Open Inference Protocol (KServe V2, Triton's gRPC API).

The driver runs a grpcio server on the port the runtime allocates (the service
``"grpc"``) and answers the protocol's ``inference.GRPCInferenceService``:
``ServerLive``, ``ServerReady``, ``ModelReady``, ``ServerMetadata``, ``ModelMetadata``,
``ModelConfig``, ``ModelInfer`` and ``ModelStreamInfer``. Triton's and KServe's gRPC
clients (``tritonclient.grpc``, ``InferenceGRPCClient``) work against a pipeline with
only their URL changed: the model is the pipeline (its name, version ``"1"``), its
inputs and outputs are tensors typed exactly as over HTTP (the same codec as
FastAPIDriver's ``/v2`` routes), and the request parameters ``sequence_id``,
``sequence_start`` and ``sequence_end`` (or ``sid``) select the stream's state.

It is a driver of its own, beside :class:`FastAPIDriver` rather than an option of it:
gRPC needs an HTTP/2 server of its own (uvicorn speaks HTTP/1.1), so it has its own
port and service record anyway, and as its own driver it is added, stopped, restarted
and re-parameterised without touching the HTTP server, in a process of its own on the
local runtime. Install it with the ``grpc`` extra (grpcio and protobuf).

Example::

    grpc = proc.add_driver("grpc", GrpcDriver)
    url = f"localhost:{grpc.get_service('grpc')['port']}"
    client = tritonclient.grpc.InferenceServerClient(url=url)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import secrets
import threading
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rvai_sdk._compat import require
from rvai_sdk.drivers import DriverParameters, PipelineDriver, service_record
from rvai_sdk.exc import DriverError, ParameterError
from rvai_sdk.resources import DriverResources, DriverResourcesRequest
from rvai_sdk.types import Float, Integer, String

if TYPE_CHECKING:
    import grpc

    from rvai_sdk.drivers import RestrictedInferenceProcess
else:
    grpc = require("grpc", extra="grpc")

__all__ = ["GrpcDriver", "GrpcDriverParameters"]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The default ``max_message_bytes``: 64 MiB (a 1080p RGB frame is 6 MiB, a 4K one 24 MiB)."""


@dataclasses.dataclass
class GrpcDriverParameters(DriverParameters):
    """What a :class:`GrpcDriver` can be told; every field can change while it runs.

    Attributes:
        host: the address to listen on; ``127.0.0.1`` (this machine only) by default;
            ``0.0.0.0`` for every interface.
        listen_port: a fixed TCP port (``rvai-sdk serve --grpc-port``); ``0`` (the default)
            takes the port the runtime allocated for the service ``"grpc"``.
        max_message_bytes: the largest request and answer message, in bytes (gRPC's own
            default is 4 MiB, less than a 1080p frame); a larger request is refused with
            ``RESOURCE_EXHAUSTED``.
        max_workers: requests served at once (threads); more wait in gRPC's queue. An open
            ``ModelStreamInfer`` stream holds a thread while it lasts, idle or not: at most half
            of them (``max_workers // 2``: none with 1 worker) are open at once, a stream beyond is
            refused with ``RESOURCE_EXHAUSTED``, so streams never leave ``ServerLive``,
            ``ServerReady`` or ``ModelInfer`` without a thread.
        request_timeout: the deadline in seconds of a request that brings none (neither a
            gRPC deadline nor a ``timeout`` parameter); ``None``: the inference process's
            ``request_timeout``. Past it the answer is ``DEADLINE_EXCEEDED``.
        max_image_pixels: the most pixels (width x height) of an image input; ``None`` (the
            default): ``Image.max_pixels``.
        api_key: when set, every method but ``ServerLive`` needs the call metadata
            ``authorization: Bearer <api_key>`` (``UNAUTHENTICATED`` without it).

    A change of ``host``, ``listen_port``, ``max_message_bytes`` or ``max_workers`` restarts
    the server (requests in flight get 2 seconds to finish); when the new one cannot be bound
    the server comes back on the previous settings, the parameters as they were (``stats()`` says why).
    """

    host: String = DriverParameters.field(default=String("127.0.0.1"), description="address to listen on")
    listen_port: Integer = DriverParameters.field(default=Integer(0), description="fixed port; 0: the runtime's")
    max_message_bytes: Integer = DriverParameters.field(
        default=Integer(MAX_MESSAGE_BYTES), description="largest request or answer message in bytes"
    )
    max_workers: Integer = DriverParameters.field(default=Integer(64), description="requests served at once")
    request_timeout: Float | None = DriverParameters.field(default=None, description="seconds; None: the inference's")
    max_image_pixels: Integer | None = DriverParameters.field(default=None, description="None: Image.max_pixels")
    api_key: String | None = DriverParameters.field(default=None, description="bearer token; None: no auth")

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = (
            ("listen_port", 0 <= int(self.listen_port) <= 65535, "0..65535 (0: the runtime's port)"),
            ("max_message_bytes", int(self.max_message_bytes) >= 1024, "at least 1024"),
            ("max_workers", int(self.max_workers) >= 1, "at least 1"),
            ("request_timeout", self.request_timeout is None or 0 < float(self.request_timeout) < math.inf, "seconds > 0, or None (none)"),
            ("max_image_pixels", self.max_image_pixels is None or int(self.max_image_pixels) > 0, "> 0, or None"),
            ("host", bool(str(self.host).strip()), "an address such as '127.0.0.1'"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ParameterError(f"GrpcDriverParameters.{name} must be {expected}, got {getattr(self, name)!r}", field=name)


_RESTART_FIELDS = ("host", "listen_port", "max_message_bytes", "max_workers")


class GrpcDriver(PipelineDriver):
    """Serve the pipeline with the Open Inference Protocol over gRPC, on the port the runtime allocates.

    Construct it through ``proc.add_driver(ref, GrpcDriver, parameters)``; the runtime
    allocates the port named ``"grpc"`` and publishes the service record
    ``get_service("grpc")``. Construction is cheap: the server and its socket appear only
    in :meth:`run`, which returns soon after :meth:`stop`.

    Args:
        parameters: a :class:`GrpcDriverParameters` or a mapping of its fields.

    Example:
        >>> int(GrpcDriver({"max_workers": 8}).get_parameters().max_workers)
        8
    """

    parameters_class = GrpcDriverParameters

    def __init__(self, parameters: GrpcDriverParameters | Mapping[str, Any] | None = None) -> None:
        super().__init__(parameters)
        self._counters: Counter[str] = Counter()
        self._counters_lock = threading.Lock()
        self._restart = threading.Event()
        self._last_error: str | None = None
        self._bound: tuple[str, int] | None = None
        self.instance = secrets.token_hex(8)
        """This driver's id, in its ``"grpc"`` service record (``instance``)."""

    def resources_request(self) -> DriverResourcesRequest:
        """One port, named ``"grpc"``."""
        return DriverResourcesRequest(ports=["grpc"])

    def services(self, resources: DriverResources) -> list[dict[str, Any]]:
        """The ``"grpc"`` service record: where clients reach the server."""
        params = self.parameters_in_force()
        assert isinstance(params, GrpcDriverParameters)
        host = str(params.host)
        address = resources.host if host in ("0.0.0.0", "::", "") else host
        port = int(params.listen_port) or resources.ports["grpc"]
        return [{**service_record("grpc", port, address=address), "instance": self.instance}]

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        """Restart the server when an address or server setting changed; the rest applies to the next request."""
        if any(getattr(old, f) != getattr(new, f) for f in _RESTART_FIELDS):
            self._restart.set()

    def stop(self) -> None:
        """Ask the server to shut down; :meth:`run` returns once it has."""
        super().stop()
        self._restart.set()

    def stats(self) -> dict[str, Any]:
        """Counters: ``infer`` and ``stream_infer`` requests, ``grpc_<code>`` error answers, ``cancelled``,
        ``restarts`` of the server after a parameter change (``restarts_refused``: it could not bind)."""
        with self._counters_lock:
            counters: dict[str, Any] = dict(self._counters)
        if self._last_error is not None:
            counters["last_error"] = self._last_error
        return counters

    def _count(self, name: str) -> None:
        with self._counters_lock:
            self._counters[name] += 1

    def _params(self) -> GrpcDriverParameters:
        params = self.parameters_in_force()
        assert isinstance(params, GrpcDriverParameters)
        return params

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        """Serve until :meth:`stop`.

        Raises:
            DriverError: the port cannot be bound (names host and port).
        """
        from .grpc.service import InferenceServicer

        def pixels() -> int | None:
            value = self._params().max_image_pixels
            return None if value is None else int(value)

        def timeout() -> float | None:
            value = self._params().request_timeout
            return None if value is None else float(value)

        def api_key() -> str | None:
            value = self._params().api_key
            return None if value is None else str(value)

        servicer = InferenceServicer(
            inference, max_image_pixels=pixels, request_timeout=timeout, count=self._count, api_key=api_key,
            max_streams=lambda: int(self._params().max_workers) // 2,
        )
        params = self._params()
        server = self._start(servicer, params, resources)
        try:
            while not self.stopped.is_set():
                self._restart.wait()
                self._restart.clear()
                if self.stopped.is_set():
                    break
                wanted = self._params()
                server.stop(grace=2).wait(5)
                try:
                    server = self._start(servicer, wanted, resources)
                    params = wanted
                    self._count("restarts")
                except DriverError as exc:  # back where it was, parameters too
                    self._count("restarts_refused")
                    self._last_error = str(exc)
                    with self._parameters_lock:
                        self._parameters = params
                    server = self._start(servicer, params, resources)
        finally:
            server.stop(grace=2).wait(5)

    def _start(self, servicer: Any, params: GrpcDriverParameters, resources: DriverResources) -> Any:
        host = str(params.host)
        port = int(params.listen_port) or resources.ports["grpc"]
        size = int(params.max_message_bytes)
        server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=int(params.max_workers), thread_name_prefix="grpc-driver"),
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 0),  # a port another server holds is an error, not shared
            ],
        )
        server.add_generic_rpc_handlers((servicer.handler(),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            bound = 0
            reason = str(exc)
        else:
            reason = "the address cannot be bound"
        if not bound:
            server.stop(None)
            raise DriverError(
                f"GrpcDriver cannot listen on {address}: {reason} (port {port} in use, or {host!r} not an address of "
                "this machine); pick another listen_port (0: the runtime's), or a host such as 127.0.0.1 or 0.0.0.0"
            )
        server.start()
        self._bound = (host, port)
        return server
