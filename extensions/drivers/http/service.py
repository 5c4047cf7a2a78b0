"""The HTTP application of one running FastAPIDriver: the routes, wired to the codec, dispatch, tasks and errors.

What uvicorn serves (:attr:`Service.asgi`) is::

    AccessLogMiddleware → LatencyMiddleware → CountingMiddleware → GuardMiddleware → POST /predict ? PredictEndpoint : FastAPI app

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from this server
(``/docs/assets/...``, the files the ``fastapi-offline`` package ships), never from a CDN,
so they work on a machine without internet. Every answer names the server's instance
(the ``X-Rvai-Instance`` header; ``/health`` and ``/ready`` also in the body), so that a
caller can tell its own server from another one on the same port.

The FastAPI app serves every other route (and the 404/405 answers); each of its routes
turns a failure into an answer through the one mapping (:class:`~.errors.ErrorMapper`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rvai_sdk import _tracing
from rvai_sdk._compat import require
from rvai_sdk.drivers.metrics import CONTENT_TYPE, LatencyHistogram, inference_metrics_text

from . import security
from .codec import Codec
from .dispatch import Dispatcher
from .errors import ErrorMapper, HTTPError, json_response, json_type, unprocessable
from .home import home_page
from .logs import AccessLogMiddleware
from .latency import LatencyMiddleware
from .middleware import TIMEOUT_KEY, CountingMiddleware, GuardMiddleware
from .models import models, openapi_document, request_body
from .predict import OFF_LOOP_BYTES, PredictEndpoint, read_body, unsupported_media_type
from .parameters import MAX_WAIT
from .tasks import TaskStore
from . import oip

T = TypeVar("T")

if TYPE_CHECKING:
    import fastapi
    import fastapi.openapi.docs as fastapi_docs
    import fastapi.responses as fastapi_responses
    import fastapi.routing as fastapi_routing
    import fastapi_offline
    import starlette.routing as starlette_routing
    from fastapi import FastAPI, Request, Response

    from rvai_sdk.drivers import RestrictedInferenceProcess

    from .parameters import LiveState
else:
    fastapi = require("fastapi", extra="fastapi")
    fastapi_docs = require("fastapi.openapi.docs", extra="fastapi")
    fastapi_responses = require("fastapi.responses", extra="fastapi")
    fastapi_routing = require("fastapi.routing", extra="fastapi")
    fastapi_offline = require("fastapi_offline", extra="fastapi")
    starlette_routing = require("starlette.routing", extra="fastapi")
    # FastAPI reads the routes' annotations at run time
    FastAPI, Request, Response = fastapi.FastAPI, fastapi.Request, fastapi.Response

__all__ = ["Service"]

Handler = Callable[[Request], Awaitable[Response]]

DOCS_ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
"""The files ``/docs/assets/NAME`` serves (from the ``fastapi-offline`` package), with their media types."""


def docs_assets_dir() -> Path:
    """The folder of the Swagger UI and ReDoc files the ``fastapi-offline`` package ships."""
    return Path(fastapi_offline.__file__).parent / "static"


class Service:
    """The routes of one running driver, and what they share (lives on the event loop).

    Args:
        state: the driver's live state (parameters, bound host, counters).
        inference: the driver's port onto the inference process.
        instance: the running driver's id, named by ``/health`` and ``/ready``.
    """

    def __init__(self, state: LiveState, inference: RestrictedInferenceProcess, instance: str = "") -> None:
        self.state = state
        self.instance = instance
        self.inference = inference
        self.codec = Codec(inference.pipeline)
        self.models = models(self.codec)
        self.errors = ErrorMapper(state, inference.pipeline.name)
        self.dispatcher = Dispatcher(inference, self.codec)
        namespace = state.parameters.task_namespace
        self.tasks = TaskStore(
            state, self.errors, self.dispatcher.run_task, inference.pipeline.name if namespace is None else str(namespace), instance
        )
        self.predict = PredictEndpoint(self)
        self._openapi: dict[str, Any] | None = None
        self._predict_doc: Any = None
        self.app = self._build_app()
        self.latency = LatencyHistogram()  # request durations by route, for GET /metrics
        self.asgi: Any = AccessLogMiddleware(
            LatencyMiddleware(CountingMiddleware(GuardMiddleware(self._route, state, self.errors), state), self.latency),
            instance=instance,
        )
        if _tracing.TRACER is not None:  # a traced process: one span per request, outermost
            from .tracing import TracingMiddleware

            self.asgi = TracingMiddleware(self.asgi)

    async def _route(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST":
            await self.predict(scope, receive, send)  # the lean path: no FastAPI routing
        else:
            await self.app(scope, receive, send)

    # -- lifecycle (on the loop) ---------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the task store, start the tasks' background work and the dispatch threads.

        Raises:
            ParameterError: the task store cannot be opened (nothing is left started).
        """
        self.tasks.start()
        self.dispatcher.start(loop)

    async def close(self) -> None:
        """Stop tasks, callbacks and dispatch threads."""
        try:
            await self.tasks.close()
        finally:
            self.dispatcher.stop()

    # -- what routes share ---------------------------------------------------------------------

    def timeout(self, header: float | None) -> float | None:
        """A request's deadline: its ``X-Request-Timeout``, else the driver's ``request_timeout``."""
        if header is None and self.state.parameters.request_timeout is not None:
            return float(self.state.parameters.request_timeout)
        return header

    def pixel_limit(self) -> int | None:
        """``max_image_pixels`` (``None``: ``Image.max_pixels``)."""
        limit = self.state.parameters.max_image_pixels
        return None if limit is None else int(limit)

    def decode(
        self, obj: Any, header_sid: str | None, where: str = "", extra: tuple[str, ...] = ()
    ) -> tuple[dict[str, Any], str | None]:
        """One request object → typed inputs and sid, under the driver's limits (422 otherwise)."""
        parameters = self.state.parameters
        return self.codec.request(
            obj,
            header_sid,
            where,
            extra,
            max_sid_length=int(parameters.max_sid_length),
            max_image_pixels=self.pixel_limit(),
        )

    async def json_body(self, request: Request, then: Callable[[dict[str, Any]], T]) -> T:
        """``then(the body as an object)`` (415 for another content type, 413 too large, 422 not an object); a
        body over ``OFF_LOOP_BYTES`` (base64 images) is parsed and handed to ``then`` on a worker thread, so
        that decoding it never stalls the event loop (``/health`` and every other request)."""
        content_type = request.headers.get("content-type", "").encode("latin-1")
        if not security.is_json_media_type(content_type):
            raise unsupported_media_type(content_type)
        declared = request.headers.get("content-length", "")
        limit = int(self.state.parameters.max_body_bytes)
        body = await read_body(request.receive, int(declared) if declared.isdigit() else -1, limit)

        def parse() -> T:
            return then(self.codec.json_object(body))

        if len(body) > OFF_LOOP_BYTES:
            result: T = await self.dispatcher.offload(parse)
            return result
        return parse()

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (made once; again after ``api_key`` is set or cleared)."""
        if self._openapi is None:
            routes = [self._predict_doc if getattr(r, "path", None) == "/predict" else r for r in self.app.routes]
            self._openapi = openapi_document(self.app, routes, self.models, bool(self.state.parameters.api_key))
        return self._openapi

    def forget_openapi(self) -> None:
        """Make the OpenAPI document again at the next request (the security scheme changed)."""
        self._openapi = None

    def _guard(self, handler: Handler) -> Handler:
        """Turn every failure of a route into its answer, through the one mapping; nothing escapes to uvicorn."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return self.errors.response(exc, request.url.path)

        guarded.__name__ = handler.__name__
        guarded.__doc__ = handler.__doc__
        return guarded

    # -- routes ----------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        codec, m, tasks = self.codec, self.models, self.tasks
        name = codec.pipeline.name
        app = fastapi.FastAPI(
            title=f"{name} (rvai_sdk)",
            description=f"Inference API of pipeline **{name}**, served by rvai_sdk's FastAPIDriver.",
            version="1",
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
        )
        errors: dict[int | str, dict[str, Any]] = {
            401: {"model": m["error"], "description": "missing or wrong bearer token"},
            413: {"model": m["error"], "description": "body too large"},
            422: {"model": m["error"], "description": "malformed body, or an unknown, missing or mistyped input"},
            500: {"model": m["error"], "description": "a cell failed; `cell` names it"},
            503: {"model": m["error"], "description": "the inference process cannot be reached"},
        }
        state_header = [
            {
                "name": "X-State-Id",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "the sid, when the body has none",
            }
        ]

        def route(path: str, endpoint: Handler, **kwargs: Any) -> None:
            app.add_api_route(path, self._guard(endpoint), response_model=None, **kwargs)

        async def health(request: Request) -> Response:
            """The server is up (needs no API key); ``instance`` names this running server."""
            return json_response({"status": "ok", "instance": self.instance})

        async def ready(request: Request) -> Response:
            """The inference process is reachable and warmed up; 503 when not."""
            try:  # may try to connect: off the event loop
                ok = await self.dispatcher.offload(self.inference.is_ready)
            except Exception:
                ok = False
            if not ok:
                raise HTTPError(503, "NotReady", "the inference process is not ready", headers={"Retry-After": "1"})
            return json_response({"status": "ready", "instance": self.instance})

        async def pipeline(request: Request) -> Response:
            """The pipeline: name, cells, inputs and outputs with their JSON schemas and field metadata."""
            return json_response(codec.describe())

        async def predict(request: Request) -> Response:
            """Run the pipeline on one request (JSON, or multipart with image files)."""
            raise AssertionError("documentation only: POST /predict is served by PredictEndpoint")

        async def predict_batch(request: Request) -> Response:
            """Run many requests; results in order, each item succeeding or failing alone."""
            self.state.count("predict_batch")
            header_sid = request.headers.get("x-state-id")
            timeout = self.timeout(request.scope.get(TIMEOUT_KEY))

            def decode_all(obj: dict[str, Any]) -> list[tuple[Any, dict[str, Any] | HTTPError]]:
                if set(obj) != {"requests"} or not isinstance(obj["requests"], list):
                    raise unprocessable("the body must be {\"requests\": [{\"inputs\": ..., \"sid\": ...}, ...]}", "requests")
                items = obj["requests"]
                limit = int(self.state.parameters.max_batch_items)
                if len(items) > limit:
                    raise HTTPError(413, "PayloadTooLarge", f"{len(items)} requests in one batch; at most {limit}")
                decoded: list[tuple[Any, dict[str, Any] | HTTPError]] = []  # (sid, inputs or the item's error)
                for i, item in enumerate(items):
                    where = f"requests[{i}]."
                    try:
                        if not isinstance(item, dict):
                            raise unprocessable(f"a request must be an object, got {json_type(item)}", where[:-1])
                        inputs, sid = self.decode(item, header_sid, where)
                        decoded.append((sid, inputs))
                    except HTTPError as exc:
                        decoded.append((item.get("sid") if isinstance(item, dict) and isinstance(item.get("sid"), str) else None, exc))
                return decoded

            jobs: list[asyncio.Future[dict[str, Any]] | HTTPError] = []
            sids: list[Any] = []
            for sid, inputs in await self.json_body(request, decode_all):  # submitted in order
                sids.append(sid)
                jobs.append(inputs if isinstance(inputs, HTTPError) else asyncio.ensure_future(self.dispatcher.run(inputs, sid, timeout)))
            results = []
            for sid, job in zip(sids, jobs):
                try:
                    if isinstance(job, HTTPError):
                        raise job
                    results.append({"outputs": await job, "error": None, "sid": sid})
                except Exception as exc:  # this item alone failed
                    results.append({"outputs": None, "error": self.errors.map(exc, "/predict/batch").error, "sid": sid})
            return json_response({"results": results})

        async def create_task(request: Request) -> Response:
            """Queue a request as an asynchronous task: 202 with its id; poll it, or give a callback_url."""
            header_sid = request.headers.get("x-state-id")

            def decode_one(obj: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
                inputs, sid = self.decode(obj, header_sid, extra=("callback_url",))
                return inputs, sid, obj.get("callback_url")

            inputs, sid, callback_url = await self.json_body(request, decode_one)
            timeout = self.timeout(request.scope.get(TIMEOUT_KEY))
            task = await tasks.create(inputs, sid, callback_url, timeout)
            return json_response(task.to_json(tasks.ttl), 202, headers={"Location": f"/tasks/{task.id}"})

        async def list_tasks(request: Request) -> Response:
            """Every task not yet expired, oldest first."""
            return json_response({"tasks": [t.to_json(tasks.ttl) for t in await tasks.listing()]})

        async def get_task(request: Request) -> Response:
            """A task's status, timestamps, and result or error; `?wait=` seconds waits for it to finish."""
            task = await tasks.find(request.path_params["task_id"])
            wait_text = request.query_params.get("wait")
            if wait_text is not None:
                try:
                    wait = float(wait_text)
                except ValueError:
                    raise unprocessable("wait must be a number of seconds", "wait") from None
                if not 0 <= wait <= MAX_WAIT:
                    raise unprocessable(f"wait must be between 0 and {MAX_WAIT:g} seconds", "wait")
                task = await tasks.wait(task, wait)
            return json_response(task.to_json(tasks.ttl))

        async def delete_task(request: Request) -> Response:
            """Forget a task (a running one still runs, its result is dropped)."""
            await tasks.delete(request.path_params["task_id"])
            return fastapi.Response(status_code=204)

        async def metrics(request: Request) -> Response:
            """Prometheus metrics: requests by outcome, per-cell latency, batch size and queue depth, live sids, HTTP."""
            try:  # may cross a process boundary: off the event loop
                stats: dict[str, Any] | None = await self.dispatcher.offload(self.inference.stats)
            except Exception:
                stats = None
            # the counters are copied here, on the event loop that updates them
            kept = await tasks.kept()
            http_counts, counters, latency = dict(self.state.http_counts), self.counters(kept), self.latency.snapshot()
            body = await self.dispatcher.offload(inference_metrics_text, name, stats, http_counts, counters, latency)
            return fastapi.Response(content=body, media_type=CONTENT_TYPE)

        async def home(request: Request) -> Response:
            """This page: the pipeline's inputs and outputs, and a form to try it."""
            return fastapi_responses.HTMLResponse(home_page(codec))

        async def openapi(request: Request) -> Response:
            return json_response(self.openapi())

        async def swagger(request: Request) -> Response:
            return fastapi_docs.get_swagger_ui_html(
                openapi_url="/openapi.json",
                title=f"{name} - Swagger UI",
                swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                swagger_css_url="/docs/assets/swagger-ui.css",
                swagger_favicon_url="/docs/assets/favicon.png",
            )

        async def redoc(request: Request) -> Response:
            return fastapi_docs.get_redoc_html(
                openapi_url="/openapi.json",
                title=f"{name} - ReDoc",
                redoc_js_url="/docs/assets/redoc.standalone.js",
                redoc_favicon_url="/docs/assets/favicon.png",
                with_google_fonts=False,
            )

        assets = docs_assets_dir()

        async def docs_asset(request: Request) -> Response:
            asset = request.path_params["name"]
            if asset not in DOCS_ASSETS:
                raise HTTPError(404, "NotFound", f"no docs asset {asset!r}; the assets are: {', '.join(DOCS_ASSETS)}")
            return fastapi_responses.FileResponse(
                assets / asset, media_type=DOCS_ASSETS[asset], headers={"Cache-Control": "public, max-age=86400"}
            )

        task_id = [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}]
        wait = [{"name": "wait", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT}}]
        route("/health", health, methods=["GET"], tags=["status"], responses={200: {"description": "up"}})
        route("/ready", ready, methods=["GET"], tags=["status"], responses={401: errors[401], 503: errors[503]})
        route("/pipeline", pipeline, methods=["GET"], tags=["pipeline"], responses={401: errors[401]})
        # the endpoint is mounted so that FastAPI answers other methods with 405; POST goes around FastAPI
        app.router.routes.append(starlette_routing.Route("/predict", self.predict, methods=["POST"]))
        self._predict_doc = fastapi_routing.APIRoute(
            "/predict",
            self._guard(predict),
            methods=["POST"],
            tags=["predict"],
            response_model=None,
            responses={200: {"model": m["predict_response"]}, **errors},
            openapi_extra={**request_body(codec, m["predict_request"], multipart=True), "parameters": state_header},
        )
        route(
            "/predict/batch",
            predict_batch,
            methods=["POST"],
            tags=["predict"],
            responses={200: {"model": m["batch_response"]}, **errors},
            openapi_extra={**request_body(codec, m["batch_request"]), "parameters": state_header},
        )
        route(
            "/tasks",
            create_task,
            methods=["POST"],
            tags=["tasks"],
            status_code=202,
            responses={
                202: {"model": m["task"]},
                429: {"model": m["error"], "description": "too many pending tasks"},
                **{k: v for k, v in errors.items() if k not in (500, 503)},
            },
            openapi_extra={**request_body(codec, m["task_request"]), "parameters": state_header},
        )
        route("/tasks", list_tasks, methods=["GET"], tags=["tasks"], responses={200: {"model": m["task_list"]}, 401: errors[401]})
        not_found = {"model": m["error"], "description": "unknown or expired task"}
        route(
            "/tasks/{task_id}",
            get_task,
            methods=["GET"],
            tags=["tasks"],
            responses={200: {"model": m["task"]}, 404: not_found, 401: errors[401], 422: errors[422]},
            openapi_extra={"parameters": task_id + wait},
        )
        route(
            "/tasks/{task_id}",
            delete_task,
            methods=["DELETE"],
            tags=["tasks"],
            status_code=204,
            responses={204: {"description": "deleted"}, 404: not_found, 401: errors[401]},
            openapi_extra={"parameters": task_id},
        )
        route("/metrics", metrics, methods=["GET"], include_in_schema=False)  # for Prometheus, not API clients
        route("/", home, methods=["GET"], include_in_schema=False)
        route("/openapi.json", openapi, methods=["GET"], include_in_schema=False)
        route("/docs", swagger, methods=["GET"], include_in_schema=False)
        route("/redoc", redoc, methods=["GET"], include_in_schema=False)
        route("/docs/assets/{name}", docs_asset, methods=["GET"], include_in_schema=False)

        async def http_error(request: Request, exc: Exception) -> Response:
            return self.errors.response(exc, request.url.path)

        app.add_exception_handler(require("starlette.exceptions", extra="fastapi").HTTPException, http_error)
        oip.mount(self, app)  # the Open Inference Protocol (KServe V2) under /v2, beside these routes
        return app

    def counters(self, kept: int | None) -> dict[str, Any]:
        """The driver's counters with the task gauges (``tasks_active``: pending or running here;
        ``tasks_kept``: ``kept``, the tasks in the task store, left out when the store did not answer;
        ``task_store_stalled``: 1 while the store has been stuck in one call for over 2 s, the task routes
        then answering 503 at once, else 0)."""
        counters: dict[str, Any] = dict(self.state.counters)
        counters["tasks_active"] = self.tasks.active()
        counters["task_store_stalled"] = int(self.tasks.stalled() is not None)
        if kept is not None:
            counters["tasks_kept"] = kept
        return counters

