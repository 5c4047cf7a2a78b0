"""``POST /predict``: the one implementation, as a lean ASGI endpoint.

It takes a JSON body (``{"inputs": ..., "sid": ...}``, sid also from ``X-State-Id``) or a
``multipart/form-data`` body (one part per input: files for images, JSON text for the
rest), decodes and validates the inputs once (:class:`~.codec.Codec`), runs them through
the :class:`~.dispatch.Dispatcher` and answers ``{"outputs": ..., "sid": ...}``; every failure
is answered by the one mapping (:class:`~.errors.ErrorMapper`). The router sends
``POST /predict`` here without FastAPI's routing and dependency machinery (which costs
about as much as the request itself); FastAPI serves only its OpenAPI entry and the 405
for other methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rvai_sdk import types as rtypes
from rvai_sdk._compat import require
from rvai_sdk.exc import InputValidationError

from . import security
from .codec import check_sid, form_value
from .errors import HTTPError, json_bytes, send_json, unprocessable
from .middleware import TIMEOUT_KEY

if TYPE_CHECKING:
    import starlette.requests as starlette_requests

    from .service import Service
else:
    starlette_requests = require("starlette.requests", extra="fastapi")

__all__ = ["PredictEndpoint", "read_body", "OFF_LOOP_BYTES"]

OFF_LOOP_BYTES = 64 * 1024
"""Request bodies larger than this are parsed and decoded on a worker thread, not the event loop."""


def _too_large(size: int | str, limit: int, declared: bool) -> HTTPError:
    if declared:
        return HTTPError(413, "PayloadTooLarge", f"the body has {size} bytes; this server takes at most {limit}")
    return HTTPError(413, "PayloadTooLarge", f"the body exceeds {limit} bytes, the most this server takes")


async def read_body(receive: Any, declared: int, limit: int) -> bytes:
    """The whole request body from an ASGI ``receive``, refusing more than ``limit`` bytes with 413.

    Args:
        receive: the ASGI ``receive``.
        declared: the ``Content-Length`` header (``-1`` when absent or not a number).
        limit: ``max_body_bytes``.
    """
    if declared > limit:
        raise _too_large(declared, limit, declared=True)
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, declared=False)
        chunks.append(chunk)
    if size > limit:
        raise _too_large(size, limit, declared=False)
    return b"".join(chunks)


class PredictEndpoint:
    """The ASGI endpoint of ``POST /predict`` (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        service = self.service
        try:
            body = json_bytes(await self.predict(scope, receive))
        except Exception as exc:
            await send_json(send, *service.errors.answer(exc, scope["path"]))
            return
        await send_json(send, 200, body)

    async def predict(self, scope: dict[str, Any], receive: Any) -> dict[str, Any]:
        """The answer's JSON object.

        Raises:
            Exception: anything the error mapping answers (413, 415, 422, 500, 503, 504...).
        """
        service = self.service
        parameters = service.state.parameters
        content_type = b""
        declared = -1
        header_sid: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else -1
            elif name == b"x-state-id":
                header_sid = value.decode("latin-1")
        timeout = service.timeout(scope.get(TIMEOUT_KEY))
        limit = int(parameters.max_body_bytes)
        if content_type.startswith(b"multipart/form-data"):
            service.state.count("predict")
            body = await read_body(receive, declared, limit)
            inputs, sid = await self._multipart(scope, body, header_sid)
            return {"outputs": await service.dispatcher.run(inputs, sid, timeout), "sid": sid}
        if not security.is_json_media_type(content_type):
            raise unsupported_media_type(content_type)
        body = await read_body(receive, declared, limit)
        service.state.count("predict")
        sid_limit = int(parameters.max_sid_length)
        pixels = service.pixel_limit()

        def parse() -> tuple[dict[str, Any], str | None]:
            return service.codec.parse_body(body, header_sid, max_sid_length=sid_limit, max_image_pixels=pixels)

        if len(body) > OFF_LOOP_BYTES:  # big bodies (images): parsed, decoded and submitted off the event loop
            outputs, sid = await service.dispatcher.run_parsed(parse, timeout)
        else:
            inputs, sid = parse()
            outputs = await service.dispatcher.run(inputs, sid, timeout)
        return {"outputs": outputs, "sid": sid}

    async def _multipart(self, scope: dict[str, Any], body: bytes, header_sid: str | None) -> tuple[dict[str, Any], str | None]:
        """Typed inputs and sid from a ``multipart/form-data`` body (422 naming the part)."""
        service = self.service
        codec = service.codec

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        request = starlette_requests.Request(scope, replay)
        try:
            form = await request.form(max_part_size=int(service.state.parameters.max_body_bytes))
        except Exception as exc:  # malformed multipart
            raise unprocessable(f"the multipart body cannot be parsed: {exc}", None) from exc
        try:
            inputs: dict[str, Any] = {}
            sid, sid_field = header_sid, "X-State-Id"
            for key, value in form.multi_items():
                if key == "sid":
                    if not isinstance(value, str):
                        raise unprocessable("sid must be a text field", "sid")
                    sid, sid_field = value, "sid"
                    continue
                if key not in codec.inputs:
                    inputs[key] = None  # decode() names it as unknown
                    continue
                if isinstance(value, str):
                    inputs[key] = form_value(value)
                    continue
                data = await value.read()
                if key not in codec.image_inputs:
                    inputs[key] = form_value(data.decode("utf-8", "replace"))
                    continue
                inputs[key] = self._image(key, data)
        finally:
            await form.close()
        check_sid(sid, sid_field, int(service.state.parameters.max_sid_length))
        return codec.decode(inputs), sid

    def _image(self, key: str, data: bytes) -> Any:
        try:
            with rtypes.Image.pixel_limit(self.service.pixel_limit()):
                return rtypes.Image.from_bytes(data)
        except InputValidationError as exc:
            raise unprocessable(f"input {key!r}: the uploaded file is not an image: {exc}", f"inputs.{key}") from exc
        except Exception as exc:
            raise unprocessable(
                f"input {key!r}: the uploaded file is not an image: {type(exc).__name__}: {exc}", f"inputs.{key}"
            ) from exc


def unsupported_media_type(content_type: bytes) -> HTTPError:
    """415: a route that takes JSON got another content type (a browser sends no JSON cross-origin without asking first)."""
    given = content_type.decode("latin-1") or "none"
    return HTTPError(
        415,
        "UnsupportedMediaType",
        f"this route takes a JSON body with 'Content-Type: application/json', got content type {given!r}",
    )
