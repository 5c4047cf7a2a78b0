"""The ``/v2`` routes of one running FastAPIDriver (see the package docstring), mounted beside its own routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rvai_sdk._compat import require
from rvai_sdk.exc import ProcessError, UnknownSidError

from ..errors import ErrorMapper, HTTPError, json_bytes
from ..logs import note_sid
from ..middleware import TIMEOUT_KEY
from ..predict import OFF_LOOP_BYTES, read_body
from .codec import VERSION, V2Codec, V2Request

if TYPE_CHECKING:
    import fastapi
    from fastapi import FastAPI, Request, Response

    from ..service import Service
else:
    fastapi = require("fastapi", extra="fastapi")
    FastAPI, Request, Response = fastapi.FastAPI, fastapi.Request, fastapi.Response

__all__ = ["V2Routes", "mount", "route_label", "v2_answer", "is_v2", "error_answer"]


# -- routes ---------------------------------------------------------------------------------------------

_MODEL = "/v2/models/{name}"
_VERSIONED = "/v2/models/{name}/versions/{version}"


def route_label(path: str) -> str:
    """The route template of a ``/v2`` path, for a bounded ``route`` label (``other`` for unknown ones).

    Example:
        >>> route_label("/v2/models/cam/infer"), route_label("/v2/models/cam/versions/1/ready"), route_label("/v2/x")
        ('/v2/models/{name}/infer', '/v2/models/{name}/versions/{version}/ready', 'other')
    """
    parts = path.rstrip("/").split("/")
    if path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        return path
    if len(parts) >= 4 and parts[:3] == ["", "v2", "models"] and parts[3]:
        rest = parts[4:]
        template = _MODEL
        if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
            template, rest = _VERSIONED, rest[2:]
        if not rest:
            return template
        if len(rest) == 1 and rest[0] in ("ready", "config", "infer"):
            return f"{template}/{rest[0]}"
    return "other"


def is_v2(path: str) -> bool:
    """Whether ``path`` is one of the protocol's (its refusals answer in the protocol's error form).

    Example:
        >>> is_v2("/v2"), is_v2("/v2/health/live"), is_v2("/v20"), is_v2("/predict")
        (True, True, False, False)
    """
    return path == "/v2" or path.startswith("/v2/")


def error_answer(errors: ErrorMapper, exc: BaseException, path: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The protocol's error answer ``{"error": "<message>"}`` to ``exc``, through the driver's one mapping.

    The status is the mapping's, but 400 where the driver answers 422 (the protocol's
    status for a bad request); ``http_<status>`` is counted. A cell's failure names the cell
    in its message already.
    """
    error = errors.map(exc, path)
    status = 400 if error.status == 422 else error.status
    errors.state.count(f"http_{status}")
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    return status, json_bytes({"error": str(error.error.get("message", ""))}), headers


def v2_answer(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer of a ``/v2`` route."""
    return fastapi.Response(content=json_bytes(obj), status_code=status, media_type="application/json", headers=headers)


class V2Routes:
    """The ``/v2`` routes of one running driver (see the module docstring).

    Args:
        service: the driver's app and what its routes share.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.codec = V2Codec(service.inference.pipeline)

    def error(self, exc: BaseException, path: str) -> Response:
        """The protocol's error answer to ``exc`` (see :func:`error_answer`)."""
        status, body, headers = error_answer(self.service.errors, exc, path)
        response = fastapi.Response(content=body, status_code=status, media_type="application/json")
        for name, value in headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response

    def _check(self, request: Request) -> None:
        """404 for another model or version, or when the protocol is off."""
        service = self.service
        if not bool(service.state.parameters.open_inference_protocol):
            raise HTTPError(
                404, "NotFound", "the Open Inference Protocol is off on this server; set the FastAPIDriver parameter "
                "open_inference_protocol to True"
            )
        name = request.path_params.get("name")
        if name is not None and name != self.codec.name:
            raise HTTPError(404, "NotFound", f"no model {name!r}; this server serves the model {self.codec.name!r}")
        version = request.path_params.get("version")
        if version is not None and version != VERSION:
            raise HTTPError(404, "NotFound", f"model {self.codec.name!r} has no version {version!r}; its one version is {VERSION!r}")

    def mount(self, app: FastAPI) -> None:
        """Add the ``/v2`` routes to ``app`` (left out of the OpenAPI document: the protocol documents them)."""
        codec = self.codec
        service = self.service

        def route(path: str, endpoint: Any, method: str) -> None:
            async def guarded(request: Request) -> Response:
                try:
                    self._check(request)
                    return await endpoint(request)  # type: ignore[no-any-return]
                except Exception as exc:
                    return self.error(exc, request.url.path)

            app.add_api_route(path, guarded, methods=[method], response_model=None, include_in_schema=False)

        async def server_metadata(request: Request) -> Response:
            return v2_answer(200, codec.server_metadata())

        async def live(request: Request) -> Response:
            return v2_answer(200, {"live": True})

        async def ready(request: Request) -> Response:
            try:  # may try to connect: off the event loop
                ok = bool(await service.dispatcher.offload(service.inference.is_ready))
            except Exception:
                ok = False
            return v2_answer(200 if ok else 400, {"ready": ok})

        async def model_metadata(request: Request) -> Response:
            return v2_answer(200, codec.model_metadata())

        async def model_config(request: Request) -> Response:
            return v2_answer(200, codec.model_config())

        async def unknown(request: Request) -> Response:
            raise HTTPError(404, "NotFound", f"no route {request.method} {request.url.path!r} in the Open Inference Protocol")

        route("/v2", server_metadata, "GET")
        route("/v2/health/live", live, "GET")
        route("/v2/health/ready", ready, "GET")
        for base in (_MODEL, _VERSIONED):
            route(base, model_metadata, "GET")
            route(f"{base}/ready", ready, "GET")
            route(f"{base}/config", model_config, "GET")
            route(f"{base}/infer", self.infer, "POST")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            route("/v2/{rest:path}", unknown, method)

    async def infer(self, request: Request) -> Response:
        """``POST /v2/models/{name}/infer``: decode, run the pipeline, answer the requested outputs."""
        service = self.service
        parameters = service.state.parameters
        declared = request.headers.get("content-length", "")
        limit = int(parameters.max_body_bytes)
        body = await read_body(request.receive, int(declared) if declared.isdigit() else -1, limit)
        service.state.count("v2_infer")
        header_length = request.headers.get("inference-header-content-length")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "deflate"):
            raise HTTPError(
                415, "UnsupportedMediaType", f"Content-Encoding {encoding!r} is not taken; send gzip, deflate or none"
            )
        sid_limit, pixels = int(parameters.max_sid_length), service.pixel_limit()
        codec = self.codec

        def parse() -> V2Request:
            content = body if encoding == "identity" else inflate(body, encoding, limit)
            return codec.request(content, header_length, max_sid_length=sid_limit, max_image_pixels=pixels)

        large = len(body) > OFF_LOOP_BYTES or encoding != "identity"
        decoded = await service.dispatcher.offload(parse) if large else parse()  # big bodies: off the event loop
        note_sid(decoded.sid)  # for the access log line
        if decoded.start and decoded.sid is not None:
            await service.dispatcher.offload(self._drop, decoded.sid)
        timeout = decoded.timeout if decoded.timeout is not None else service.timeout(request.scope.get(TIMEOUT_KEY))
        try:
            if large:
                submit = functools.partial(service.inference.submit, timeout=timeout)
                future = await service.dispatcher.offload(submit, decoded.inputs, decoded.sid)
            else:
                future = service.inference.submit(decoded.inputs, decoded.sid, timeout=timeout)
            outputs = await asyncio.wrap_future(future)
        finally:
            if decoded.end and decoded.sid is not None:
                with contextlib.suppress(ProcessError):  # unreachable: its state is gone with it; answer the request
                    await service.dispatcher.offload(self._drop, decoded.sid)
        arrays = any(isinstance(v, np.ndarray) for v in outputs.values())
        if arrays:
            content, head = await service.dispatcher.offload(codec.response, decoded, outputs)
        else:
            content, head = codec.response(decoded, outputs)
        if head is None:
            return fastapi.Response(content=content, media_type="application/json")
        return fastapi.Response(
            content=content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(head)},
        )

    def _drop(self, sid: str) -> None:
        """Forget ``sid``'s state (a sequence that starts or ends); none kept is fine."""
        try:
            self.service.inference.drop_state(sid)
        except UnknownSidError:
            pass


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A ``gzip`` or ``deflate`` (zlib) request body, decompressed to at most ``limit`` bytes.

    Raises:
        HTTPError: 413 past ``limit`` (a small body cannot become gigabytes), 400 when it is not
            that encoding's data or is cut off.

    Example:
        >>> import zlib
        >>> inflate(zlib.compress(b"{}"), "deflate", 10)
        b'{}'
    """
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        content = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, "InvalidInput", f"the body is not {encoding} data: {exc}") from exc
    if len(content) > limit or inflater.unconsumed_tail:
        raise HTTPError(413, "PayloadTooLarge", f"the {encoding} body inflates past {limit} bytes, the most this server takes")
    if not inflater.eof:
        raise HTTPError(400, "InvalidInput", f"the {encoding} body is cut off")
    return content


def mount(service: Service, app: FastAPI) -> V2Routes:
    """Add the Open Inference Protocol's ``/v2`` routes of ``service`` to ``app``."""
    routes = V2Routes(service)
    routes.mount(app)
    return routes
