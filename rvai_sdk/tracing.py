"""OpenTelemetry tracing: one trace per HTTP request or stream frame, across the driver, transport and cells.

Off by default, and free when off: nothing imports OpenTelemetry until
:func:`configure_tracing` is called. Turn it on in the process that starts the
runtime, before starting the inference process and its drivers::

    from rvai_sdk.tracing import configure_tracing

    configure_tracing("otlp", endpoint="http://collector:4318/v1/traces")   # or "console"
    rt = init("local")
    ...

The inference process, driver processes and Ray replicas started afterwards trace
with the same configuration (it travels with each child's start-up settings) and
export their spans themselves, so a collector sees one trace per request: the HTTP
driver's span (a child of the caller's W3C ``traceparent`` when one is sent),
``rvai.predict``, the transport hop (``rvai.send`` in the caller, ``rvai.serve`` in
the inference process) and one ``rvai.cell CELL`` span per cell call. A stream frame
through :class:`~rvai_sdk.extensions.drivers.source_sink_driver.SourceSinkDriver` is
one trace too, rooted at ``rvai.frame SOURCE``, with a ``rvai.sink.write SINK`` span.
:mod:`rvai_sdk._tracing` lists every span.

Requires the ``tracing`` extra: ``pip install 'rvai_sdk[tracing]'`` (``opentelemetry-api``,
``opentelemetry-sdk`` and the OTLP/HTTP exporter).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvai_sdk import _tracing
from rvai_sdk._compat import require

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["EXPORTERS", "TracingConfig", "configure_tracing", "shutdown_tracing", "tracing_enabled", "read_spans"]

EXPORTERS = ("otlp", "console", "file", "none")
"""The exporters :func:`configure_tracing` takes (``--trace`` on the CLI)."""

_provider: TracerProvider | None = None
_lock = threading.Lock()


@dataclass(frozen=True)
class TracingConfig:
    """How a process traces; what child processes receive so that they trace the same way (picklable).

    Attributes:
        exporter: one of :data:`EXPORTERS`.
        endpoint: the OTLP/HTTP traces URL (``None``: ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
            ``$OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://localhost:4318/v1/traces``).
        path: the ``file`` exporter's folder.
        service_name: the ``service.name`` resource attribute.
    """

    exporter: str
    endpoint: str | None = None
    path: str | None = None
    service_name: str = "rvai-sdk"


def configure_tracing(
    exporter: str | None = None,
    *,
    endpoint: str | None = None,
    path: str | os.PathLike[str] | None = None,
    service_name: str | None = None,
    process: str | None = None,
) -> TracingConfig | None:
    """Trace this process, and the inference and driver processes it starts from now on.

    Call it before ``rt.start_inference(...)``: processes already running keep their
    setting. Calling it again replaces the exporter (spans not exported yet are
    flushed first).

    Args:
        exporter: ``"otlp"`` (OTLP over HTTP, batched), ``"console"`` (each span as JSON
            on stderr when it ends), ``"file"`` (each span as one JSON line in
            ``path/spans-PID.jsonl``, one file per process: for tests and offline
            runs) or ``"none"`` (off, as :func:`shutdown_tracing`). ``None`` takes the
            first of ``$OTEL_TRACES_EXPORTER``, else ``"otlp"``.
        endpoint: the OTLP/HTTP traces URL (``otlp`` only; ``None``: the standard
            ``OTEL_EXPORTER_OTLP_*`` variables, else ``http://localhost:4318/v1/traces``).
        path: the ``file`` exporter's folder (made if missing).
        service_name: the ``service.name`` resource attribute (default
            ``$OTEL_SERVICE_NAME``, else ``rvai-sdk``).
        process: this process's role in the resource attribute ``rvai.process``
            (the runtime names its children ``inference[PIPELINE]``, ``driver[REF]``).

    Returns:
        The configuration child processes receive (``None`` when tracing was turned off).

    Raises:
        ValueError: an unknown exporter (the message lists the valid ones), or ``file`` without ``path``.
        MissingExtraError: the ``tracing`` extra is not installed.

    Example::

        configure_tracing("console")
        proc.predict({"input": 1}).result()   # rvai.predict, rvai.cell ... spans on stderr
    """
    if exporter is None:
        exporter = (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip().lower()
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown trace exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    if exporter == "none":
        shutdown_tracing()
        return None
    if exporter == "file" and path is None:
        raise ValueError("configure_tracing('file') needs path=: the folder each process writes its spans-PID.jsonl to")
    config = TracingConfig(
        exporter,
        endpoint,
        None if path is None else str(Path(path).resolve()),
        service_name or os.environ.get("OTEL_SERVICE_NAME") or "rvai-sdk",
    )
    require("opentelemetry.sdk.trace", extra="tracing")
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create(
        {"service.name": config.service_name, "rvai.process": process or "main", "process.pid": os.getpid()}
    )
    provider = TracerProvider(resource=resource)
    span_exporter = _exporter(config)
    processor = BatchSpanProcessor(span_exporter) if exporter == "otlp" else SimpleSpanProcessor(span_exporter)
    provider.add_span_processor(processor)
    global _provider
    with _lock:
        old, _provider = _provider, provider
        _tracing.install(provider.get_tracer("rvai_sdk"), config, provider.force_flush)
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            # spans users make in their cells (trace.get_tracer(...)) go to the same exporter
            trace.set_tracer_provider(provider)
    if old is not None:
        old.shutdown()
    return config


def _exporter(config: TracingConfig) -> SpanExporter:
    if config.exporter == "otlp":
        module = require("opentelemetry.exporter.otlp.proto.http.trace_exporter", extra="tracing")
        return module.OTLPSpanExporter(endpoint=config.endpoint)  # type: ignore[no-any-return]
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if config.exporter == "console":
        return ConsoleSpanExporter(out=_Stderr())  # type: ignore[arg-type]
    return _file_exporter(Path(config.path or "."))


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time (pytest's capture swaps it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _file_exporter(folder: Path) -> SpanExporter:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class FileSpanExporter(SpanExporter):
        """Appends each span as one line of JSON to ``folder/spans-PID.jsonl``."""

        def __init__(self) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            self.path = folder / f"spans-{os.getpid()}.jsonl"
            self._lock = threading.Lock()

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
            with self._lock, open(self.path, "a", encoding="utf-8") as file:
                file.write(lines)
            return SpanExportResult.SUCCESS

    return FileSpanExporter()


def shutdown_tracing() -> None:
    """Export what is left and turn tracing off in this process (processes started later are not traced)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
        _tracing.uninstall()
    if provider is not None:
        provider.shutdown()


def tracing_enabled() -> bool:
    """Whether this process traces now."""
    return _tracing.TRACER is not None


def read_spans(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every span the ``file`` exporter wrote under ``path`` (all processes), as dicts, oldest file first.

    Each dict is OpenTelemetry's JSON form of a span: ``name``, ``context``
    (``trace_id``, ``span_id``), ``parent_id``, ``kind``, ``attributes``, ``links``,
    ``resource`` (``rvai.process`` names the process)... A line still being written is skipped.
    """
    spans: list[dict[str, Any]] = []
    for file in sorted(Path(path).glob("spans-*.jsonl"), key=lambda p: p.stat().st_mtime):
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                spans.append(json.loads(line))
            except ValueError:
                continue
    return spans
