"""ASGI middleware of the FastAPIDriver: counting every answer, and the checks made before any work.

The app the server runs is ``CountingMiddleware(GuardMiddleware(router))``:

- :class:`CountingMiddleware` counts each response under ``(method, route, status)``
  (refusals included) for ``GET /metrics``;
- :class:`GuardMiddleware` refuses a request before any work (wrong ``Host``, a foreign
  ``Origin`` on a request that changes something, no bearer token) and reads the
  request's deadline (``X-Request-Timeout``) into ``scope["rvai.timeout"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import security
from .errors import ErrorMapper, HTTPError, send_json, unprocessable

if TYPE_CHECKING:
    from .parameters import LiveState

__all__ = ["CountingMiddleware", "GuardMiddleware", "route_label", "TIMEOUT_KEY"]

TIMEOUT_KEY = "rvai.timeout"
"""The ASGI scope key of the request's deadline in seconds (``None``: the driver's ``request_timeout``)."""

_ROUTES = frozenset(
    ("/", "/health", "/ready", "/pipeline", "/predict", "/predict/batch", "/tasks", "/metrics", "/openapi.json", "/docs", "/redoc")
)


def route_label(path: str) -> str:
    """The route template of a request path, for a bounded ``route`` label (``other`` for unknown paths).

    Example:
        >>> route_label("/tasks/0a1b"), route_label("/predict"), route_label("/wp-admin")
        ('/tasks/{task_id}', '/predict', 'other')
        >>> route_label("/docs/assets/swagger-ui.css")
        '/docs/assets/{name}'
    """
    if path in _ROUTES:
        return path
    if path == "/v2" or path.startswith("/v2/"):
        from .oip import route_label as v2_label

        return v2_label(path)
    if path.startswith("/tasks/") and "/" not in path[len("/tasks/") :]:
        return "/tasks/{task_id}"
    if path.startswith("/docs/assets/") and "/" not in path[len("/docs/assets/") :]:
        return "/docs/assets/{name}"
    return "other"


class CountingMiddleware:
    """Counts each response's status under ``(method, route, status)`` in ``state.http_counts``."""

    def __init__(self, app: Any, state: LiveState) -> None:
        self.app = app
        self.counts = state.http_counts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counts = self.counts
        method, route = scope["method"], route_label(scope["path"])

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                key = (method, route, str(message["status"]))
                counts[key] = counts.get(key, 0) + 1
            await send(message)

        await self.app(scope, receive, counted)


class GuardMiddleware:
    """Refuses a request before any work, else passes it on with its deadline in the scope.

    - bound to a loopback address, a ``Host`` that is not a loopback name, the bound
      address or one of ``allowed_hosts`` is refused with 400 (DNS rebinding);
    - a request that changes something (not GET/HEAD/OPTIONS) with an ``Origin`` other
      than the server's own is refused with 403 (a cross-site form or page);
    - with ``api_key`` set, every route but ``/health`` and ``/v2/health/live`` needs the bearer token (401);
    - an ``X-Request-Timeout`` that is not a number of seconds > 0 is refused with 422.
    """

    def __init__(self, app: Any, state: LiveState, errors: ErrorMapper) -> None:
        self.app = app
        self.state = state
        self.errors = errors

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            scope[TIMEOUT_KEY] = self.check(scope["headers"], scope["method"], scope["path"])
        except HTTPError as exc:
            path = scope["path"]
            if path == "/v2" or path.startswith("/v2/"):  # Triton's and KServe's clients read {"error": "..."}
                from .oip.routes import error_answer

                await send_json(send, *error_answer(self.errors, exc, path))
                return
            await send_json(send, *self.errors.answer(exc, path))
            return
        await self.app(scope, receive, send)

    def check(self, headers: Sequence[tuple[bytes, bytes]], method: str, path: str) -> float | None:
        """The request's deadline (``X-Request-Timeout``), or ``None``.

        Raises:
            HTTPError: 400 (Host), 403 (Origin), 401 (bearer token) or 422 (deadline).
        """
        host = origin = authorization = timeout = None
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"authorization":
                authorization = value
            elif name == b"x-request-timeout" and timeout is None:
                timeout = value
        state = self.state
        parameters = state.parameters
        bound = state.bound_host
        if host is not None and security.is_loopback_host(bound):
            text = host.decode("latin-1")
            if not security.host_allowed(text, bound, parameters.allowed_hosts):
                raise HTTPError(
                    400,
                    "InvalidHost",
                    f"this server listens on {bound} and does not answer for the host {text!r} "
                    "(DNS rebinding protection); use http://127.0.0.1 or localhost, or list the name in the driver "
                    "parameter allowed_hosts",
                )
        if origin is not None and method not in ("GET", "HEAD", "OPTIONS"):
            text = origin.decode("latin-1")
            if not security.same_origin(text, (host or b"").decode("latin-1")):
                raise HTTPError(
                    403,
                    "CrossOriginRequest",
                    f"a {method} from the web page at {text!r} is refused: this server serves cross-origin pages no "
                    "requests that do work; call it from the server side, or from a page it serves",
                )
        key = parameters.api_key
        if key and path not in ("/health", "/v2/health/live"):
            given = authorization or b""
            if not security.bearer_matches(given, str(key)):
                message = "this server needs 'Authorization: Bearer <api_key>'" + (
                    "; the token given is wrong" if given else ""
                )
                raise HTTPError(401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
        return None if timeout is None else _seconds(timeout)


def _seconds(value: bytes) -> float:
    """An ``X-Request-Timeout`` header in seconds; a bad value is a 422."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise unprocessable(
            f"header X-Request-Timeout must be a number of seconds > 0, got {value.decode('latin-1')!r}",
            "headers.X-Request-Timeout",
        )
    return seconds
