"""Errors as HTTP answers: the one mapping from an exception to a status and a JSON error body.

Every route, the ``/predict`` endpoint, the request checks and the tasks turn a failure
into an answer here, and nowhere else:

====================================  ======  ==========================================
exception                             status  ``error.type``
====================================  ======  ==========================================
:class:`HTTPError` (raised by routes)  its own  its own (413, 415, 401, 404, 429...)
``InputValidationError``              422     ``InputValidationError``, ``field``
``DeadlineExceededError``             504     ``DeadlineExceededError``, ``cell``
``CellError``                         500     the cell's exception type, ``cell``
``StateRestoreError``                 500     ``StateRestoreError``, ``sid`` (retrying cannot help)
``ProcessError``                      503     its type; ``Retry-After: 1``
starlette ``HTTPException``           its own ``NotFound``, ``MethodNotAllowed``...
anything else (a bug)                 500     ``InternalServerError``, no details
====================================  ======  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rvai_sdk._compat import require
from rvai_sdk.exc import CellError, DeadlineExceededError, InputValidationError, ProcessError, StateRestoreError

from .._v2_types import json_bytes, json_type

if TYPE_CHECKING:
    import fastapi
    import starlette.exceptions as starlette_exceptions

    from .parameters import LiveState
else:
    fastapi = require("fastapi", extra="fastapi")
    starlette_exceptions = require("starlette.exceptions", extra="fastapi")

__all__ = ["HTTPError", "ErrorMapper", "unprocessable", "json_type", "json_bytes", "json_response", "send_json"]

Headers = list[tuple[bytes, bytes]]


class HTTPError(Exception):
    """An error answer raised inside the driver: its status, the ``error`` object and extra headers."""

    def __init__(self, status: int, type_: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {"type": type_, "message": message, **extra}
        self.headers = dict(headers or {})


def unprocessable(message: str, field: str | None) -> HTTPError:
    """A 422 ``InputValidationError`` naming the offending ``field`` path."""
    return HTTPError(422, "InputValidationError", message, field=field)




def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> fastapi.Response:
    """A JSON answer for a FastAPI route."""
    return fastapi.Response(content=json_bytes(obj), status_code=status, media_type="application/json", headers=headers)


async def send_json(send: Any, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send a whole JSON answer on an ASGI ``send``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ErrorMapper:
    """The one mapping from an exception to an HTTP answer, for one running driver.

    Args:
        state: the driver's live state (``include_traceback``; the ``http_<status>`` and
            ``internal_errors`` counters).
        pipeline: the pipeline's name, for the 503 message.
    """

    def __init__(self, state: LiveState, pipeline: str) -> None:
        self.state = state
        self.pipeline = pipeline

    def map(self, exc: BaseException, path: str = "") -> HTTPError:
        """The :class:`HTTPError` that answers ``exc`` (raised while serving ``path``); a failure on the
        server's side (5xx) is logged once, with its traceback (:func:`~.logs.log_failure`)."""
        error = self._map(exc, path)
        if error.status >= 500 and not isinstance(exc, HTTPError):
            from .logs import log_failure

            log_failure(exc, path, error.status)
        return error

    def _map(self, exc: BaseException, path: str) -> HTTPError:
        if isinstance(exc, HTTPError):
            return exc
        if isinstance(exc, InputValidationError):
            field = exc.field if exc.field in (None, "sid") else f"inputs.{exc.field}"
            return unprocessable(str(exc), field)
        if isinstance(exc, DeadlineExceededError):
            return HTTPError(504, "DeadlineExceededError", str(exc), cell=exc.ref)
        if isinstance(exc, CellError):
            message = str(exc.args[0]) if exc.args else exc.cause_type
            # a CellError that crossed a process boundary carries its traceback in the message too
            message = message.split("\n\nOriginal traceback:", 1)[0]
            extra: dict[str, Any] = {"cell": exc.ref}
            if self.state.parameters.include_traceback and exc.remote_traceback:
                extra["traceback"] = exc.remote_traceback
            return HTTPError(500, exc.cause_type or "CellError", message, **extra)
        if isinstance(exc, StateRestoreError):
            return HTTPError(500, "StateRestoreError", str(exc), sid=exc.sid)
        if isinstance(exc, ProcessError):
            return HTTPError(
                503,
                type(exc).__name__,
                f"the inference process of pipeline {self.pipeline!r} cannot be reached: {exc}; "
                "retry once GET /ready answers 200",
                headers={"Retry-After": "1"},
            )
        if isinstance(exc, starlette_exceptions.HTTPException):
            status = int(exc.status_code)
            phrase = {404: "NotFound", 405: "MethodNotAllowed"}.get(status, "HTTPError")
            message = str(exc.detail)
            if status == 404:
                message = f"no route {path!r}; see GET /openapi.json or GET / for the routes"
            return HTTPError(status, phrase, message, headers=exc.headers)
        self.state.count("internal_errors")  # a bug: answer 500 without details, keep serving
        return HTTPError(500, "InternalServerError", f"{type(exc).__name__} in the HTTP driver")

    def answer(self, exc: BaseException, path: str = "") -> tuple[int, bytes, Headers]:
        """Status, JSON body and extra headers of the answer to ``exc``; counts ``http_<status>``."""
        error = self.map(exc, path)
        self.state.count(f"http_{error.status}")
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
        return error.status, json_bytes({"error": error.error}), headers

    def response(self, exc: BaseException, path: str = "") -> fastapi.Response:
        """:meth:`answer` as a FastAPI response."""
        status, body, headers = self.answer(exc, path)
        response = fastapi.Response(content=body, status_code=status, media_type="application/json")
        for name, value in headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response
