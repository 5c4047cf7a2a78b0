"""The HTTP driver, one concept a module; import its public names from ``rvai_sdk.extensions.drivers.fast_api_driver``.

Serving a request (see ``service.py`` for the ASGI stack)::

    uvicorn → latency.LatencyMiddleware → middleware.CountingMiddleware → middleware.GuardMiddleware
            → POST /predict: predict.PredictEndpoint   (codec.Codec decodes and validates once,
                                                        dispatch.Dispatcher submits and brings results back)
            → anything else: the FastAPI app of service.Service (tasks.TaskStore, home, models' OpenAPI)
    every failure → errors.ErrorMapper, the one mapping from an exception to an HTTP answer

- ``parameters``: ``FastAPIDriverParameters`` and the live state the driver shares with its app.
- ``codec``: the pipeline's inputs and outputs in JSON; whole requests with field paths.
- ``models``: the pydantic models of the API and its OpenAPI document.
- ``errors``: ``HTTPError`` and the one mapping.
- ``security``: Host, Origin, content type, bearer token and callback destination checks.
- ``middleware``: counting and the checks before any work, as ASGI middleware.
- ``latency``: timing each request by route for the ``GET /metrics`` histogram.
- ``predict``: the ``POST /predict`` endpoint.
- ``dispatch``: submitting to the inference process with few thread hops.
- ``tasks``: asynchronous tasks and their callbacks; taking over the tasks of a driver that died.
- ``task_store``: where tasks are kept: memory, an SQLite file (the default), Redis or PostgreSQL.
- ``home``: the ``GET /`` page.
- ``service``: the app of one running driver, its routes.
- ``driver``: ``FastAPIDriver``: uvicorn on the runtime's port, re-binding on a host change.
- ``client``: ``FastAPIClient``.
- ``oip``: the Open Inference Protocol (KServe V2, Triton's HTTP API) under ``/v2``: type mapping and routes.

The Prometheus text of ``GET /metrics`` is made by ``rvai_sdk.drivers.metrics``, shared
with the stream driver and the CLI.
"""
