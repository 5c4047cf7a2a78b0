"""The ``inference.GRPCInferenceService`` servicer of one running :class:`GrpcDriver`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rvai_sdk._compat import require
from rvai_sdk.exc import CellError, DeadlineExceededError, InputValidationError, ProcessError, StateRestoreError, UnknownSidError
from rvai_sdk.extensions.drivers._v2 import DATATYPES, V2Codec, V2Error, V2Request

from .codec import check_model, decode_request, encode_response

if TYPE_CHECKING:
    import grpc

    from rvai_sdk.drivers import RestrictedInferenceProcess

else:
    grpc = require("grpc", extra="grpc")

from .proto import rvai_sdk_inference_pb2 as pb

__all__ = ["InferenceServicer", "SERVICE", "status_of"]

SERVICE = "inference.GRPCInferenceService"
"""The protocol's service name: the methods answer at ``/inference.GRPCInferenceService/<Method>``."""

_UNARY: dict[str, Any] = {
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelInfer": pb.ModelInferRequest,
    "ModelConfig": pb.ModelConfigRequest,
}

log = logging.getLogger("rvai_sdk.extensions.drivers.grpc")

_POLL = 0.5
"""Seconds between checks that the client still waits, while a request runs."""

_NO_DEADLINE = 365 * 86400.0
"""gRPC reports a call without a deadline as one centuries away: from a year on, it counts as none."""


def status_of(exc: BaseException, pipeline: str) -> tuple[Any, str]:
    """The gRPC status code and message that answer ``exc`` (see the package docstring's table).

    Example:
        >>> status_of(V2Error(404, "no model 'x'"), "cam")[0].name
        'NOT_FOUND'
    """
    code = grpc.StatusCode
    if isinstance(exc, V2Error):
        return {404: code.NOT_FOUND, 413: code.RESOURCE_EXHAUSTED}.get(exc.status, code.INVALID_ARGUMENT), str(exc)
    if isinstance(exc, InputValidationError):
        return code.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, DeadlineExceededError):
        return code.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, CellError):
        message = str(exc.args[0]) if exc.args else exc.cause_type
        return code.INTERNAL, message.split("\n\nOriginal traceback:", 1)[0]
    if isinstance(exc, StateRestoreError):  # not UNAVAILABLE: retrying cannot help
        return code.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, ProcessError):
        return code.UNAVAILABLE, f"the inference process of pipeline {pipeline!r} cannot be reached: {exc}; retry once ServerReady answers true"
    return code.INTERNAL, f"{type(exc).__name__} in the gRPC driver"


class _Undecodable:
    """A message that is not the method's protobuf (what the deserializer hands over instead of raising:
    gRPC would answer its own ``INTERNAL "Exception deserializing request!"``)."""

    def __init__(self, kind: str, error: BaseException) -> None:
        self.kind = kind
        self.error = error


def _parser(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # protobuf's DecodeError: truncated, garbage, or a string field that is not UTF-8
            return _Undecodable(message_class.__name__, exc)

    return parse


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()  # type: ignore[no-any-return]


_CONFIG_TYPES = {name: getattr(pb, f"TYPE_{name}") for name in DATATYPES} | {"BYTES": pb.TYPE_STRING}


class InferenceServicer:
    """The protocol's methods for one pipeline: the model is the pipeline (its name, version ``"1"``).

    Args:
        inference: the inference process, as the driver sees it.
        max_image_pixels: the most pixels of an image input (``None``: ``Image.max_pixels``).
        request_timeout: the deadline of a request that brings none (``None``: the inference's).
        count: counts an event by name (the driver's counters).
        api_key: the bearer token every method but ``ServerLive`` needs (``None``: none).
    """

    def __init__(
        self,
        inference: RestrictedInferenceProcess,
        *,
        max_image_pixels: Callable[[], int | None],
        request_timeout: Callable[[], float | None],
        count: Callable[[str], None],
        api_key: Callable[[], str | None] = lambda: None,
        max_streams: Callable[[], int] = lambda: 32,
    ) -> None:
        self.inference = inference
        self._max_streams = max_streams
        self._streams = 0  # ModelStreamInfer calls open now, each holding one of the server's threads
        self._streams_lock = threading.Lock()
        self.codec = V2Codec(inference.pipeline)
        self._pixels = max_image_pixels
        self._timeout = request_timeout
        self._count = count
        self._api_key = api_key

    def handler(self) -> Any:
        """The server's handler for :data:`SERVICE` (registered under the protocol's name, see the proto's header)."""
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._authorized(name), request_deserializer=_parser(request), response_serializer=_serialize
            )
            for name, request in _UNARY.items()
        }
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self._authorized("ModelStreamInfer"), request_deserializer=_parser(pb.ModelInferRequest),
            response_serializer=_serialize,
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _authorized(self, name: str) -> Callable[[Any, Any], Any]:
        """Method ``name``, behind the bearer token when ``api_key`` is set (``ServerLive`` is always open)."""
        method: Callable[[Any, Any], Any] = getattr(self, name)
        if name == "ServerLive":
            return method

        def call(request: Any, context: Any) -> Any:
            key = self._api_key()
            if key:
                sent = dict(context.invocation_metadata()).get("authorization", "")
                scheme, _, token = str(sent).partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                    self._count("grpc_unauthenticated")
                    context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        f"{name} needs the metadata 'authorization: Bearer <api_key>' (tritonclient.grpc: "
                        "headers={'authorization': 'Bearer ...'}, the key in lower case); only ServerLive is open without it",
                    )
            if isinstance(request, _Undecodable):  # after the key: an unauthenticated caller learns nothing more
                self._refuse_undecodable(request, context)
            return method(request, context)

        return call

    # -- readiness and metadata -------------------------------------------------------------------

    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:  # noqa: N802 (the protocol's names)
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=self._ready())

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        try:
            check_model(self.codec, request.name, request.version)
        except V2Error:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self._ready())

    def _ready(self) -> bool:
        try:
            return bool(self.inference.is_ready())
        except Exception:
            return False

    def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:  # noqa: N802
        meta = self.codec.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:  # noqa: N802
        self._guard(context, check_model, self.codec, request.name, request.version)
        meta = self.codec.model_metadata()

        def tensors(items: list[dict[str, Any]]) -> list[Any]:
            return [pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in items]

        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=tensors(meta["inputs"]), outputs=tensors(meta["outputs"]),
        )

    def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:  # noqa: N802
        self._guard(context, check_model, self.codec, request.name, request.version)
        codec = self.codec
        config = pb.ModelConfig(
            name=codec.name, platform="rvai_sdk", backend="rvai_sdk", max_batch_size=0,
            input=[pb.ModelInput(name=r, data_type=_CONFIG_TYPES[p.datatype], dims=p.shape) for r, p in codec.inputs.items()],
            output=[pb.ModelOutput(name=r, data_type=_CONFIG_TYPES[p.datatype], dims=p.shape) for r, p in codec.outputs.items()],
        )
        return pb.ModelConfigResponse(config=config)

    # -- inference ---------------------------------------------------------------------------------

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        self._count("infer")
        response: pb.ModelInferResponse = self._guard(context, self._infer, request, context)
        return response

    def ModelStreamInfer(self, requests: Iterator[pb.ModelInferRequest], context: Any) -> Iterator[pb.ModelStreamInferResponse]:  # noqa: N802
        """Each request of the stream in turn (so a sequence keeps its order); a failed one answers its error message.

        A stream holds one of the server's threads while it is open: beyond ``max_streams`` open at once it
        is refused (``RESOURCE_EXHAUSTED``), so idle streams never take the threads health checks need.
        """
        limit = self._max_streams()
        with self._streams_lock:
            full = self._streams >= limit
            if not full:
                self._streams += 1
        if full:
            self._count("streams_refused")
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{limit} ModelStreamInfer streams are open, the most this server keeps (half its max_workers threads); "
                "close an idle stream, send single requests with ModelInfer, or raise max_workers",
            )
        try:
            yield from self._stream(requests, context)
        finally:
            with self._streams_lock:
                self._streams -= 1

    def _stream(self, requests: Iterator[pb.ModelInferRequest], context: Any) -> Iterator[pb.ModelStreamInferResponse]:
        for request in requests:
            if isinstance(request, _Undecodable):  # that message answers its error; the stream goes on
                self._count("grpc_invalid_argument")
                yield pb.ModelStreamInferResponse(error_message=self._undecodable_message(request))
                continue
            self._count("stream_infer")
            try:
                response = self._infer(request, context)
            except Exception as exc:
                _, message = self._status(exc)
                yield pb.ModelStreamInferResponse(error_message=message)
            else:
                yield pb.ModelStreamInferResponse(infer_response=response)

    def _infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        inference = self.inference
        decoded = decode_request(
            self.codec, request, max_sid_length=inference.max_sid_length, max_image_pixels=self._pixels()
        )
        timeout = decoded.timeout
        remaining = context.time_remaining()
        if remaining is not None and remaining < _NO_DEADLINE:  # the client's gRPC deadline
            if remaining <= 0:
                raise DeadlineExceededError("the request's gRPC deadline passed before it was sent to the pipeline", sid=decoded.sid)
            timeout = remaining if timeout is None else min(timeout, remaining)
        if timeout is None:
            timeout = self._timeout()
        if decoded.start and decoded.sid is not None:
            self._drop(decoded.sid)
        try:
            outputs = self._wait(inference.submit(decoded.inputs, decoded.sid, timeout=timeout), decoded, context)
        finally:
            if decoded.end and decoded.sid is not None:
                with contextlib.suppress(ProcessError):  # unreachable: its state is gone with it; answer the request
                    self._drop(decoded.sid)
        response: pb.ModelInferResponse = encode_response(self.codec, decoded, outputs, pb)
        return response

    def _wait(self, future: concurrent.futures.Future[dict[str, Any]], decoded: V2Request, context: Any) -> dict[str, Any]:
        """The request's outputs; gives up (and cancels it) once the client stopped waiting."""
        while True:  # bounded: the request's deadline fails the future, a dead process fails it at once
            done, _ = concurrent.futures.wait([future], timeout=_POLL)
            if done:
                return future.result()
            if not context.is_active():
                future.cancel()
                self._count("cancelled")
                raise DeadlineExceededError("the client stopped waiting for the request (cancelled or past its deadline)", sid=decoded.sid)

    def _drop(self, sid: str) -> None:
        try:
            self.inference.drop_state(sid)
        except UnknownSidError:
            pass

    # -- errors ------------------------------------------------------------------------------------

    def _refuse_undecodable(self, request: _Undecodable, context: Any) -> None:
        self._count("grpc_invalid_argument")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, self._undecodable_message(request))

    @staticmethod
    def _undecodable_message(request: _Undecodable) -> str:
        return (
            f"the message is not a valid {request.kind} ({type(request.error).__name__}: {request.error}); "
            "send it with a generated client of the protocol's service.proto"
        )

    def _status(self, exc: BaseException) -> tuple[Any, str]:
        code, message = status_of(exc, self.codec.name)
        self._count(f"grpc_{code.name.lower()}")
        if code is grpc.StatusCode.INTERNAL and not isinstance(exc, CellError):
            log.error("internal error in the gRPC driver", exc_info=exc)
        return code, message

    def _guard(self, context: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or the call aborted with the status code and message of its exception."""
        try:
            return fn(*args)
        except Exception as exc:
            code, message = self._status(exc)
        context.abort(code, message)  # raises: the answer is that status
        raise AssertionError("unreachable")  # pragma: no cover


