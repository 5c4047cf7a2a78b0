"""Logs of the FastAPIDriver: an access line per request, and one record with traceback per failed request.

- :class:`AccessLogMiddleware` (the outermost ASGI layer) gives every request an id (the
  client's ``X-Request-ID`` when it sends a sane one, else a new one), returns it in the
  ``X-Request-ID`` response header (beside ``X-Rvai-Instance``, the server's id), and logs one line at INFO on ``rvai_sdk.http.access``
  when the response has started: method, route, status, duration, sid and request id, as
  the message and as ``extra`` fields (``--log-format json`` shows them as keys).
- :func:`log_failure` (called by the error mapping) logs a request that failed on the
  server's side (a cell raised, the deadline passed, the inference process is gone, a bug)
  once, on ``rvai_sdk.http.errors``, with the traceback (the cell's, from the process it ran
  in), the request id, the sid and the cell.

Nothing is formatted when the loggers are not enabled for the level (the default WARNING
leaves only the failures).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from contextvars import ContextVar
from typing import Any

from rvai_sdk.exc import CellError, DeadlineExceededError

from .middleware import route_label

__all__ = [
    "AccessLogMiddleware",
    "RequestLog",
    "current_request",
    "note_sid",
    "log_failure",
    "REQUEST_ID_HEADER",
    "INSTANCE_HEADER",
]

access_logger = logging.getLogger("rvai_sdk.http.access")
error_logger = logging.getLogger("rvai_sdk.http.errors")

REQUEST_ID_HEADER = "X-Request-ID"
"""The header a client may send its own request id in; every answer carries the id used."""

INSTANCE_HEADER = "X-Rvai-Instance"
"""The header every answer names the running driver's instance in (``FastAPIDriver.instance``)."""

_MAX_ID = 128


class RequestLog:
    """What the logs say about the request being served: its id and, once decoded, its sid."""

    __slots__ = ("id", "sid")

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.sid: str | None = None


_current: ContextVar[RequestLog | None] = ContextVar("rvai_http_request", default=None)


def current_request() -> RequestLog | None:
    """The request being served on this task (``None`` outside a request)."""
    return _current.get()


def note_sid(sid: str | None) -> None:
    """Record the request's sid for its access line (the first one noted wins: a batch names its first)."""
    request = _current.get()
    if request is not None and request.sid is None:
        request.sid = sid


_PREFIX = os.urandom(6).hex()
_numbers = itertools.count(1)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when sane, else this process's random prefix and a count (unique, and cheap)."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= _MAX_ID and text.isprintable():
                return text
            break
    return f"{_PREFIX}-{next(_numbers):x}"


class AccessLogMiddleware:
    """Gives each request an id (``X-Request-ID``) and logs an access line for it at INFO; every answer
    names the server's instance (``X-Rvai-Instance``).

    Args:
        app: the ASGI app it wraps.
        instance: the running driver's id.
    """

    def __init__(self, app: Any, instance: str = "") -> None:
        self.app = app
        self.instance = (b"x-rvai-instance", instance.encode("latin-1"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = RequestLog(_request_id(scope["headers"]))
        token = _current.set(request)
        logging_on = access_logger.isEnabledFor(logging.INFO)
        started = time.perf_counter() if logging_on else 0.0
        instance = self.instance

        async def logged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), instance, (b"x-request-id", request.id.encode("latin-1"))]
                if logging_on:
                    _access_line(scope, request, int(message["status"]), time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, logged)
        finally:
            _current.reset(token)


def _printable(sid: Any) -> Any:
    """A sid as the log line shows it: as it is, or quoted with its escapes when it holds a line break or
    another control character (a client's sid must not forge a log line)."""
    return sid if not isinstance(sid, str) or sid.isprintable() else repr(sid)


def _access_line(scope: dict[str, Any], request: RequestLog, status: int, seconds: float) -> None:
    method, route = scope["method"], route_label(scope["path"])
    duration_ms = round(seconds * 1000, 3)
    access_logger.info(
        "%s %s %d %.1f ms sid=%s request_id=%s",
        method,
        scope["path"] if route != "other" else route,
        status,
        duration_ms,
        _printable(request.sid),
        request.id,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "sid": request.sid,
            "request_id": request.id,
        },
    )


def log_failure(exc: BaseException, path: str, status: int) -> None:
    """Log a request that failed on the server's side once, with its traceback, request id, sid and cell.

    Args:
        exc: what failed it (a :class:`~rvai_sdk.exc.CellError` carries the cell's traceback
            from the process the cell ran in).
        path: the route that served it.
        status: the status it was answered with.
    """
    level = logging.WARNING if isinstance(exc, DeadlineExceededError) else logging.ERROR
    if not error_logger.isEnabledFor(level):
        return
    request = _current.get()
    cell = getattr(exc, "ref", None)
    sid = getattr(exc, "sid", None) if isinstance(exc, (CellError, DeadlineExceededError)) else None
    if sid is None and request is not None:
        sid = request.sid
    request_id = request.id if request is not None else None
    first = str(exc).split("\n", 1)[0]
    if not isinstance(exc, CellError):  # a CellError's message names the cell, the sid and the error's type
        first = f"{type(exc).__name__}: {first}"
    where = f" in cell {cell!r}" if cell and not isinstance(exc, CellError) else ""
    record = error_logger.makeRecord(
        error_logger.name,
        level,
        __file__,
        0,
        "request to %s failed (%d)%s: %s [sid=%s request_id=%s]",
        (path, status, where, first, _printable(sid), request_id),
        None,
        extra={"request_id": request_id, "sid": sid, "cell": cell, "route": route_label(path), "status": status},
    )
    remote = getattr(exc, "remote_traceback", "")
    if remote:
        record.exc_text = str(remote).rstrip()
    elif exc.__traceback__ is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    error_logger.handle(record)
