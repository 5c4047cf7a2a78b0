"""ASGI middleware of the FastAPIDriver that times each request for ``GET /metrics``.

:class:`LatencyMiddleware` is the outermost layer of the app: a request's duration
runs from when the server hands it over to when the app has sent its last byte, and
is counted in a :class:`~rvai_sdk.drivers.metrics.LatencyHistogram` under its method
and route template (:func:`~.middleware.route_label`, so unknown paths share ``other``).
"""

from __future__ import annotations

import time
from typing import Any

from rvai_sdk.drivers.metrics import LatencyHistogram

from .middleware import route_label

__all__ = ["LatencyMiddleware"]


class LatencyMiddleware:
    """Counts the duration of each HTTP request in ``histogram`` by ``(method, route)``.

    Args:
        app: the ASGI app it wraps.
        histogram: where the durations go (read by ``GET /metrics``).
    """

    def __init__(self, app: Any, histogram: LatencyHistogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.histogram.observe(scope["method"], route_label(scope["path"]), time.perf_counter() - began)
