"""The FastAPIDriver's parameters, and the live state the driver shares with its app."""

from __future__ import annotations

import dataclasses
import math
import re

from rvai_sdk.drivers import DriverParameters
from rvai_sdk.exc import ParameterError
from rvai_sdk.types import Boolean, Float, Integer, List, String

from .task_store import redacted

__all__ = ["FastAPIDriverParameters", "LiveState", "MAX_WAIT", "MAX_TASK_RESULT_BYTES"]

MAX_WAIT = 30.0
"""Longest a ``GET /tasks/{id}?wait=`` long-poll is held open, in seconds."""

MAX_TASK_RESULT_BYTES = 16 * 1024 * 1024
"""The default ``max_task_result_bytes``: the largest task result kept (its JSON form), 16 MiB."""


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
        max_pending_tasks: most tasks pending or running at once on this driver; more are refused with 429.
        max_kept_tasks: most tasks kept in the task store, finished ones included (until ``task_ttl``),
            by every driver on it; a new task beyond is refused with 429 (finished tasks are not capped
            by ``max_pending_tasks``: without this a client could fill the store, or this driver's memory
            with the ``memory`` store, with results).
        task_store: where tasks are kept: ``"memory"`` (this driver only, lost with it),
            ``"sqlite:///PATH"`` (a file; ``sqlite:////abs/path``), ``"redis://HOST:PORT/DB"`` (the
            ``redis`` extra) or ``"postgresql://USER@HOST:PORT/DB"`` (the ``sql`` extra). ``None`` (the
            default): the SQLite file ``tasks.sqlite3`` in ``$RVAI_SDK_HOME``, else
            ``$XDG_STATE_HOME/rvai-sdk``, else ``~/.local/state/rvai-sdk``. Drivers of the same
            ``task_namespace`` on one store answer for each other's tasks. Read when the driver starts
            (a change applies at its next start).
        task_namespace: which tasks of the store are this driver's to see, answer for and recover:
            those of drivers with the same namespace (a deployment's replicas behind one load
            balancer); ``None`` (the default): the pipeline's name. Give deployments that share a
            store and a pipeline name (staging and production on one Redis) namespaces of their
            own, or each would read, list and take over the other's tasks. Letters, digits and
            ``_ . : -``, at most 128. Read when the driver starts.
        task_lease: seconds a driver's hold on its running tasks lasts without a heartbeat (renewed every
            third of it); once lapsed, a driver on the same store reports them failed (``TaskInterrupted``)
            and delivers their pending callbacks.
        max_task_result_bytes: the largest task result kept, in bytes of its JSON form (arrays in base64);
            a larger result fails its task with ``TaskResultTooLarge`` (status 413).
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
        open_inference_protocol: serve the Open Inference Protocol (KServe V2, Triton's HTTP
            API) under ``/v2`` beside the driver's own routes; on by default.
    """

    host: String = DriverParameters.field(default=String("127.0.0.1"), description="address to listen on")
    listen_port: Integer = DriverParameters.field(default=Integer(0), description="fixed port; 0: the runtime's")
    api_key: String | None = DriverParameters.field(default=None, description="bearer token; None: no auth")
    task_ttl: Integer = DriverParameters.field(default=Integer(600), description="seconds a finished task is kept")
    max_pending_tasks: Integer = DriverParameters.field(default=Integer(1024), description="429 beyond this")
    max_kept_tasks: Integer = DriverParameters.field(default=Integer(10_000), description="tasks kept, finished too; 429 beyond")
    task_store: String | None = DriverParameters.field(
        default=None, description="memory, sqlite:///PATH, redis://..., postgresql://...; None: the default SQLite file"
    )
    task_namespace: String | None = DriverParameters.field(
        default=None, description="whose tasks this driver sees in its store; None: the pipeline's name"
    )
    task_lease: Float = DriverParameters.field(default=Float(10.0), description="seconds a dead driver's tasks stay held")
    max_task_result_bytes: Integer = DriverParameters.field(
        default=Integer(MAX_TASK_RESULT_BYTES), description="largest task result kept (JSON bytes); 413 beyond"
    )
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
    open_inference_protocol: Boolean = DriverParameters.field(
        default=Boolean(True), description="serve the Open Inference Protocol (KServe V2) under /v2"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("task_ttl", "max_pending_tasks", "max_kept_tasks", "max_body_bytes", "max_batch_items", "callback_retries", "max_sid_length"):
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
        if not float(self.task_lease) > 0:
            raise ParameterError(
                f"FastAPIDriverParameters.task_lease must be > 0 seconds, got {self.task_lease}", field="task_lease"
            )
        if int(self.max_task_result_bytes) < 1:
            raise ParameterError(
                f"FastAPIDriverParameters.max_task_result_bytes must be >= 1, got {self.max_task_result_bytes}",
                field="max_task_result_bytes",
            )
        if self.task_store is not None and not (
            str(self.task_store) == "memory" or re.match(r"^(sqlite|redis|rediss|unix|postgresql|postgres|postgresql\+psycopg)://", str(self.task_store))
        ):
            raise ParameterError(
                f"FastAPIDriverParameters.task_store {redacted(str(self.task_store))!r} is not a store: use 'memory', "
                "'sqlite:///PATH', 'redis://HOST:PORT/DB' or 'postgresql://USER@HOST:PORT/DB' (None: the default SQLite file)",
                field="task_store",
            )
        if self.task_namespace is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", str(self.task_namespace)):
            raise ParameterError(
                f"FastAPIDriverParameters.task_namespace {str(self.task_namespace)[:40]!r} must be 1 to 128 letters, "
                "digits or '_.:-' (None: the pipeline's name)",
                field="task_namespace",
            )
        if self.request_timeout is not None and not 0 < float(self.request_timeout) < math.inf:
            raise ParameterError(
                f"FastAPIDriverParameters.request_timeout must be > 0 seconds or None (none), got {self.request_timeout}",
                field="request_timeout",
            )


@dataclasses.dataclass
class LiveState:
    """What the driver and its HTTP app share while it runs (all read and written on the event loop,
    except :attr:`parameters`, which the driver swaps whole from its host's thread).

    Attributes:
        parameters: the parameters in force now.
        bound_host: the address the server is bound to (the Host check compares against it).
        counters: the driver's counters (``predict``, ``http_<status>``, ``tasks_*``, ...).
        http_counts: ``(method, route, status)`` → responses sent.
    """

    parameters: FastAPIDriverParameters
    bound_host: str = ""
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    http_counts: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)

    def count(self, key: str) -> None:
        """Add one to the counter ``key``."""
        self.counters[key] = self.counters.get(key, 0) + 1
