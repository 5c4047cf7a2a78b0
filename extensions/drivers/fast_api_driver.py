"""FastAPIDriver: serve any pipeline over HTTP, typed and documented; FastAPIClient (and AsyncFastAPIClient, for
asyncio code): call it from Python.

The driver runs a uvicorn server on the port the runtime allocates (the service
``"http"``). Request and response models in its OpenAPI document are generated
from the pipeline's typed inputs and outputs, values travel in their JSON form
(images as base64 PNG, or as a multipart file upload), and every failure is a
JSON error ``{"error": {"type", "message", ...}}`` with a meaningful status code.

Routes:

- ``GET /health``: the server is up (never needs the API key).
- ``GET /ready``: the inference process is reachable and warmed up (503 when not).
- ``GET /pipeline``: name, cells, inputs and outputs with their JSON schemas and field metadata.
- ``POST /predict``: ``{"inputs": {...}, "sid": "..."}`` (or ``X-State-Id``) → ``{"outputs": {...}}``;
  also ``multipart/form-data`` with one part per input (files for images, JSON text for the rest).
- ``POST /predict/batch``: ``{"requests": [...]}`` → ``{"results": [...]}``, in order; items fail alone.
- ``POST /tasks`` → 202 ``{"id", "status", ...}``; ``GET /tasks``, ``GET /tasks/{id}`` (``?wait=`` seconds
  long-polls for the end), ``DELETE /tasks/{id}``. A task may carry a ``callback_url`` that receives
  its final status by POST, retried with exponential backoff.
- ``GET /metrics``: Prometheus text format (prometheus-client): requests by outcome, request latency,
  per-cell call time, queue wait and batch-size histograms, queue depth, live sids, HTTP responses
  by method, route and status, tasks.
- ``GET /`` is a self-contained interactive page (no CDN needed); ``/docs`` and ``/redoc`` are
  FastAPI's Swagger UI and ReDoc, ``/openapi.json`` the OpenAPI document.

Checks made before any work (see the HTTP guide's security section): the bearer token
when ``api_key`` is set (401; the scheme is case-insensitive); on a loopback address, a
``Host`` that is a loopback name or in ``allowed_hosts`` (400 otherwise: DNS rebinding);
a JSON ``Content-Type`` on the JSON routes (415) and no foreign ``Origin`` on a POST or
DELETE (403), so no other site's page can make it work; image inputs of at most
``max_image_pixels`` pixels, read from their header before decoding, and sids of at most
``max_sid_length`` characters (422); a ``callback_url`` that resolves to public addresses
only, or is listed in ``callback_allow``, checked again at every delivery and redirect.

The code lives in the package ``rvai_sdk.extensions.drivers.http``, one concept a
module (codec, models, errors, middleware, the ``/predict`` endpoint, dispatch, tasks,
the home page, the app, the driver, the client); this module is the import path.

Example::

    http = proc.add_driver("webapi", FastAPIDriver, {"api_key": "s3cret"})
    with FastAPIClient(process=http, api_key="s3cret") as client:
        client.wait(timeout=10)
        client.predict({"input": 1}, sid="camera-1")   # {'output': Integer(2)}
"""

from __future__ import annotations

from rvai_sdk.exc import FastAPIClientError

from .http.client import AsyncFastAPIClient, FastAPIClient, _resolve_type  # noqa: F401  (_resolve_type: its unit tests import it from here)
from .http.driver import FastAPIDriver
from .http.parameters import FastAPIDriverParameters

__all__ = ["AsyncFastAPIClient", "FastAPIDriver", "FastAPIDriverParameters", "FastAPIClient", "FastAPIClientError"]
