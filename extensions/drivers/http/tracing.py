"""The HTTP request's span: the outermost ASGI layer of a FastAPIDriver while tracing is on.

:class:`TracingMiddleware` wraps the app only when the driver starts in a traced process
(:func:`rvai_sdk.tracing.configure_tracing`), so an untraced server runs without it. Each
HTTP request gets one SERVER span named ``METHOD ROUTE`` (``POST /predict``), a child of
the caller's W3C ``traceparent`` header when one is sent; the span is current while the
request is served, so ``rvai.predict`` and the rest of the request's spans are its children.
Its ``rvai.request_id`` attribute is the request id of the access log line.
"""

from __future__ import annotations

from typing import Any

from rvai_sdk import _tracing

from .middleware import route_label

__all__ = ["TracingMiddleware"]


class TracingMiddleware:
    """One span per HTTP request, honouring an incoming ``traceparent`` (see the module docstring).

    Args:
        app: the ASGI app it wraps.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        tracer = _tracing.TRACER
        if scope["type"] != "http" or tracer is None:
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        traceparent = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
                break
        method, route = scope["method"], route_label(scope["path"])
        attributes: dict[str, Any] = {"http.request.method": method, "http.route": route, "url.path": scope["path"]}
        span = tracer.start_span(
            f"{method} {route}", context=_tracing.extract(traceparent), kind=SpanKind.SERVER, attributes=attributes
        )
        token = context.attach(trace.set_span_in_context(span))

        async def traced(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":  # the access log's request id (set by AccessLogMiddleware, inside)
                        span.set_attribute("rvai.request_id", value.decode("latin-1"))
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        try:
            await self.app(scope, receive, traced)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            context.detach(token)
            span.end()
