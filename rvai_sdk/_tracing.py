"""Tracing internals: the spans the SDK makes, the context it carries across processes, and the child config.

Everything here is called only where :data:`TRACER` is not ``None``: the hot paths read
``_tracing.TRACER`` once and skip the call when tracing is off, so a process that never
calls :func:`rvai_sdk.tracing.configure_tracing` never imports OpenTelemetry and pays one
``is None`` check per hook. The public side (configuration, exporters) is
:mod:`rvai_sdk.tracing`.

Spans (names and kinds):

========================  ========  ===========================================================
``POST /predict`` ...     SERVER    one per HTTP request (FastAPIDriver; an incoming ``traceparent`` is its parent)
``rvai.predict``          INTERNAL  ``predict``/``submit`` on a process handle or a driver's port
``rvai.send``             CLIENT    the request's hop to the inference process (``unix`` or ``ray`` link)
``rvai.serve``            SERVER    the same hop, in the inference process, until the request is answered
``rvai.cell CELL``        INTERNAL  one cell call; a batched call is a child of its first request and links to every request
``rvai.frame SOURCE``     INTERNAL  one frame of a stream (SourceSinkDriver): the root of the frame's trace
``rvai.sink.write SINK``  INTERNAL  one ``Sink.write``; child of its first record's frame, links to every record's frame
========================  ========  ===========================================================
"""

from __future__ import annotations

import collections
import contextvars
import functools
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from rvai_sdk.tracing import TracingConfig

__all__ = [
    "TRACER",
    "CONFIG",
    "install",
    "uninstall",
    "child_config",
    "apply_child_config",
    "flush",
    "current",
    "carry",
    "predict",
    "hop",
    "serve",
    "start_cell",
    "end_cell",
    "start_frame",
    "end_frame",
    "send_frame",
    "note_record",
    "sink_write",
]

TRACER: Tracer | None = None
"""The SDK's tracer while tracing is on; ``None`` (the default) when it is off."""

CONFIG: TracingConfig | None = None
"""The configuration this process traces with (what child processes get), or ``None``."""

_propagator: Any = None
_flush: Callable[[int], Any] | None = None
_lock = threading.Lock()


def install(tracer: Tracer, config: TracingConfig | None, flush: Callable[[int], Any] | None = None) -> None:
    """Turn tracing on in this process with ``tracer`` (``config``: what child processes get, if anything;
    ``flush(timeout_millis)``: exports what is held, see :func:`flush`)."""
    global TRACER, CONFIG, _propagator, _flush
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator = TraceContextTextMapPropagator()
    CONFIG = config
    _flush = flush
    TRACER = tracer


def uninstall() -> None:
    """Turn tracing off in this process (hooks go back to their ``is None`` check)."""
    global TRACER, CONFIG, _flush
    TRACER = None
    CONFIG = None
    _flush = None


def flush(timeout: float = 5.0) -> None:
    """Export the spans a batching exporter (OTLP) still holds, waiting at most ``timeout`` seconds.

    Called where a process stops serving (the inference server closes, a driver's link
    closes, a Ray replica stops): child processes end with ``os._exit``, which runs no
    ``atexit`` handler, so this is their last chance. Never raises.
    """
    function = _flush
    if function is None:
        return
    try:
        function(int(timeout * 1000))
    except Exception:
        pass


def child_config() -> TracingConfig | None:
    """What a child process needs to trace as this one does (``None``: tracing is off here)."""
    return CONFIG if TRACER is not None else None


def apply_child_config(config: TracingConfig | None, process: str) -> None:
    """In a child process (inference, driver, Ray replica): trace with the parent's configuration.

    Never raises: a child that cannot set tracing up (the extra is missing there) serves untraced.
    """
    if config is None or TRACER is not None:
        return
    try:
        from rvai_sdk.tracing import configure_tracing

        configure_tracing(config.exporter, endpoint=config.endpoint, path=config.path,
                          service_name=config.service_name, process=process)
    except Exception:  # tracing is an aid: never the reason a process does not start
        import logging

        logging.getLogger("rvai_sdk.tracing").warning("process %s: tracing could not be set up", process, exc_info=True)


# -- context -----------------------------------------------------------------------------------------


def current() -> Context:
    """This thread's (task's) OpenTelemetry context."""
    from opentelemetry import context

    return context.get_current()


def carry(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` bound to the caller's context, to run on another thread (``contextvars`` do not follow threads)."""
    return functools.partial(contextvars.copy_context().run, function)


def _traceparent(span: Span) -> str | None:
    from opentelemetry import trace

    carrier: dict[str, str] = {}
    _propagator.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent")


def extract(traceparent: str | None) -> Context | None:
    """The context of a W3C ``traceparent`` header (``None`` when absent; an invalid one starts a new trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})  # type: ignore[no-any-return]


def _end(span: Span, future: Future[Any]) -> None:
    """End ``span`` with ``future``'s outcome (a done-callback)."""
    exc = future.exception() if not future.cancelled() else None
    if exc is not None:
        _fail(span, exc)
    span.end()


def _fail(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _sid_attributes(sid: str | None) -> dict[str, Any]:
    return {} if sid is None else {"rvai.sid": sid}


# -- requests: predict, the transport hop, the inference process's side --------------------------------


def predict(submit: Callable[..., Future[Any]], inputs: dict[str, Any], sid: str | None, timeout: float | None) -> Future[Any]:
    """``submit(inputs, sid, timeout)`` inside an ``rvai.predict`` span that ends when the request does."""
    tracer = TRACER
    if tracer is None:
        return submit(inputs, sid, timeout)
    return _submit_in(tracer.start_span("rvai.predict", attributes=_sid_attributes(sid)), submit, inputs, sid, timeout)


def _submit_in(
    span: Any, submit: Callable[..., Future[Any]], inputs: dict[str, Any], sid: str | None, timeout: float | None
) -> Future[Any]:
    """``submit(inputs, sid, timeout)`` with ``span`` current; the span ends with the request (at once if it raises)."""
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(span))
    try:
        future = submit(inputs, sid, timeout)
    except BaseException as exc:
        _fail(span, exc)
        span.end()
        raise
    finally:
        context.detach(token)
    future.add_done_callback(functools.partial(_end, span))
    return future


def hop(future: Future[Any], transport: str, pipeline: str, sid: str | None) -> str | None:
    """Start the ``rvai.send`` span of a request leaving on ``transport``; its ``traceparent`` for the frame.

    The span is a child of the caller's context and ends when ``future`` (the request) does.
    """
    from opentelemetry.trace import SpanKind

    tracer = TRACER
    if tracer is None:
        return None
    attributes = {"rpc.system": f"rvai.{transport}", "rvai.pipeline": pipeline, **_sid_attributes(sid)}
    span = tracer.start_span("rvai.send", kind=SpanKind.CLIENT, attributes=attributes)
    future.add_done_callback(functools.partial(_end, span))
    return _traceparent(span)


def serve(
    submit: Callable[..., Future[Any]],
    inputs: dict[str, Any],
    sid: str | None,
    timeout: float | None,
    traceparent: str | None,
    transport: str,
) -> Future[Any]:
    """In the inference process: ``submit`` a request that arrived with ``traceparent`` inside an ``rvai.serve`` span.

    The executor keeps the span's context with the request, so its cell spans are the span's children.
    """
    tracer = TRACER
    if tracer is None:
        return submit(inputs, sid, timeout)
    from opentelemetry.trace import SpanKind

    span = tracer.start_span(
        "rvai.serve", context=extract(traceparent), kind=SpanKind.SERVER,
        attributes={"rpc.system": f"rvai.{transport}", **_sid_attributes(sid)},
    )
    return _submit_in(span, submit, inputs, sid, timeout)


# -- cells --------------------------------------------------------------------------------------------


def start_cell(plan: Any, reqs: list[Any]) -> tuple[Span, object] | None:
    """The span of one cell call (``plan``: the cell's plan; ``reqs``: its requests), current while the cell runs.

    One request: a child of the request's context. A batch: a child of the first
    request's context with a link to each request's span (so every request's trace
    shows the call it was part of).
    """
    tracer = TRACER
    if tracer is None:
        return None
    from opentelemetry import context, trace

    parent = getattr(reqs[0], "trace", None)
    links = None
    attributes: dict[str, Any] = {"rvai.cell": plan.ref, "rvai.batch_size": len(reqs)}
    if plan.batched:
        links = []
        for req in reqs:
            ctx = getattr(req, "trace", None)
            if ctx is not None:
                span_context = trace.get_current_span(ctx).get_span_context()
                if span_context.is_valid:
                    links.append(trace.Link(span_context, {"rvai.sid": req.sid or ""}))
    elif reqs[0].sid is not None:
        attributes["rvai.sid"] = reqs[0].sid
    span = tracer.start_span(f"rvai.cell {plan.ref}", context=parent, attributes=attributes, links=links)
    return span, context.attach(trace.set_span_in_context(span))


def end_cell(handle: tuple[Span, object] | None, results: list[Any]) -> None:
    """End a cell span from :func:`start_cell`; a request that failed in the call marks it failed."""
    if handle is None:
        return
    from opentelemetry import context

    span, token = handle
    try:
        context.detach(token)  # type: ignore[arg-type]
    except Exception:
        pass
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        _fail(span, failures[0])
        span.set_attribute("rvai.failed", len(failures))
    span.end()


# -- streams ------------------------------------------------------------------------------------------

_FRAMES_KEPT = 65536
_frames: collections.OrderedDict[tuple[str, int], Any] = collections.OrderedDict()


def start_frame(source: str, index: int, sid: str | None) -> Span | None:
    """The root span of one frame (``index``) of stream ``source``: a new trace."""
    tracer = TRACER
    if tracer is None:
        return None
    from opentelemetry import context

    attributes = {"rvai.source": source, "rvai.index": index, **_sid_attributes(sid)}
    return tracer.start_span(f"rvai.frame {source}", context=context.Context(), attributes=attributes)


def send_frame(span: Span | None, send: Callable[..., Future[Any]], *args: Any) -> Future[Any]:
    """``send(*args)`` (the frame's predict) with the frame's span current."""
    if span is None:
        return send(*args)
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(span))
    try:
        return send(*args)
    finally:
        context.detach(token)


def note_record(span: Span | None, source: str, index: int) -> None:
    """Remember frame ``(source, index)``'s span for the sink writes of its record (a bounded table)."""
    if span is None:
        return
    with _lock:
        _frames[(source, index)] = span.get_span_context()
        if len(_frames) > _FRAMES_KEPT:
            _frames.popitem(last=False)


def end_frame(span: Span | None, error: BaseException | None) -> None:
    """End a frame's span (failed with ``error`` when its request failed)."""
    if span is None:
        return
    if error is not None:
        _fail(span, error)
    span.end()


def sink_write(sink: str, records: Any, write: Callable[[], Any]) -> Any:
    """``write()`` (one ``Sink.write`` of ``records``) inside an ``rvai.sink.write`` span; its value.

    The span is a child of the first record's frame and links to every record's frame.
    """
    tracer = TRACER
    if tracer is None:
        return write()
    from opentelemetry import trace

    with _lock:
        found = [_frames.get((record.source, record.index)) for record in records]
    contexts = [c for c in found if c is not None]
    parent = trace.set_span_in_context(trace.NonRecordingSpan(contexts[0])) if contexts else None
    links = [trace.Link(c) for c in contexts] if len(records) > 1 else None
    with tracer.start_as_current_span(
        f"rvai.sink.write {sink}", context=parent, links=links, attributes={"rvai.sink": sink, "rvai.records": len(records)}
    ):
        return write()
