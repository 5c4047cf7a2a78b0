"""FastAPIDriver: serve any pipeline over HTTP, typed and documented; FastAPIClient: call it from Python.

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

Example::

    http = proc.add_driver("webapi", FastAPIDriver, {"api_key": "s3cret"})
    with FastAPIClient(process=http, api_key="s3cret") as client:
        client.wait(timeout=10)
        client.predict({"input": 1}, sid="camera-1")   # {'output': Integer(2)}
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import html
import itertools
import json
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import numpy as np

from rvai_sdk import types as rtypes
from rvai_sdk._compat import require
from rvai_sdk.drivers import DriverParameters, PipelineDriver, service_record
from rvai_sdk.exc import CellError, DeadlineExceededError, DriverError, InputValidationError, ProcessError
from . import _fast_api_security as security
from rvai_sdk.resources import DriverResources, DriverResourcesRequest
from rvai_sdk.types import Boolean, Float, Integer, List, String

if TYPE_CHECKING:
    import fastapi
    import fastapi.openapi.docs as fastapi_docs
    import fastapi.openapi.utils as fastapi_openapi
    import fastapi.responses as fastapi_responses
    import httpx
    import pydantic
    import pydantic.json_schema as pydantic_json_schema
    import starlette.exceptions as starlette_exceptions
    import uvicorn
    from fastapi import FastAPI, Request, Response

    from rvai_sdk.pipeline.graph import InputSpec, OutputSpec, Pipeline
    from rvai_sdk.runtime.driver_process import PipelineDriverProcess
    from rvai_sdk.runtime.restricted import RestrictedInferenceProcess
else:
    fastapi = require("fastapi", extra="fastapi")
    uvicorn = require("uvicorn", extra="fastapi")
    httpx = require("httpx", extra="fastapi")
    pydantic = require("pydantic", extra="fastapi")
    starlette_exceptions = require("starlette.exceptions", extra="fastapi")
    fastapi_openapi = require("fastapi.openapi.utils", extra="fastapi")
    fastapi_docs = require("fastapi.openapi.docs", extra="fastapi")
    fastapi_responses = require("fastapi.responses", extra="fastapi")
    pydantic_json_schema = require("pydantic.json_schema", extra="fastapi")
    # FastAPI reads the routes' annotations at run time
    FastAPI, Request, Response = fastapi.FastAPI, fastapi.Request, fastapi.Response

__all__ = ["FastAPIDriver", "FastAPIDriverParameters", "FastAPIClient", "FastAPIClientError"]

_OFF_LOOP_BYTES = 64 * 1024
"""Request bodies larger than this are parsed and decoded on a worker thread, not the event loop."""
_MAX_WAIT = 30.0
"""Longest a ``GET /tasks/{id}?wait=`` long-poll is held open, in seconds."""


# -- parameters and errors ---------------------------------------------------------------------


@dataclasses.dataclass
class FastAPIDriverParameters(DriverParameters):
    """What a :class:`FastAPIDriver` can be told; every field can change while it runs.

    Attributes:
        host: the address to listen on; ``127.0.0.1`` (this machine only) by default.
            Listening elsewhere (``0.0.0.0``) is an explicit choice. Changing it re-binds
            the same port without losing tasks.
        listen_port: a fixed TCP port to listen on (``rvai-sdk serve --port``); ``0`` (the
            default) takes the port the runtime allocated for the service ``"http"``.
            Changing it re-binds, like ``host``.
        api_key: when set, every route but ``/health`` needs ``Authorization: Bearer <api_key>``.
        task_ttl: seconds a finished task stays readable before it expires.
        max_pending_tasks: most tasks pending or running at once; more are refused with 429.
        max_body_bytes: largest request body accepted; larger ones get 413.
        max_batch_items: most requests in one ``POST /predict/batch``.
        include_traceback: add the cell's original traceback to 500 errors (off: no traceback leaks).
        callback_retries: further attempts after a task callback POST fails.
        callback_backoff: seconds before the first callback retry; doubles each time (at most 30 s).
        request_timeout: the deadline in seconds of each request (``None``: the inference
            process's ``request_timeout``); a request may set its own with the header
            ``X-Request-Timeout: <seconds>``. Past it the answer is 504.
        callback_allow: destinations a ``callback_url`` may reach although they are not public:
            host names (``"hooks.internal"``), addresses (``"127.0.0.1"``) or networks
            (``"10.0.0.0/8"``). Empty (the default): callbacks reach public addresses only.
        allowed_hosts: more ``Host`` header values accepted while the server listens on a
            loopback address (``localhost``, ``127.0.0.1`` and ``::1`` always are), e.g. the
            name a local reverse proxy forwards; ``"*"`` accepts any.
        max_image_pixels: the most pixels (width x height) an image input may have, read from
            its header before it is decoded; ``None`` (the default): ``Image.max_pixels``.
        max_sid_length: the longest sid accepted, in characters, in the body or ``X-State-Id``.
    """

    host: String = DriverParameters.field(default=String("127.0.0.1"), description="address to listen on")
    listen_port: Integer = DriverParameters.field(default=Integer(0), description="fixed port; 0: the runtime's")
    api_key: String | None = DriverParameters.field(default=None, description="bearer token; None: no auth")
    task_ttl: Integer = DriverParameters.field(default=Integer(600), description="seconds a finished task is kept")
    max_pending_tasks: Integer = DriverParameters.field(default=Integer(1024), description="429 beyond this")
    max_body_bytes: Integer = DriverParameters.field(default=Integer(32 * 1024 * 1024), description="413 beyond this")
    max_batch_items: Integer = DriverParameters.field(default=Integer(1024), description="most items per batch")
    include_traceback: Boolean = DriverParameters.field(default=Boolean(False), description="tracebacks in 500s")
    callback_retries: Integer = DriverParameters.field(default=Integer(5), description="callback retries")
    callback_backoff: Float = DriverParameters.field(default=Float(0.5), description="first retry delay, seconds")
    request_timeout: Float | None = DriverParameters.field(default=None, description="request deadline, seconds (504)")
    callback_allow: List[String] = DriverParameters.field(
        default_factory=List[String], description="non-public callback destinations allowed: hosts, addresses, networks"
    )
    allowed_hosts: List[String] = DriverParameters.field(
        default_factory=List[String], description="more Host header values accepted on a loopback address"
    )
    max_image_pixels: Integer | None = DriverParameters.field(
        default=None, description="most pixels of an image input; None: Image.max_pixels"
    )
    max_sid_length: Integer = DriverParameters.field(default=Integer(256), description="longest sid, in characters")

    def __post_init__(self) -> None:
        super().__post_init__()
        from rvai_sdk.exc import ParameterError

        for name in ("task_ttl", "max_pending_tasks", "max_body_bytes", "max_batch_items", "callback_retries", "max_sid_length"):
            if int(getattr(self, name)) < 0:
                raise ParameterError(f"FastAPIDriverParameters.{name} must be >= 0, got {getattr(self, name)}", field=name)
        if not float(self.callback_backoff) >= 0:
            raise ParameterError(
                f"FastAPIDriverParameters.callback_backoff must be >= 0, got {self.callback_backoff}",
                field="callback_backoff",
            )
        if not 0 <= int(self.listen_port) <= 65535:
            raise ParameterError(
                f"FastAPIDriverParameters.listen_port must be 0..65535, got {self.listen_port}", field="listen_port"
            )
        if not self.host:
            raise ParameterError("FastAPIDriverParameters.host must be an address such as '127.0.0.1'", field="host")
        if self.max_image_pixels is not None and int(self.max_image_pixels) < 1:
            raise ParameterError(
                f"FastAPIDriverParameters.max_image_pixels must be >= 1 or None, got {self.max_image_pixels}",
                field="max_image_pixels",
            )
        for entry in self.callback_allow:
            if not str(entry).strip():
                raise ParameterError(
                    "FastAPIDriverParameters.callback_allow takes host names, addresses or networks, got an empty one",
                    field="callback_allow",
                )
        if self.request_timeout is not None and not float(self.request_timeout) > 0:
            raise ParameterError(
                f"FastAPIDriverParameters.request_timeout must be > 0 seconds or None, got {self.request_timeout}",
                field="request_timeout",
            )


_REQUEST_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar("rvai_request_timeout", default=None)
"""The deadline the current HTTP request asked for with ``X-Request-Timeout`` (set by the ASGI front)."""


def _header_timeout(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """The ``X-Request-Timeout`` header in seconds, or ``None``; a bad value is a 422."""
    for name, value in headers:
        if name == b"x-request-timeout":
            try:
                seconds = float(value)
            except ValueError:
                seconds = float("nan")
            if not 0 < seconds < float("inf"):
                raise _unprocessable(
                    f"header X-Request-Timeout must be a number of seconds > 0, got {value.decode('latin-1')!r}",
                    "headers.X-Request-Timeout",
                )
            return seconds
    return None


class FastAPIClientError(DriverError):
    """A :class:`FastAPIClient` call failed: an HTTP error, a refused connection or a timeout.

    Attributes:
        status_code: the HTTP status (``None`` when no response came: refused, timed out).
        error_type: the server's error type (``"InputValidationError"``, ``"CellError"``...), when given.
        server_message: the server's message, when given.
        cell: the failing cell's ref, for a cell failure.
        field: the offending field path, for a 422.
        body: the parsed JSON body of the error response, when any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        server_message: str | None = None,
        cell: str | None = None,
        field: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.server_message = server_message
        self.cell = cell
        self.field = field
        self.body = body


class _HTTPError(Exception):
    """An error response raised inside a route: status and the ``error`` object."""

    def __init__(self, status: int, type_: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {"type": type_, "message": message, **extra}
        self.headers = dict(headers or {})


# -- the pipeline's JSON codec and models ------------------------------------------------------


def _identifier(name: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", name)
    ident = "".join(w[:1].upper() + w[1:] for w in words) or "Pipeline"
    return ident if not ident[0].isdigit() else f"P{ident}"


def _field_meta(pipeline: Pipeline, spec: InputSpec | OutputSpec) -> dict[str, Any]:
    """Title and description of the cell port behind a pipeline input or output."""
    if hasattr(spec, "targets"):
        if not spec.targets:
            return {}
        cell, port = spec.targets[0]
        props = pipeline.spec(cell).inputs.json_schema().get("properties", {})
    else:
        cell, port = spec.cell, spec.port
        props = pipeline.spec(cell).outputs.json_schema().get("properties", {})
    meta = props.get(port, {})
    return {k: meta[k] for k in ("title", "description") if meta.get(k)}


class _Codec:
    """The pipeline's inputs and outputs in JSON: decoding with field paths, encoding, schemas."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.inputs = dict(pipeline.inputs)
        self.outputs = dict(pipeline.outputs)
        self.image_inputs = {ref for ref, s in self.inputs.items() if rtypes.unwrap_optional(s.type)[0] is rtypes.Image}
        self.image_outputs = any("Image" in rtypes.type_name(s.type) for s in self.outputs.values())
        self.input_schemas = {ref: {**_field_meta(pipeline, s), **s.json_schema()} for ref, s in self.inputs.items()}
        self.output_schemas = {ref: {**_field_meta(pipeline, s), **s.json_schema()} for ref, s in self.outputs.items()}

    def decode(self, obj: Any, where: str = "inputs") -> dict[str, Any]:
        """Typed inputs from their JSON form.

        Raises:
            _HTTPError: 422 naming the field path (``inputs.x``, ``inputs.boxes[2].xmin``).
        """
        if not isinstance(obj, dict):
            raise _unprocessable(f"{where} must be an object of input ref to value, got {_json_type(obj)}", where)
        specs = self.inputs
        for key in obj:
            if key not in specs:
                raise _unprocessable(
                    f"pipeline {self.pipeline.name!r} has no input {key!r}; its inputs are: {', '.join(specs) or '(none)'}",
                    f"{where}.{key}",
                )
        decoded: dict[str, Any] = {}
        for ref, spec in specs.items():
            if ref not in obj:
                raise _unprocessable(
                    f"missing input {ref!r} ({rtypes.type_name(spec.type)}); the inputs are: {', '.join(specs)}",
                    f"{where}.{ref}",
                )
            value = obj[ref]
            try:
                if isinstance(value, rtypes.Value):  # already typed (multipart images)
                    decoded[ref] = rtypes.coerce(spec.type, value, like=spec.like)
                else:
                    decoded[ref] = rtypes.from_json(spec.type, value, like=spec.like)
            except InputValidationError as exc:
                path = f"{where}.{ref}{exc.field or ''}"
                raise _unprocessable(f"input {ref + (exc.field or '')!r}: {exc.detail}", path) from exc
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise _unprocessable(f"input {ref!r}: {type(exc).__name__}: {exc}", f"{where}.{ref}") from exc
        return decoded

    def encode(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON form of a result."""
        return {ref: rtypes.to_json(value) for ref, value in outputs.items()}

    def describe(self) -> dict[str, Any]:
        """What ``GET /pipeline`` returns."""
        description = self.pipeline.describe()

        def ports(specs: Mapping[str, Any], schemas: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
            return {
                ref: {
                    "type": rtypes.type_name(spec.type),
                    "title": schemas[ref].get("title", ref),
                    "description": schemas[ref].get("description", ""),
                    "schema": schemas[ref],
                }
                for ref, spec in specs.items()
            }

        return {
            "name": self.pipeline.name,
            "cells": description["cells"],
            "inputs": ports(self.inputs, self.input_schemas),
            "outputs": ports(self.outputs, self.output_schemas),
            "input_schema": description["inputs"],
            "output_schema": description["outputs"],
        }

    def example_inputs(self) -> dict[str, Any]:
        """A valid request's inputs, from each type's ``fake``; ``None`` where a type has none."""
        rng = np.random.default_rng(0)
        example: dict[str, Any] = {}
        for ref, spec in self.inputs.items():
            try:
                value = rtypes.fake(spec.type, rng, like=spec.like)
                if isinstance(value, rtypes.Image):
                    value = rtypes.Image(np.zeros((2, 2, 3), np.uint8))
                example[ref] = rtypes.to_json(value)
            except Exception:  # a type without fake(): leave a placeholder
                example[ref] = None
        return example


def _json_type(obj: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number"
    )


def _unprocessable(message: str, field: str | None) -> _HTTPError:
    return _HTTPError(422, "InputValidationError", message, field=field)


def _require_json(content_type: bytes) -> None:
    """415 unless the body is declared JSON: a browser sends no JSON cross-origin without asking first (CORS)."""
    if not security.is_json_media_type(content_type):
        given = content_type.decode("latin-1") or "none"
        raise _HTTPError(
            415,
            "UnsupportedMediaType",
            f"this route takes a JSON body with 'Content-Type: application/json', got content type {given!r}",
        )


def _models(codec: _Codec) -> dict[str, Any]:
    """Pydantic models of the API, generated from the pipeline's input and output types."""
    create_model: Any = pydantic.create_model  # field specs built at run time; typed loosely on purpose
    Field = pydantic.Field
    WithJsonSchema = pydantic.WithJsonSchema
    ConfigDict = pydantic.ConfigDict
    base = _identifier(codec.pipeline.name)

    def port_model(name: str, schemas: Mapping[str, dict[str, Any]], doc: str) -> Any:
        fields: dict[str, Any] = {}
        for i, (ref, schema) in enumerate(schemas.items()):
            fields[f"f{i}"] = (Annotated[Any, WithJsonSchema(schema)], Field(..., alias=ref))
        return create_model(name, __config__=ConfigDict(extra="forbid", title=name), __doc__=doc, **fields)

    inputs = port_model(f"{base}Inputs", codec.input_schemas, f"The inputs of pipeline {codec.pipeline.name!r}.")
    outputs = port_model(f"{base}Outputs", codec.output_schemas, f"The outputs of pipeline {codec.pipeline.name!r}.")
    sid = (Optional[str], Field(None, description="state id: requests of one sid share cell state, in order"))
    error_body = create_model(
        "ErrorBody",
        type=(str, Field(..., description="the error's type, e.g. InputValidationError or CellError")),
        message=(str, ...),
        field=(Optional[str], Field(None, description="the offending field path, for a 422")),
        cell=(Optional[str], Field(None, description="the failing cell's ref, for a cell failure")),
        traceback=(Optional[str], Field(None, description="the cell's traceback, when include_traceback is on")),
    )
    error = create_model("ErrorResponse", error=(error_body, ...))
    predict_request = create_model(
        f"{base}PredictRequest", __config__=ConfigDict(extra="forbid"), inputs=(inputs, ...), sid=sid
    )
    predict_response = create_model(f"{base}PredictResponse", outputs=(outputs, ...), sid=sid)
    batch_request = create_model(
        f"{base}BatchRequest", __config__=ConfigDict(extra="forbid"), requests=(list[predict_request], ...)  # type: ignore[valid-type]
    )
    batch_item = create_model(
        f"{base}BatchResult", outputs=(Optional[outputs], None), error=(Optional[error_body], None), sid=sid
    )
    batch_response = create_model(f"{base}BatchResponse", results=(list[batch_item], ...))  # type: ignore[valid-type]
    task_request = create_model(
        f"{base}TaskRequest",
        __config__=ConfigDict(extra="forbid"),
        inputs=(inputs, ...),
        sid=sid,
        callback_url=(Optional[str], Field(None, description="http(s) URL that receives the final status by POST")),
    )
    callback = create_model(
        "TaskCallback",
        url=(str, ...),
        status=(Literal["pending", "delivered", "failed"], ...),
        attempts=(int, ...),
        last_error=(Optional[str], None),
    )
    task = create_model(
        f"{base}Task",
        id=(str, ...),
        status=(Literal["pending", "running", "done", "failed"], ...),
        sid=sid,
        received=(str, Field(..., description="ISO 8601 UTC")),
        started=(Optional[str], None),
        finished=(Optional[str], None),
        expires=(Optional[str], Field(None, description="when a finished task is forgotten")),
        result=(Optional[outputs], None),
        error=(Optional[error_body], None),
        callback=(Optional[callback], None),
    )
    task_list = create_model(f"{base}TaskList", tasks=(list[task], ...))  # type: ignore[valid-type]
    return {
        "inputs": inputs,
        "outputs": outputs,
        "error": error,
        "predict_request": predict_request,
        "predict_response": predict_response,
        "batch_request": batch_request,
        "batch_response": batch_response,
        "task_request": task_request,
        "task": task,
        "task_list": task_list,
    }


# -- tasks -------------------------------------------------------------------------------------


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


@dataclasses.dataclass
class _Task:
    id: str
    sid: str | None
    inputs: dict[str, Any]
    callback_url: str | None
    received: float
    status: str = "pending"
    started: float | None = None
    finished: float | None = None
    finished_mono: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    callback: dict[str, Any] | None = None
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def to_json(self, ttl: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "sid": self.sid,
            "received": _iso(self.received),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "expires": _iso(None if self.finished is None else self.finished + ttl),
            "result": self.result,
            "error": self.error,
            "callback": None if self.callback is None else dict(self.callback),
        }


# -- /metrics ----------------------------------------------------------------------------------

_SECONDS_EDGES = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper edges of the exported latency histograms, in seconds (fixed, so series stay comparable across scrapes)."""
_SIZE_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper edges of the exported batch-size histograms."""
_ROUTES = frozenset(
    ("/", "/health", "/ready", "/pipeline", "/predict", "/predict/batch", "/tasks", "/metrics", "/openapi.json", "/docs", "/redoc")
)


def _route_label(path: str) -> str:
    """The route template of a request path, for a bounded ``route`` label (``other`` for unknown paths)."""
    if path in _ROUTES:
        return path
    if path.startswith("/tasks/") and "/" not in path[len("/tasks/") :]:
        return "/tasks/{task_id}"
    return "other"


def _rebucket(pairs: Iterable[Sequence[float]], edges: Sequence[float]) -> list[tuple[str, float]]:
    """Per-bucket ``(upper edge, count)`` pairs → cumulative Prometheus buckets on ``edges`` (plus ``+Inf``).

    A source bucket is counted under the first exported edge at or above its own upper
    edge, so a bucket ``le`` never undercounts values at or below ``le`` by more than the
    width of one source bucket (at most 25% of its edge for the executor's timings).
    """
    counts = [0.0] * (len(edges) + 1)
    for upper, count in pairs:
        index = bisect.bisect_left(edges, upper)
        counts[index] += count
    buckets: list[tuple[str, float]] = []
    total = 0.0
    for edge, count in zip([*map(_edge_text, edges), "+Inf"], counts):
        total += count
        buckets.append((edge, total))
    return buckets


def _edge_text(edge: float) -> str:
    return repr(float(edge))


def _prometheus_text(
    pipeline: str,
    stats: Mapping[str, Any] | None,
    http: Mapping[tuple[str, str, str], int],
    driver_counters: Mapping[str, Any],
) -> bytes:
    """The Prometheus text exposition of the executor's ``stats()`` and the driver's HTTP counters.

    Args:
        pipeline: the pipeline's name (the ``pipeline`` label of every series).
        stats: ``RestrictedInferenceProcess.stats()``; ``None`` when the inference process
            cannot be reached (``rvai_inference_up`` is then 0 and its series are left out).
        http: ``(method, route, status)`` → responses sent.
        driver_counters: :meth:`FastAPIDriver.stats`.
    """
    core = require("prometheus_client.core", extra="fastapi")
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily = (  # noqa: N806
        core.CounterMetricFamily,
        core.GaugeMetricFamily,
        core.HistogramMetricFamily,
    )

    families: list[Any] = []
    base = ["pipeline"]

    def family(kind: Any, name: str, doc: str, labels: Sequence[str] = ()) -> Any:
        metric = kind(name, doc, labels=[*base, *labels])
        families.append(metric)
        return metric

    up = family(GaugeMetricFamily, "rvai_inference_up", "1 when the inference process answered this scrape, else 0")
    up.add_metric([pipeline], 0.0 if stats is None else 1.0)
    if stats is not None:
        requests = stats["requests"]
        outcomes = family(CounterMetricFamily, "rvai_requests", "Pipeline requests finished, by outcome", ["outcome"])
        for outcome in ("succeeded", "failed"):
            outcomes.add_metric([pipeline, outcome], float(requests[outcome]))
        family(CounterMetricFamily, "rvai_requests_submitted", "Pipeline requests submitted").add_metric(
            [pipeline], float(requests["submitted"])
        )
        family(GaugeMetricFamily, "rvai_requests_in_flight", "Pipeline requests submitted and not finished").add_metric(
            [pipeline], float(requests["in_flight"])
        )
        latency = requests["latency"]
        family(
            HistogramMetricFamily, "rvai_request_latency_seconds", "Succeeded requests, submit to last cell done"
        ).add_metric([pipeline], _rebucket(latency["buckets"], _SECONDS_EDGES), float(latency["sum"]))
        sids = stats["sids"]
        family(GaugeMetricFamily, "rvai_live_sids", "State ids with kept cell state").add_metric([pipeline], float(sids["live"]))
        family(CounterMetricFamily, "rvai_sids_expired", "State ids dropped after their TTL").add_metric(
            [pipeline], float(sids["expired"])
        )
        family(CounterMetricFamily, "rvai_sids_evicted", "State ids dropped to stay under max_states").add_metric(
            [pipeline], float(sids["evicted"])
        )
        cell = ["cell"]
        calls = family(CounterMetricFamily, "rvai_cell_calls", "Calls of a cell (a batch is one call)", cell)
        items = family(CounterMetricFamily, "rvai_cell_items", "Requests a cell processed", cell)
        failures = family(CounterMetricFamily, "rvai_cell_failures", "Failed calls of a cell", cell)
        busy = family(CounterMetricFamily, "rvai_cell_busy_seconds", "Seconds spent in a cell's calls", cell)
        queued = family(GaugeMetricFamily, "rvai_cell_queue_depth", "Requests waiting for a cell", cell)
        running = family(GaugeMetricFamily, "rvai_cell_running", "Calls of a cell running now", cell)
        call_time = family(HistogramMetricFamily, "rvai_cell_call_seconds", "Duration of a cell's calls", cell)
        wait = family(
            HistogramMetricFamily, "rvai_cell_queue_wait_seconds", "Inputs complete to the call starting, per request", cell
        )
        batch = family(HistogramMetricFamily, "rvai_cell_batch_size", "Requests per call of a cell", cell)
        for ref, entry in stats["cells"].items():
            labels = [pipeline, str(ref)]
            calls.add_metric(labels, float(entry["calls"]))
            items.add_metric(labels, float(entry["items"]))
            failures.add_metric(labels, float(entry["failures"]))
            busy.add_metric(labels, float(entry["busy_seconds"]))
            queued.add_metric(labels, float(entry["queued"]))
            running.add_metric(labels, float(entry["running"]))
            call_time.add_metric(labels, _rebucket(entry["call_time"]["buckets"], _SECONDS_EDGES), float(entry["call_time"]["sum"]))
            wait.add_metric(labels, _rebucket(entry["queue_wait"]["buckets"], _SECONDS_EDGES), float(entry["queue_wait"]["sum"]))
            sizes = {int(k): int(v) for k, v in entry["batch_sizes"].items()} or {1: int(entry["calls"])}
            batch.add_metric(
                labels, _rebucket(sizes.items(), _SIZE_EDGES), float(sum(size * n for size, n in sizes.items()))
            )
    responses = family(
        CounterMetricFamily, "rvai_http_requests", "HTTP responses of this driver", ["method", "route", "status"]
    )
    for (method, route, status), count in sorted(http.items()):
        responses.add_metric([pipeline, method, route, status], float(count))
    tasks = family(GaugeMetricFamily, "rvai_http_tasks_active", "Tasks pending or running")
    tasks.add_metric([pipeline], float(driver_counters.get("tasks_active", 0)))
    outcomes = family(CounterMetricFamily, "rvai_http_tasks", "Tasks finished, by outcome", ["outcome"])
    for key, value in sorted(driver_counters.items()):
        if key.startswith("tasks_") and key not in ("tasks_active", "tasks_kept") and isinstance(value, int):
            outcomes.add_metric([pipeline, key[len("tasks_") :]], float(value))

    class _Collector:
        def collect(self) -> Iterator[Any]:
            yield from families

    client = require("prometheus_client", extra="fastapi")
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    text: bytes = client.generate_latest(registry)
    return text


# -- the application ---------------------------------------------------------------------------


class _Service:
    """The HTTP application of one running driver: routes, tasks and counters (lives on the event loop)."""

    def __init__(self, driver: FastAPIDriver, inference: RestrictedInferenceProcess) -> None:
        self.driver = driver
        self.inference = inference
        self.codec = _Codec(inference.pipeline)
        self.models = _models(self.codec)
        self.tasks: dict[str, _Task] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.http: Any = None  # httpx.AsyncClient for callbacks, made on the loop
        self.app = self._build_app()
        self.front = _Front(self)
        self.submitter = _Submitter(inference)
        self.in_flight = 0

    @property
    def parameters(self) -> FastAPIDriverParameters:
        return self.driver._live

    # -- helpers ----------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        counters = self.driver._counters
        counters[key] = counters.get(key, 0) + 1

    async def _body(self, request: Request) -> bytes:
        """The request body, refusing more than ``max_body_bytes`` with 413."""
        limit = int(self.parameters.max_body_bytes)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _HTTPError(413, "PayloadTooLarge", f"the body has {declared} bytes; this server takes at most {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _HTTPError(413, "PayloadTooLarge", f"the body exceeds {limit} bytes, the most this server takes")
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body  # starlette reads it from here for form()
        return body

    async def _json_body(self, request: Request) -> dict[str, Any]:
        _require_json(request.headers.get("content-type", "").encode("latin-1"))
        body = await self._body(request)
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _unprocessable(f"the body is not valid JSON: {exc}", None) from exc
        if not isinstance(obj, dict):
            raise _unprocessable(f"the body must be a JSON object, got {_json_type(obj)}", None)
        return obj

    def _request_parts(
        self, obj: Mapping[str, Any], header_sid: str | None, where: str, extra: Iterable[str] = ()
    ) -> tuple[dict[str, Any], str | None]:
        allowed = {"inputs", "sid", *extra}
        for key in obj:
            if key not in allowed:
                raise _unprocessable(
                    f"unknown field {key!r}; a request has: {', '.join(sorted(allowed))}", f"{where}{key}"
                )
        if "inputs" not in obj:
            raise _unprocessable("missing field 'inputs' (an object of input ref to value)", f"{where}inputs")
        sid = obj.get("sid")
        if sid is None:
            sid = header_sid
            self._check_sid(sid, "X-State-Id")
        elif not isinstance(sid, str):
            raise _unprocessable(f"sid must be a string or null, got {_json_type(sid)}", f"{where}sid")
        else:
            self._check_sid(sid, f"{where}sid")
        with rtypes.Image.pixel_limit(self._pixel_limit()):
            return self.codec.decode(obj["inputs"], f"{where}inputs"), sid

    def _pixel_limit(self) -> int | None:
        limit = self.parameters.max_image_pixels
        return None if limit is None else int(limit)

    def _check_sid(self, sid: str | None, field: str) -> None:
        """Refuse a sid longer than ``max_sid_length`` with 422, before it costs the inference process memory."""
        limit = int(self.parameters.max_sid_length)
        if sid is not None and len(sid) > limit:
            where = "the X-State-Id header" if field == "X-State-Id" else f"field {field!r}"
            raise _unprocessable(
                f"the sid in {where} has {len(sid)} characters, more than the {limit} this server takes; use a "
                "shorter id (e.g. a hash of it), or raise the driver parameter max_sid_length",
                field,
            )

    async def _multipart(self, request: Request) -> tuple[dict[str, Any], str | None]:
        await self._body(request)
        limit = int(self.parameters.max_body_bytes)
        try:
            form = await request.form(max_part_size=limit)
        except Exception as exc:  # malformed multipart
            raise _unprocessable(f"the multipart body cannot be parsed: {exc}", None) from exc
        try:
            inputs: dict[str, Any] = {}
            sid: str | None = request.headers.get("x-state-id")
            sid_field = "X-State-Id"
            for key, value in form.multi_items():
                if key == "sid":
                    if not isinstance(value, str):
                        raise _unprocessable("sid must be a text field", "sid")
                    sid, sid_field = value, "sid"
                    continue
                if key not in self.codec.inputs:
                    inputs[key] = None  # decode() names it as unknown
                    continue
                if isinstance(value, str):
                    inputs[key] = self._form_text(key, value)
                    continue
                data = await value.read()
                if key not in self.codec.image_inputs:
                    inputs[key] = self._form_text(key, data.decode("utf-8", "replace"))
                    continue
                try:
                    with rtypes.Image.pixel_limit(self._pixel_limit()):
                        inputs[key] = rtypes.Image.from_bytes(data)
                except InputValidationError as exc:
                    raise _unprocessable(f"input {key!r}: the uploaded file is not an image: {exc}", f"inputs.{key}")
                except Exception as exc:
                    raise _unprocessable(
                        f"input {key!r}: the uploaded file is not an image: {type(exc).__name__}: {exc}", f"inputs.{key}"
                    ) from exc
        finally:
            await form.close()
        self._check_sid(sid, sid_field)
        return self.codec.decode(inputs), sid

    @staticmethod
    def _form_text(key: str, text: str) -> Any:
        """A non-file multipart field: its JSON value, else the text itself (a plain string, a base64 image)."""
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text

    async def _run(self, inputs: dict[str, Any], sid: str | None) -> dict[str, Any]:
        """Predict and await; errors as :class:`_HTTPError` (503 unreachable, 500 cell failure)."""
        self.in_flight += 1
        try:
            timeout = _REQUEST_TIMEOUT.get()
            if timeout is None and self.parameters.request_timeout is not None:
                timeout = float(self.parameters.request_timeout)
            if self.in_flight == 1:  # idle: send from here, the lowest latency
                outputs = await asyncio.wrap_future(self.inference.predict(inputs, sid, timeout=timeout))
            else:  # busy: the submitting thread sends, in arrival order, while the loop goes on
                outputs = await self.submitter.submit(inputs, sid, timeout)
        except InputValidationError as exc:
            field = exc.field if exc.field in (None, "sid") else f"inputs.{exc.field}"
            raise _unprocessable(str(exc), field) from exc
        except DeadlineExceededError as exc:
            raise _HTTPError(504, "DeadlineExceededError", str(exc), cell=exc.ref) from exc
        except CellError as exc:
            raise self._cell_error(exc) from exc
        except ProcessError as exc:
            raise self._unavailable(exc) from exc
        finally:
            self.in_flight -= 1
        if self.codec.image_outputs:  # PNG encoding takes milliseconds: off the event loop
            return await asyncio.get_running_loop().run_in_executor(None, self.codec.encode, outputs)
        return self.codec.encode(outputs)

    def _unavailable(self, exc: BaseException) -> _HTTPError:
        return _HTTPError(
            503,
            type(exc).__name__,
            f"the inference process of pipeline {self.codec.pipeline.name!r} cannot be reached: {exc}; "
            "retry once GET /ready answers 200",
            headers={"Retry-After": "1"},
        )

    def _cell_error(self, exc: CellError) -> _HTTPError:
        message = str(exc.args[0]) if exc.args else exc.cause_type
        # a CellError that crossed a process boundary carries its traceback in the message too
        message = message.split("\n\nOriginal traceback:", 1)[0]
        extra: dict[str, Any] = {"cell": exc.ref}
        if self.parameters.include_traceback and exc.remote_traceback:
            extra["traceback"] = exc.remote_traceback
        return _HTTPError(500, exc.cause_type or "CellError", message, **extra)

    @staticmethod
    def _respond(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
        return fastapi.Response(content=body, status_code=status, media_type="application/json", headers=headers)

    def _error(self, error: _HTTPError) -> Response:
        self._count(f"http_{error.status}")
        return self._respond({"error": error.error}, error.status, error.headers)

    def _error_parts(self, error: _HTTPError) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        self._count(f"http_{error.status}")
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
        return error.status, {"error": error.error}, headers

    async def predict_json(self, body: bytes, header_sid: str | None) -> dict[str, Any]:
        """``POST /predict`` with a JSON body: the response's JSON object.

        Raises:
            _HTTPError: 422, 500 (a cell failed) or 503 (the inference process cannot be reached).
        """
        self._count("predict")
        if len(body) > _OFF_LOOP_BYTES:  # big bodies (images) are parsed and decoded off the event loop
            inputs, sid = await asyncio.get_running_loop().run_in_executor(None, self._parse_request, body, header_sid)
        else:
            inputs, sid = self._parse_request(body, header_sid)
        return {"outputs": await self._run(inputs, sid), "sid": sid}

    def _parse_request(self, body: bytes, header_sid: str | None) -> tuple[dict[str, Any], str | None]:
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _unprocessable(f"the body is not valid JSON: {exc}", None) from exc
        if not isinstance(obj, dict):
            raise _unprocessable(f"the body must be a JSON object, got {_json_type(obj)}", None)
        return self._request_parts(obj, header_sid, "")

    def _guard(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Turn every failure of a route into a JSON error; nothing escapes to uvicorn."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except _HTTPError as exc:
                return self._error(exc)
            except Exception as exc:  # a bug: answer 500 without details, keep serving
                self._count("internal_errors")
                return self._error(_HTTPError(500, "InternalServerError", f"{type(exc).__name__} in the HTTP driver"))

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        return guarded

    # -- tasks --------------------------------------------------------------------------------

    def _sweep(self) -> None:
        now = time.monotonic()
        ttl = float(self.parameters.task_ttl)
        expired = [t.id for t in self.tasks.values() if t.finished_mono is not None and now - t.finished_mono >= ttl]
        for task_id in expired:
            del self.tasks[task_id]
            self._count("tasks_expired")

    def _find_task(self, task_id: str) -> _Task:
        self._sweep()
        task = self.tasks.get(task_id)
        if task is None:
            raise _HTTPError(404, "TaskNotFound", f"no task {task_id!r}: it never existed, was deleted or expired")
        return task

    def _spawn(self, coro: Awaitable[None]) -> None:
        job = asyncio.ensure_future(coro)
        self.background.add(job)
        job.add_done_callback(self.background.discard)

    async def _execute(self, task: _Task) -> None:
        task.status = "running"
        task.started = time.time()
        try:
            task.result = await self._run(task.inputs, task.sid)
            task.status = "done"
        except _HTTPError as exc:
            task.error = exc.error
            task.status = "failed"
        except Exception as exc:
            task.error = {"type": "InternalServerError", "message": f"{type(exc).__name__} in the HTTP driver"}
            task.status = "failed"
        task.inputs = {}
        task.finished = time.time()
        task.finished_mono = time.monotonic()
        self._count(f"tasks_{task.status}")
        task.done.set()
        if task.callback_url is not None:
            await self._deliver(task)

    async def _check_callback(self, callback_url: Any) -> None:
        """422 for a ``callback_url`` that is not http(s) or reaches a destination not allowed (SSRF)."""
        if not isinstance(callback_url, str) or not re.match(r"^https?://[^\s/]+", callback_url):
            raise _unprocessable("callback_url must be an http:// or https:// URL", "callback_url")
        try:
            url = httpx.URL(callback_url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise _unprocessable(f"callback_url is not a valid URL: {exc}", "callback_url") from exc
        try:
            await security.resolve_callback(url, [str(a) for a in self.parameters.callback_allow])
        except security.CallbackUnresolved:
            pass  # DNS may answer by the time the task ends; delivery checks again
        except security.CallbackRefused as exc:
            raise _unprocessable(str(exc), "callback_url") from exc

    async def _post_callback(self, url: str, payload: Mapping[str, Any]) -> Any:
        """POST ``payload`` to ``url``, checking the destination first and again at every redirect (at most 5).

        Raises:
            security.CallbackRefused: the URL, or a redirect, reaches a destination that is not allowed.
        """
        target = httpx.URL(url)
        for _ in range(6):
            allow = [str(a) for a in self.parameters.callback_allow]
            checked = await security.resolve_callback(target, allow)
            for i, address in enumerate(checked.addresses):  # each checked address in turn, as a client would
                try:
                    response = await self.http.post(json=payload, **checked.request_args(address))
                    break
                except httpx.ConnectError:
                    if i == len(checked.addresses) - 1:
                        raise
            location = response.headers.get("location")
            if not (300 <= response.status_code < 400 and location):
                return response
            target = target.join(location)
        raise security.CallbackRefused(f"callback_url {url!r} redirected more than 5 times")

    async def _deliver(self, task: _Task) -> None:
        """POST the final status to the task's callback URL, retrying with exponential backoff."""
        assert task.callback is not None and task.callback_url is not None
        params = self.parameters
        retries = int(params.callback_retries)
        delay = float(params.callback_backoff)
        payload = task.to_json(float(params.task_ttl))
        payload.pop("callback", None)
        for attempt in range(retries + 1):
            task.callback["attempts"] = attempt + 1
            try:
                response = await self._post_callback(task.callback_url, payload)
                if 200 <= response.status_code < 300:
                    task.callback["status"] = "delivered"
                    task.callback["last_error"] = None
                    self._count("callbacks_delivered")
                    return
                task.callback["last_error"] = f"HTTP {response.status_code}"
            except security.CallbackUnresolved as exc:  # DNS may answer later: retried
                task.callback["last_error"] = str(exc)
            except security.CallbackRefused as exc:  # retrying cannot help
                task.callback["last_error"] = str(exc)
                break
            except Exception as exc:  # connection refused, timeout, bad URL...
                task.callback["last_error"] = f"{type(exc).__name__}: {exc}"
            if attempt < retries:
                await asyncio.sleep(min(delay * 2**attempt, 30.0))  # backoff between attempts
        task.callback["status"] = "failed"
        self._count("callbacks_failed")

    async def sweep_forever(self) -> None:
        """Expire finished tasks even when nobody asks about them."""
        while True:
            await asyncio.sleep(max(0.05, min(1.0, float(self.parameters.task_ttl) / 4)))
            self._sweep()

    # -- routes ---------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        codec = self.codec
        m = self.models
        name = codec.pipeline.name
        app = fastapi.FastAPI(
            title=f"{name} (rvai_sdk)",
            description=f"Inference API of pipeline **{name}**, served by rvai_sdk's FastAPIDriver.",
            version="1",
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
        )
        errors = {
            401: {"model": m["error"], "description": "missing or wrong bearer token"},
            413: {"model": m["error"], "description": "body too large"},
            422: {"model": m["error"], "description": "malformed body, or an unknown, missing or mistyped input"},
            500: {"model": m["error"], "description": "a cell failed; `cell` names it"},
            503: {"model": m["error"], "description": "the inference process cannot be reached"},
        }

        def body(model: Any, multipart: bool = False) -> dict[str, Any]:
            content: dict[str, Any] = {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            }
            if multipart:
                props: dict[str, Any] = {}
                for ref, schema in codec.input_schemas.items():
                    if ref in codec.image_inputs:
                        props[ref] = {"type": "string", "format": "binary", "description": "an image file (PNG, ...)"}
                    else:
                        props[ref] = {"type": "string", "description": f"JSON text of {schema.get('title', ref)}"}
                props["sid"] = {"type": "string"}
                content["multipart/form-data"] = {
                    "schema": {"type": "object", "properties": props, "required": list(codec.input_schemas)}
                }
            return {"requestBody": {"required": True, "content": content}}

        state_header = [
            {
                "name": "X-State-Id",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the sid, when the body has none",
            }
        ]
        def route(path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
            app.add_api_route(path, endpoint, response_model=None, **kwargs)

        async def health(request: Request) -> Response:
            """The server is up (needs no API key)."""
            return self._respond({"status": "ok"})

        async def ready(request: Request) -> Response:
            """The inference process is reachable and warmed up; 503 when not."""
            try:  # may try to connect: off the event loop
                ok = await asyncio.get_running_loop().run_in_executor(None, self.inference.is_ready)
            except Exception:
                ok = False
            if not ok:
                raise _HTTPError(503, "NotReady", "the inference process is not ready", headers={"Retry-After": "1"})
            return self._respond({"status": "ready"})

        async def pipeline(request: Request) -> Response:
            """The pipeline: name, cells, inputs and outputs with their JSON schemas and field metadata."""
            return self._respond(codec.describe())

        async def predict(request: Request) -> Response:
            """Run the pipeline on one request (JSON, or multipart with image files)."""
            content_type = request.headers.get("content-type", "")
            if not content_type.startswith("multipart/form-data"):  # _Front answers these first
                _require_json(content_type.encode("latin-1"))
                return self._respond(await self.predict_json(await self._body(request), request.headers.get("x-state-id")))
            self._count("predict")
            inputs, sid = await self._multipart(request)
            outputs = await self._run(inputs, sid)
            return self._respond({"outputs": outputs, "sid": sid})

        async def predict_batch(request: Request) -> Response:
            """Run many requests; results in order, each item succeeding or failing alone."""
            self._count("predict_batch")
            obj = await self._json_body(request)
            if set(obj) != {"requests"} or not isinstance(obj["requests"], list):
                raise _unprocessable("the body must be {\"requests\": [{\"inputs\": ..., \"sid\": ...}, ...]}", "requests")
            items = obj["requests"]
            limit = int(self.parameters.max_batch_items)
            if len(items) > limit:
                raise _HTTPError(413, "PayloadTooLarge", f"{len(items)} requests in one batch; at most {limit}")
            header_sid = request.headers.get("x-state-id")
            jobs: list[asyncio.Future[dict[str, Any]] | _HTTPError] = []
            sids: list[Any] = []
            for i, item in enumerate(items):
                where = f"requests[{i}]."
                try:
                    if not isinstance(item, dict):
                        raise _unprocessable(f"a request must be an object, got {_json_type(item)}", where[:-1])
                    inputs, sid = self._request_parts(item, header_sid, where)
                    sids.append(sid)
                    jobs.append(asyncio.ensure_future(self._run(inputs, sid)))  # submitted in order
                except _HTTPError as exc:
                    sids.append(item.get("sid") if isinstance(item, dict) and isinstance(item.get("sid"), str) else None)
                    jobs.append(exc)
            results = []
            for sid, job in zip(sids, jobs):
                if isinstance(job, _HTTPError):
                    results.append({"outputs": None, "error": job.error, "sid": sid})
                    continue
                try:
                    results.append({"outputs": await job, "error": None, "sid": sid})
                except _HTTPError as exc:
                    results.append({"outputs": None, "error": exc.error, "sid": sid})
            return self._respond({"results": results})

        async def create_task(request: Request) -> Response:
            """Queue a request as an asynchronous task: 202 with its id; poll it, or give a callback_url."""
            obj = await self._json_body(request)
            inputs, sid = self._request_parts(obj, request.headers.get("x-state-id"), "", extra=("callback_url",))
            callback_url = obj.get("callback_url")
            if callback_url is not None:
                await self._check_callback(callback_url)
            self._sweep()
            active = sum(1 for t in self.tasks.values() if t.finished is None)
            limit = int(self.parameters.max_pending_tasks)
            if active >= limit:
                raise _HTTPError(
                    429,
                    "TooManyTasks",
                    f"{active} tasks are pending or running, the most this server keeps ({limit}); retry later",
                    headers={"Retry-After": "1"},
                )
            task = _Task(id=uuid.uuid4().hex, sid=sid, inputs=inputs, callback_url=callback_url, received=time.time())
            if callback_url is not None:
                task.callback = {"url": callback_url, "status": "pending", "attempts": 0, "last_error": None}
            self.tasks[task.id] = task
            self._count("tasks")
            self._spawn(self._execute(task))
            return self._respond(
                task.to_json(float(self.parameters.task_ttl)), 202, headers={"Location": f"/tasks/{task.id}"}
            )

        async def list_tasks(request: Request) -> Response:
            """Every task not yet expired, oldest first."""
            self._sweep()
            ttl = float(self.parameters.task_ttl)
            return self._respond({"tasks": [t.to_json(ttl) for t in self.tasks.values()]})

        async def get_task(request: Request) -> Response:
            """A task's status, timestamps, and result or error; `?wait=` seconds waits for it to finish."""
            task = self._find_task(request.path_params["task_id"])
            wait_text = request.query_params.get("wait")
            if wait_text is not None:
                try:
                    wait = float(wait_text)
                except ValueError:
                    raise _unprocessable("wait must be a number of seconds", "wait") from None
                if not 0 <= wait <= _MAX_WAIT:
                    raise _unprocessable(f"wait must be between 0 and {_MAX_WAIT:g} seconds", "wait")
                if wait > 0 and not task.done.is_set():
                    try:
                        await asyncio.wait_for(task.done.wait(), wait)
                    except asyncio.TimeoutError:
                        pass
            return self._respond(task.to_json(float(self.parameters.task_ttl)))

        async def delete_task(request: Request) -> Response:
            """Forget a task (a running one still runs, its result is dropped)."""
            task = self._find_task(request.path_params["task_id"])
            del self.tasks[task.id]
            return fastapi.Response(status_code=204)

        async def metrics(request: Request) -> Response:
            """Prometheus metrics: requests by outcome, per-cell latency, batch size and queue depth, live sids, HTTP."""
            loop = asyncio.get_running_loop()
            try:  # may cross a process boundary: off the event loop
                stats: dict[str, Any] | None = await loop.run_in_executor(None, self.inference.stats)
            except Exception:
                stats = None
            driver = self.driver  # its counters are read here, on the event loop that updates them
            http_counts, counters = dict(driver._http_counts), driver.stats()
            body = await loop.run_in_executor(None, _prometheus_text, name, stats, http_counts, counters)
            return fastapi.Response(content=body, media_type="text/plain; version=0.0.4; charset=utf-8")

        async def home(request: Request) -> Response:
            """This page: the pipeline's inputs and outputs, and a form to try it."""
            return fastapi_responses.HTMLResponse(self._home_page())

        async def openapi(request: Request) -> Response:
            return self._respond(self.openapi())

        async def swagger(request: Request) -> Response:
            return fastapi_docs.get_swagger_ui_html(openapi_url="/openapi.json", title=f"{name} - Swagger UI")

        async def redoc(request: Request) -> Response:
            return fastapi_docs.get_redoc_html(openapi_url="/openapi.json", title=f"{name} - ReDoc")

        task_id = [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}]
        wait = [{"name": "wait", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0, "maximum": _MAX_WAIT}}]
        g = self._guard
        route("/health", g(health), methods=["GET"], tags=["status"], responses={200: {"description": "up"}})
        route("/ready", g(ready), methods=["GET"], tags=["status"], responses={401: errors[401], 503: errors[503]})
        route("/pipeline", g(pipeline), methods=["GET"], tags=["pipeline"], responses={401: errors[401]})
        route(
            "/predict",
            g(predict),
            methods=["POST"],
            tags=["predict"],
            responses={200: {"model": m["predict_response"]}, **errors},
            openapi_extra={**body(m["predict_request"], multipart=True), "parameters": state_header},
        )
        route(
            "/predict/batch",
            g(predict_batch),
            methods=["POST"],
            tags=["predict"],
            responses={200: {"model": m["batch_response"]}, **errors},
            openapi_extra={**body(m["batch_request"]), "parameters": state_header},
        )
        route(
            "/tasks",
            g(create_task),
            methods=["POST"],
            tags=["tasks"],
            status_code=202,
            responses={
                202: {"model": m["task"]},
                429: {"model": m["error"], "description": "too many pending tasks"},
                **{k: v for k, v in errors.items() if k not in (500, 503)},
            },
            openapi_extra={**body(m["task_request"]), "parameters": state_header},
        )
        route("/tasks", g(list_tasks), methods=["GET"], tags=["tasks"], responses={200: {"model": m["task_list"]}, 401: errors[401]})
        not_found = {"model": m["error"], "description": "unknown or expired task"}
        route(
            "/tasks/{task_id}",
            g(get_task),
            methods=["GET"],
            tags=["tasks"],
            responses={200: {"model": m["task"]}, 404: not_found, 401: errors[401], 422: errors[422]},
            openapi_extra={"parameters": task_id + wait},
        )
        route(
            "/tasks/{task_id}",
            g(delete_task),
            methods=["DELETE"],
            tags=["tasks"],
            status_code=204,
            responses={204: {"description": "deleted"}, 404: not_found, 401: errors[401]},
            openapi_extra={"parameters": task_id},
        )
        route("/metrics", g(metrics), methods=["GET"], include_in_schema=False)  # for Prometheus, not API clients
        route("/", g(home), methods=["GET"], include_in_schema=False)
        route("/openapi.json", g(openapi), methods=["GET"], include_in_schema=False)
        route("/docs", g(swagger), methods=["GET"], include_in_schema=False)
        route("/redoc", g(redoc), methods=["GET"], include_in_schema=False)

        async def http_error(request: Request, exc: Exception) -> Response:
            status = int(getattr(exc, "status_code", 500))
            phrase = {404: "NotFound", 405: "MethodNotAllowed"}.get(status, "HTTPError")
            message = str(getattr(exc, "detail", exc))
            if status == 404:
                message = f"no route {request.url.path!r}; see GET /openapi.json or GET / for the routes"
            return self._error(_HTTPError(status, phrase, message, headers=getattr(exc, "headers", None)))

        app.add_exception_handler(starlette_exceptions.HTTPException, http_error)
        return app

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, with the pipeline's request models in its components."""
        app = self.app
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = fastapi_openapi.get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        m = self.models
        request_models = [m["predict_request"], m["batch_request"], m["task_request"]]
        _, defs = pydantic_json_schema.models_json_schema(
            [(model, "validation") for model in request_models], ref_template="#/components/schemas/{model}"
        )
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {}).update(defs.get("$defs", {}))
        if self.parameters.api_key:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in doc["paths"].items():
                if path != "/health":
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    def _home_page(self) -> str:
        codec = self.codec
        e = html.escape

        def rows(ports: Mapping[str, Any]) -> str:
            return "".join(
                f"<tr><td><code>{e(ref)}</code></td><td>{e(p['type'])}</td><td>{e(str(p['title']))}</td>"
                f"<td>{e(str(p['description']))}</td><td><code>{e(json.dumps(p['schema']))}</code></td></tr>"
                for ref, p in ports.items()
            )

        described = codec.describe()
        example = json.dumps({"inputs": codec.example_inputs(), "sid": None}, indent=2)
        header = "<tr><th>ref</th><th>type</th><th>title</th><th>description</th><th>JSON schema</th></tr>"
        routes = [
            ("GET", "/health", "the server is up"),
            ("GET", "/ready", "the inference process is reachable and warmed up"),
            ("GET", "/pipeline", "the pipeline's description"),
            ("POST", "/predict", "one request: JSON, or multipart with image files"),
            ("POST", "/predict/batch", "many requests, results in order"),
            ("POST", "/tasks", "an asynchronous task (202), optional callback_url"),
            ("GET", "/tasks", "every task"),
            ("GET", "/tasks/{id}", "a task's status and result; ?wait=seconds"),
            ("DELETE", "/tasks/{id}", "forget a task"),
        ]
        route_rows = "".join(f"<tr><td>{m}</td><td><code>{e(p)}</code></td><td>{e(d)}</td></tr>" for m, p, d in routes)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(codec.pipeline.name)} - rvai_sdk</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}}
table{{border-collapse:collapse;margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}
th{{background:#eef}}textarea{{width:100%;height:12em;font-family:monospace}}pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}
code{{font-size:90%}}
</style></head><body>
<h1>Pipeline <code id="pipeline-name">{e(codec.pipeline.name)}</code></h1>
<p>Served by rvai_sdk's FastAPIDriver. Full API: <a href="/docs">Swagger UI</a> · <a href="/redoc">ReDoc</a> ·
<a href="/openapi.json">OpenAPI document</a> · <a href="/pipeline">/pipeline</a></p>
<h2>Inputs</h2><table id="inputs">{header}{rows(described["inputs"])}</table>
<h2>Outputs</h2><table id="outputs">{header}{rows(described["outputs"])}</table>
<h2>Try it: POST /predict</h2>
<p><label>API key (if the server has one): <input id="key" type="password"></label></p>
<textarea id="body">{e(example)}</textarea><p><button id="send" onclick="send()">Predict</button></p>
<pre id="response">(the response appears here)</pre>
<h2>Routes</h2><table>{route_rows}</table>
<script>
async function send() {{
  const out = document.getElementById("response");
  const headers = {{"Content-Type": "application/json"}};
  const key = document.getElementById("key").value;
  if (key) headers["Authorization"] = "Bearer " + key;
  try {{
    const r = await fetch("/predict", {{method: "POST", headers, body: document.getElementById("body").value}});
    out.textContent = r.status + " " + r.statusText + "\\n" + JSON.stringify(await r.json(), null, 2);
  }} catch (err) {{ out.textContent = String(err); }}
}}
if (new URLSearchParams(location.search).has("try")) send();  // /?try runs the example at once
</script></body></html>"""


class _Submitter:
    """Hands requests to ``inference.predict`` on a helper thread, off the event loop, in order.

    ``predict`` writes to the inference process's socket in the calling thread; under
    load, doing that on the event loop stalls every connection (about a quarter of the
    driver's time). One thread keeps the arrival order, so a sid's requests stay in order.
    """

    def __init__(self, inference: RestrictedInferenceProcess, threads: int = 1) -> None:
        self.inference = inference
        self.threads = threads
        self.queue: queue.SimpleQueue[
            tuple[dict[str, Any], str | None, float | None, asyncio.Future[dict[str, Any]]] | None
        ] = queue.SimpleQueue()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.workers: list[threading.Thread] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.workers = [
            threading.Thread(target=self._work, name=f"rvai-http-submit-{i}", daemon=True) for i in range(self.threads)
        ]
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        for _ in self.workers:
            self.queue.put(None)
        for worker in self.workers:
            worker.join(10)
        self.workers = []

    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> asyncio.Future[dict[str, Any]]:
        assert self.loop is not None
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.queue.put((inputs, sid, timeout, future))
        return future

    def _work(self) -> None:
        loop = self.loop
        assert loop is not None
        get = self.queue.get
        predict = self.inference.predict
        while True:
            item = get()
            if item is None:
                return
            inputs, sid, timeout, future = item
            try:
                done = predict(inputs, sid, timeout=timeout)
            except BaseException as exc:
                loop.call_soon_threadsafe(_fail, future, exc)
                continue
            done.add_done_callback(functools.partial(_relay, loop, future))


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _settle(future: asyncio.Future[Any], done: concurrent.futures.Future[Any]) -> None:
    if future.done():
        return
    exc = done.exception()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(done.result())


def _relay(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], done: concurrent.futures.Future[Any]) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, done)
    except RuntimeError:  # the loop is closed: the server stopped
        pass


class _Front:
    """The ASGI app uvicorn serves: request checks (Host, Origin, bearer token), a fast path for JSON
    ``POST /predict``, then FastAPI.

    The fast path answers exactly as the FastAPI route would (same codec, same errors)
    without FastAPI's routing and dependency machinery, which otherwise costs about
    as much as the request itself; every other request goes to the FastAPI app.
    """

    def __init__(self, service: _Service) -> None:
        self.service = service
        self.app = service.app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = self.service
        parameters = service.parameters
        key = parameters.api_key
        path = scope["path"]
        method = scope["method"]
        headers = scope["headers"]
        send = self._counting(send, method, _route_label(path))
        refusal = self._refusal(headers, method, path, key)
        if refusal is not None:
            await self._send(send, *service._error_parts(refusal))
            return
        try:
            _REQUEST_TIMEOUT.set(_header_timeout(headers))  # this request's deadline, read by _Service._run
        except _HTTPError as exc:
            await self._send(send, *service._error_parts(exc))
            return
        if path == "/predict" and method == "POST":
            content_type = b""
            declared = -1
            header_sid: str | None = None
            for name, value in headers:
                if name == b"content-type":
                    content_type = value
                elif name == b"content-length":
                    declared = int(value) if value.isdigit() else -1
                elif name == b"x-state-id":
                    header_sid = value.decode("latin-1")
            if not content_type.startswith(b"multipart/"):
                try:
                    _require_json(content_type)
                    body = await self._read(receive, declared, int(parameters.max_body_bytes))
                    status, payload = 200, await service.predict_json(body, header_sid)
                    extra: list[tuple[bytes, bytes]] = []
                except _HTTPError as exc:
                    status, payload, extra = service._error_parts(exc)
                except Exception as exc:  # a bug: answer 500 without details, keep serving
                    service._count("internal_errors")
                    status, payload, extra = service._error_parts(
                        _HTTPError(500, "InternalServerError", f"{type(exc).__name__} in the HTTP driver")
                    )
                await self._send(send, status, payload, extra)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: Sequence[tuple[bytes, bytes]], method: str, path: str, key: Any) -> _HTTPError | None:
        """The error that refuses a request before any work (wrong Host, cross-origin, no token), or ``None``.

        - bound to a loopback address, a ``Host`` that is not a loopback name, the bound
          address or one of ``allowed_hosts`` is refused with 400 (DNS rebinding);
        - a request that changes something (not GET/HEAD/OPTIONS) with an ``Origin`` other
          than the server's own is refused with 403 (a cross-site form or page);
        - with ``api_key`` set, every route but ``/health`` needs the bearer token (401).
        """
        host = origin = authorization = None
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"authorization":
                authorization = value
        driver = self.service.driver
        if host is not None and security.is_loopback_host(driver._bound_host):
            text = host.decode("latin-1")
            if not security.host_allowed(text, driver._bound_host, driver._live.allowed_hosts):
                return _HTTPError(
                    400,
                    "InvalidHost",
                    f"this server listens on {driver._bound_host} and does not answer for the host {text!r} "
                    "(DNS rebinding protection); use http://127.0.0.1 or localhost, or list the name in the driver "
                    "parameter allowed_hosts",
                )
        if origin is not None and method not in ("GET", "HEAD", "OPTIONS"):
            text = origin.decode("latin-1")
            if not security.same_origin(text, (host or b"").decode("latin-1")):
                return _HTTPError(
                    403,
                    "CrossOriginRequest",
                    f"a {method} from the web page at {text!r} is refused: this server serves cross-origin pages no "
                    "requests that do work; call it from the server side, or from a page it serves",
                )
        if key and path != "/health":
            given = authorization or b""
            if not security.bearer_matches(given, str(key)):
                message = "this server needs 'Authorization: Bearer <api_key>'" + (
                    "; the token given is wrong" if given else ""
                )
                return _HTTPError(401, "Unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
        return None

    def _counting(self, send: Any, method: str, route: str) -> Any:
        """``send`` that counts the response's status under ``(method, route, status)``."""
        counts = self.service.driver._http_counts

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                key = (method, route, str(message["status"]))
                counts[key] = counts.get(key, 0) + 1
            await send(message)

        return counted

    @staticmethod
    async def _read(receive: Any, declared: int, limit: int) -> bytes:
        if declared > limit:
            raise _HTTPError(413, "PayloadTooLarge", f"the body has {declared} bytes; this server takes at most {limit}")
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
                raise _HTTPError(413, "PayloadTooLarge", f"the body exceeds {limit} bytes, the most this server takes")
            chunks.append(chunk)
        if size > limit:
            raise _HTTPError(413, "PayloadTooLarge", f"the body exceeds {limit} bytes, the most this server takes")
        return b"".join(chunks)

    @staticmethod
    async def _send(send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]]) -> None:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# -- the driver --------------------------------------------------------------------------------


class FastAPIDriver(PipelineDriver):
    """Serve the pipeline over HTTP with FastAPI and uvicorn, on the port the runtime allocates.

    Construct it through ``proc.add_driver(ref, FastAPIDriver, parameters)``; the
    runtime allocates the port named ``"http"`` and publishes the service record
    ``get_service("http")``. Construction is cheap: the app, the server and its
    socket appear only in :meth:`run`, which returns soon after :meth:`stop`.
    Every parameter (see :class:`FastAPIDriverParameters`) can change while it runs.

    Args:
        parameters: a :class:`FastAPIDriverParameters` or a mapping of its fields.

    Example:
        >>> int(FastAPIDriver({"task_ttl": 60}).get_parameters().task_ttl)
        60
    """

    parameters_class = FastAPIDriverParameters

    def __init__(self, parameters: FastAPIDriverParameters | Mapping[str, Any] | None = None) -> None:
        super().__init__(parameters)
        self._live: FastAPIDriverParameters = self._parameters  # type: ignore[assignment]
        self._server: Any = None
        self._service: _Service | None = None
        self._rebind = False
        self._bound_host = ""
        self._last_error: str | None = None
        self._counters: dict[str, int] = {}
        self._http_counts: dict[tuple[str, str, str], int] = {}
        self._resources = DriverResources()
        self._bound_port = 0

    def resources_request(self) -> DriverResourcesRequest:
        """One port, named ``"http"``."""
        return DriverResourcesRequest(ports=["http"])

    def services(self, resources: DriverResources) -> list[dict[str, Any]]:
        """The ``"http"`` service record: where clients reach the server."""
        host = str(self._live.host)
        address = resources.host if host in ("0.0.0.0", "::", "") else host
        return [service_record("http", self._port(resources), address=address)]

    def _port(self, resources: DriverResources) -> int:
        """The port to listen on: the ``listen_port`` parameter, else the one the runtime allocated."""
        return int(self._live.listen_port) or resources.ports["http"]

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        """Apply new parameters at once; a new ``host`` re-binds the same port; a new ``api_key`` updates the docs."""
        assert isinstance(new, FastAPIDriverParameters) and isinstance(old, FastAPIDriverParameters)
        self._live = new
        service = self._service
        if service is not None and bool(old.api_key) != bool(new.api_key):
            service.app.openapi_schema = None
        if (old.host != new.host or old.listen_port != new.listen_port) and self._server is not None:
            self._rebind = True
            self._server.should_exit = True

    def stop(self) -> None:
        """Ask the server to shut down; :meth:`run` returns once it has."""
        super().stop()
        server = self._server
        if server is not None:
            server.should_exit = True

    def stats(self) -> dict[str, Any]:
        """Counters: requests per route, error responses per status, tasks by outcome, callbacks."""
        counters: dict[str, Any] = dict(self._counters)
        if self._last_error is not None:
            counters["last_error"] = self._last_error
        service = self._service
        if service is not None:
            tasks = list(service.tasks.values())
            counters["tasks_active"] = sum(1 for t in tasks if t.finished is None)
            counters["tasks_kept"] = len(tasks)
        return counters

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        """Serve until :meth:`stop`.

        Raises:
            DriverError: the port cannot be bound (names host and port).
        """
        self._resources = resources
        port = self._port(resources)
        service = _Service(self, inference)
        self._service = service
        config = uvicorn.Config(
            service.front,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        self._bound_host = str(self._live.host)
        self._bound_port = port
        sock = _bind(self._bound_host, port)  # a bad host fails the driver at once, naming it
        _run_loop(self._serve(config, sock, port, service), config)

    async def _serve(self, config: Any, sock: socket.socket, port: int, service: _Service) -> None:
        """Serve on ``sock``; after a ``host`` change, on a new socket, on the same loop (tasks go on)."""
        service.http = httpx.AsyncClient(timeout=10.0)
        service.submitter.start(asyncio.get_running_loop())
        service._spawn(service.sweep_forever())
        try:
            while True:
                server = _Server(config)
                self._rebind = False
                self._server = server
                if self.stopped.is_set():
                    server.should_exit = True
                try:
                    await server.serve(sockets=[sock])
                finally:
                    sock.close()
                    self._server = None
                if not self._rebind or self.stopped.is_set():
                    return
                sock = self._rebound(self._bound_port, self._bound_host)
        finally:
            for job in list(service.background):
                job.cancel()
            if service.background:
                await asyncio.gather(*service.background, return_exceptions=True)
            await service.http.aclose()
            service.submitter.stop()

    def _rebound(self, port: int, previous: str) -> socket.socket:
        """A socket on the new host and port; when it cannot be bound, back on the previous ones (parameters too)."""
        host = str(self._live.host)
        wanted = self._port(self._resources)
        try:
            sock = _bind(host, wanted)
        except DriverError as exc:
            self._counters["host_changes_refused"] = self._counters.get("host_changes_refused", 0) + 1
            self._last_error = str(exc)
            with self._parameters_lock:
                kept = 0 if port == self._resources.ports.get("http") else port
                reverted = dataclasses.replace(self._live, host=String(previous), listen_port=Integer(kept))
                self._parameters = self._live = reverted
            sock = _bind(previous, port)
            host, wanted = previous, port
        self._bound_host = host
        self._bound_port = wanted
        return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the driver stops through :meth:`FastAPIDriver.stop`.

    (In a driver process uvicorn would otherwise take SIGINT/SIGTERM from the runtime.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DriverError(
            f"FastAPIDriver cannot listen on {host}:{port}: {exc}; check the 'host' parameter "
            "(an address of this machine, e.g. 127.0.0.1 or 0.0.0.0)"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _run_loop(coro: Awaitable[None], config: Any) -> None:
    """Run ``coro`` on a fresh event loop of uvicorn's choice (uvloop when installed)."""
    factory = getattr(config, "get_loop_factory", lambda: None)()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


# -- the client --------------------------------------------------------------------------------

_TYPE_NAMES = {
    name: getattr(rtypes, name)
    for name in (
        "Integer Float String Boolean FloatRange IntegerRange Image BoundingBox Point Class Classes".split()
    )
}


def _resolve_type(text: str) -> Any:
    """The value type named by ``type_name`` (``"List[Integer] | None"``), or ``None`` if unknown."""
    text = text.strip()
    if text.endswith(" | None"):
        inner = _resolve_type(text[: -len(" | None")])
        return None if inner is None else Optional[inner]
    match = re.fullmatch(r"(\w+)\[(.*)\]", text)
    if match is None:
        return _TYPE_NAMES.get(text)
    head, rest = match.group(1), match.group(2)
    args, depth, start = [], 0, 0
    for i, ch in enumerate(rest):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            args.append(rest[start:i])
            start = i + 1
    args.append(rest[start:])
    resolved = [_resolve_type(a) for a in args]
    if any(r is None for r in resolved):
        return None
    generic = {"List": (rtypes.List, 1), "Dict": (rtypes.Dict, 2), "Enum": (rtypes.Enum, 1)}.get(head)
    if generic is None or len(resolved) != generic[1]:
        return None
    return generic[0][resolved[0] if len(resolved) == 1 else tuple(resolved)]


def _encode_value(value: Any) -> Any:
    if isinstance(value, rtypes.Value):
        return value.to_json()
    if isinstance(value, np.ndarray):
        return rtypes.Image(value).to_json()
    return value


class FastAPIClient:
    """Call a :class:`FastAPIDriver` from Python, with typed values back.

    Give the driver's handle (``process=``) or its address (``host=``, ``port=``).
    Values are sent in their JSON form (typed values and numpy images are encoded),
    and results come back as :mod:`rvai_sdk.types` values, decoded with the types the
    server's ``GET /pipeline`` names. Every failure, a refused connection included,
    raises :class:`FastAPIClientError` with the status code and the server's message.

    Args:
        process: the handle ``proc.add_driver(...)`` returned.
        host: the server's address (with ``port``), instead of ``process``.
        port: the server's port.
        api_key: the bearer token, when the server has one.
        timeout: seconds to wait for each HTTP response.

    Example::

        with FastAPIClient(process=http) as client:
            client.wait(timeout=10)
            client.predict({"x": 1}, sid="cam-1")    # {'y': Integer(2)}
    """

    def __init__(
        self,
        process: PipelineDriverProcess | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._process = process
        if process is not None:
            try:
                record = process.get_service("http")
            except DriverError as exc:
                failed = self._driver_failure()
                raise failed or FastAPIClientError(str(exc)) from exc
            lan = record.get("taggedAddresses", {}).get("lan", record)
            host, port = str(lan["address"]), int(lan["port"])
        if host is None or port is None:
            raise FastAPIClientError("FastAPIClient needs process= (a driver handle) or both host= and port=")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        self._output_types: dict[str, Any] | None = None

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise FastAPIClientError(
                f"{method} {self.base_url}{path} failed: {type(exc).__name__}: {exc}; is the driver running?"
            ) from exc
        if response.status_code >= 400:
            raise self._error(method, path, response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise FastAPIClientError(
                f"{method} {path}: the server answered {response.status_code} with a body that is not JSON",
                status_code=response.status_code,
            ) from exc

    def _error(self, method: str, path: str, response: Any) -> FastAPIClientError:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {}
        server_message = str(error.get("message") or response.text[:500])
        where = f" (cell {error['cell']!r})" if error.get("cell") else f" (field {error['field']!r})" if error.get("field") else ""
        return FastAPIClientError(
            f"{method} {path} answered {response.status_code} {error.get('type', '')}{where}: {server_message}",
            status_code=response.status_code,
            error_type=error.get("type"),
            server_message=server_message,
            cell=error.get("cell"),
            field=error.get("field"),
            body=body,
        )

    def _types(self) -> dict[str, Any]:
        if self._output_types is None:
            outputs = self.pipeline().get("outputs", {})
            self._output_types = {ref: _resolve_type(str(o.get("type", ""))) for ref, o in outputs.items()}
        return self._output_types

    def _decode(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        types = self._types()
        decoded: dict[str, Any] = {}
        for ref, value in outputs.items():
            tp = types.get(ref)
            decoded[ref] = value if tp is None else rtypes.from_json(tp, value)
        return decoded

    @staticmethod
    def _request(inputs: Mapping[str, Any], sid: str | None) -> dict[str, Any]:
        return {"inputs": {ref: _encode_value(v) for ref, v in inputs.items()}, "sid": sid}

    # -- API ---------------------------------------------------------------------------------

    def _driver_failure(self) -> FastAPIClientError | None:
        """The error to raise at once when the driver handle shows the driver FAILED or STOPPED, else ``None``."""
        process = self._process
        if process is None:
            return None
        state = process.status.name
        if state not in ("FAILED", "STOPPED"):
            return None
        failure = process.failure or ""
        first = failure.splitlines()[0] if failure else ""
        if state == "FAILED":
            message = f"driver {process.ref!r} FAILED: {first}; its traceback is in the handle's .failure"
        else:
            message = f"driver {process.ref!r} is STOPPED; add it again and make a client from the new handle"
        return FastAPIClientError(message, error_type=state, server_message=failure or None)

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``GET /ready`` answers 200.

        Made from a driver handle (``process=``), it raises at once when the handle
        shows the driver FAILED (with the driver's error) or STOPPED, instead of
        waiting out ``timeout``.

        Raises:
            FastAPIClientError: not ready within ``timeout`` seconds (carries the last failure),
                or the driver FAILED or STOPPED (``error_type`` is ``"FAILED"``/``"STOPPED"``).
        """
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        last: FastAPIClientError | None = None
        for attempt in itertools.count():
            failed = self._driver_failure()
            if failed is not None:
                raise failed
            try:
                self._call("GET", "/ready")
                return
            except FastAPIClientError as exc:
                if exc.status_code is not None and exc.status_code not in (503,):
                    raise
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pause.wait(min(0.01 * 2**min(attempt, 5), remaining))
        raise self._driver_failure() or FastAPIClientError(
            f"{self.base_url} was not ready within {timeout} s: {last}",
            status_code=last.status_code if last else None,
        )

    def health(self) -> bool:
        """Whether ``GET /health`` answers (the server is up)."""
        try:
            self._call("GET", "/health")
        except FastAPIClientError:
            return False
        return True

    def pipeline(self) -> dict[str, Any]:
        """The pipeline's description (``GET /pipeline``)."""
        description: dict[str, Any] = self._call("GET", "/pipeline")
        return description

    def predict(self, inputs: Mapping[str, Any], sid: str | None = None) -> dict[str, Any]:
        """Run one request; output ref → typed value.

        Raises:
            FastAPIClientError: any failure (422 bad input with ``field``, 500 cell failure with ``cell``, 503...).
        """
        body = self._call("POST", "/predict", json=self._request(inputs, sid))
        return self._decode(body["outputs"])

    def predict_files(
        self, inputs: Mapping[str, Any], files: Mapping[str, bytes], sid: str | None = None
    ) -> dict[str, Any]:
        """Run one request as a multipart upload: ``files`` maps image inputs to file bytes (PNG, JPEG...)."""
        data = {ref: json.dumps(_encode_value(v)) for ref, v in inputs.items()}
        if sid is not None:
            data["sid"] = sid
        upload = {ref: (f"{ref}.bin", content, "application/octet-stream") for ref, content in files.items()}
        body = self._call("POST", "/predict", data=data, files=upload)
        return self._decode(body["outputs"])

    def predict_batch(
        self, requests: Sequence[Mapping[str, Any] | tuple[Mapping[str, Any], str | None]]
    ) -> list[dict[str, Any] | FastAPIClientError]:
        """Run many requests in one call; per item, its typed outputs or the error that failed it alone.

        Args:
            requests: each an inputs mapping, an ``(inputs, sid)`` pair, or ``{"inputs": ..., "sid": ...}``.
        """
        items = []
        for item in requests:
            if isinstance(item, tuple):
                items.append(self._request(item[0], item[1]))
            elif "inputs" in item and set(item) <= {"inputs", "sid"}:
                items.append(self._request(item["inputs"], item.get("sid")))
            else:
                items.append(self._request(item, None))
        body = self._call("POST", "/predict/batch", json={"requests": items})
        results: list[dict[str, Any] | FastAPIClientError] = []
        for i, result in enumerate(body["results"]):
            if result.get("error"):
                error = result["error"]
                results.append(
                    FastAPIClientError(
                        f"batch item {i} failed: {error.get('type')}: {error.get('message')}",
                        status_code=200,
                        error_type=error.get("type"),
                        server_message=error.get("message"),
                        cell=error.get("cell"),
                        field=error.get("field"),
                        body=result,
                    )
                )
            else:
                results.append(self._decode(result["outputs"]))
        return results

    def predict_task(
        self, inputs: Mapping[str, Any], sid: str | None = None, callback_url: str | None = None
    ) -> str:
        """Queue an asynchronous task; its id."""
        body = self._request(inputs, sid)
        if callback_url is not None:
            body["callback_url"] = callback_url
        task: dict[str, Any] = self._call("POST", "/tasks", json=body)
        return str(task["id"])

    def task(self, task_id: str, wait: float = 0.0) -> dict[str, Any]:
        """A task's status record (``GET /tasks/{id}``), waiting up to ``wait`` seconds for it to finish."""
        record: dict[str, Any] = self._call("GET", f"/tasks/{task_id}", params={"wait": wait} if wait else None)
        return record

    def tasks(self) -> list[dict[str, Any]]:
        """Every task the server keeps."""
        return list(self._call("GET", "/tasks")["tasks"])

    def delete_task(self, task_id: str) -> None:
        """Forget a task."""
        self._call("DELETE", f"/tasks/{task_id}")

    def task_result(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for a task and return its typed outputs.

        Raises:
            FastAPIClientError: the task failed (its error), is unknown (404), or did not finish in ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            record = self.task(task_id, wait=max(0.0, min(remaining, _MAX_WAIT)))
            if record["status"] == "done":
                return self._decode(record["result"])
            if record["status"] == "failed":
                error = record.get("error") or {}
                raise FastAPIClientError(
                    f"task {task_id} failed: {error.get('type')}: {error.get('message')}",
                    status_code=200,
                    error_type=error.get("type"),
                    server_message=error.get("message"),
                    cell=error.get("cell"),
                    body=record,
                )
            if remaining <= 0:
                raise FastAPIClientError(f"task {task_id} did not finish within {timeout} s (status {record['status']})")

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> FastAPIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FastAPIClient {self.base_url}>"
