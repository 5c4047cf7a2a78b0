"""Prometheus metrics of drivers, in one place: the text both drivers and the CLI serve.

- :func:`inference_metrics_text`: the inference process's ``stats()`` (requests,
  per-cell call time, queue wait, batch sizes, live sids) and an HTTP driver's
  counters (responses by method, route and status; tasks), what the
  ``FastAPIDriver``'s ``GET /metrics`` answers.
- :func:`stream_metrics_text`: a ``SourceSinkDriver``'s ``stats()`` (per source and per
  sink), what ``rvai-sdk stream --metrics-port`` serves.
- :class:`MetricsServer`: the small HTTP server behind ``--metrics-port``: ``GET /metrics``
  answers the latest text, from a thread of its own.
- :class:`LatencyHistogram`: HTTP request durations by method and route (the
  ``rvai_http_request_duration_seconds`` histogram of ``GET /metrics``).

Both texts end with the standard process metrics of the process that serves them
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open file
descriptors...: prometheus-client's process, platform and GC collectors).

prometheus-client (the ``fastapi`` extra) is imported only when a text is made, so
importing this module needs nothing beyond the core.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from rvai_sdk._compat import require

__all__ = [
    "inference_metrics_text",
    "stream_metrics_text",
    "rebucket",
    "MetricsServer",
    "LatencyHistogram",
    "CONTENT_TYPE",
    "SECONDS_EDGES",
    "SIZE_EDGES",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of the Prometheus text format."""

SECONDS_EDGES = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper edges of the exported latency histograms, in seconds (fixed, so series stay comparable across scrapes)."""
SIZE_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper edges of the exported batch-size histograms."""


def rebucket(pairs: Iterable[Sequence[float]], edges: Sequence[float]) -> list[tuple[str, float]]:
    """Per-bucket ``(upper edge, count)`` pairs → cumulative Prometheus buckets on ``edges`` (plus ``+Inf``).

    A source bucket is counted under the first exported edge at or above its own upper
    edge, so a bucket ``le`` never undercounts values at or below ``le`` by more than the
    width of one source bucket (at most 25% of its edge for the executor's timings).

    Example:
        >>> rebucket([(0.5, 2), (3.0, 1)], (1.0, 2.0))
        [('1.0', 2.0), ('2.0', 2.0), ('+Inf', 3.0)]
    """
    counts = [0.0] * (len(edges) + 1)
    for upper, count in pairs:
        index = bisect.bisect_left(edges, upper)
        counts[index] += count
    buckets: list[tuple[str, float]] = []
    total = 0.0
    for edge, count in zip([*(repr(float(edge)) for edge in edges), "+Inf"], counts):
        total += count
        buckets.append((edge, total))
    return buckets


class _Families:
    """Metric families labelled by ``pipeline`` first, then exposed in the text format."""

    def __init__(self) -> None:
        self.core = require("prometheus_client.core", extra="fastapi")
        self.families: list[Any] = []

    def add(self, kind: str, name: str, doc: str, labels: Sequence[str] = ()) -> Any:
        family = getattr(self.core, f"{kind}MetricFamily")(name, doc, labels=["pipeline", *labels])
        self.families.append(family)
        return family

    def text(self, *, process: bool = True) -> bytes:
        client = require("prometheus_client", extra="fastapi")
        families = self.families

        class _Collector:
            def collect(self) -> Iterator[Any]:
                yield from families

        registry = client.CollectorRegistry(auto_describe=False)
        registry.register(_Collector())
        if process:  # the standard ones: CPU, memory, file descriptors, start time; Python version; GC
            client.ProcessCollector(registry=registry)
            client.PlatformCollector(registry=registry)
            client.GCCollector(registry=registry)
        text: bytes = client.generate_latest(registry)
        return text


class LatencyHistogram:
    """Durations of HTTP requests by ``(method, route)``, counted in the buckets of :data:`SECONDS_EDGES`.

    :meth:`observe` is called for each request on the server's event loop; :meth:`snapshot`
    copies the counts for a scrape (Prometheus's cumulative buckets).

    Example:
        >>> histogram = LatencyHistogram()
        >>> histogram.observe("GET", "/health", 0.0003); histogram.observe("GET", "/health", 0.2)
        >>> buckets, total = histogram.snapshot()[("GET", "/health")]
        >>> buckets[0], buckets[-1], round(total, 4)
        (('0.0005', 1.0), ('+Inf', 2.0), 0.2003)
    """

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def observe(self, method: str, route: str, seconds: float) -> None:
        """Count one request of ``method`` on ``route`` that took ``seconds``."""
        entry = self.series.get((method, route))
        if entry is None:
            entry = self.series[(method, route)] = ([0] * (len(SECONDS_EDGES) + 1), [0.0])
        entry[0][bisect.bisect_left(SECONDS_EDGES, seconds)] += 1
        entry[1][0] += seconds

    def snapshot(self) -> dict[tuple[str, str], tuple[list[tuple[str, float]], float]]:
        """``(method, route)`` → (cumulative ``(le, count)`` buckets ending in ``+Inf``, sum of seconds)."""
        labels = [*(repr(float(edge)) for edge in SECONDS_EDGES), "+Inf"]
        result: dict[tuple[str, str], tuple[list[tuple[str, float]], float]] = {}
        for key, (counts, total) in list(self.series.items()):
            running = 0
            buckets = []
            for label, count in zip(labels, list(counts)):
                running += count
                buckets.append((label, float(running)))
            result[key] = (buckets, total[0])
        return result


def inference_metrics_text(
    pipeline: str,
    stats: Mapping[str, Any] | None,
    http: Mapping[tuple[str, str, str], int],
    driver_counters: Mapping[str, Any],
    latency: Mapping[tuple[str, str], tuple[Sequence[tuple[str, float]], float]] | None = None,
    *,
    process: bool = True,
) -> bytes:
    """The Prometheus text exposition of the executor's ``stats()`` and an HTTP driver's counters.

    Args:
        pipeline: the pipeline's name (the ``pipeline`` label of every series).
        stats: ``RestrictedInferenceProcess.stats()``; ``None`` when the inference process
            cannot be reached (``rvai_inference_up`` is then 0 and its series are left out).
        http: ``(method, route, status)`` → responses sent.
        driver_counters: the driver's ``stats()`` (``tasks_*`` counters become ``rvai_http_tasks``).
        latency: :meth:`LatencyHistogram.snapshot` of the driver's requests, exported as the
            ``rvai_http_request_duration_seconds`` histogram by method and route.
        process: add the standard process metrics of this process (``process_*``, ``python_*``).

    Raises:
        MissingExtraError: prometheus-client is not installed (``pip install 'rvai_sdk[fastapi]'``).
    """
    out = _Families()
    out.add("Gauge", "rvai_inference_up", "1 when the inference process answered this scrape, else 0").add_metric(
        [pipeline], 0.0 if stats is None else 1.0
    )
    if stats is not None:
        _executor_series(out, pipeline, stats)
    responses = out.add("Counter", "rvai_http_requests", "HTTP responses of this driver", ["method", "route", "status"])
    for (method, route, status), count in sorted(http.items()):
        responses.add_metric([pipeline, method, route, status], float(count))
    out.add("Gauge", "rvai_http_tasks_active", "Tasks pending or running").add_metric(
        [pipeline], float(driver_counters.get("tasks_active", 0))
    )
    if "task_store_stalled" in driver_counters:
        out.add(
            "Gauge", "rvai_http_task_store_stalled", "1 while the task store has been stuck in one call for over 2 s"
        ).add_metric([pipeline], float(driver_counters["task_store_stalled"]))
    outcomes = out.add("Counter", "rvai_http_tasks", "Tasks finished, by outcome", ["outcome"])
    for key, value in sorted(driver_counters.items()):
        if key.startswith("tasks_") and key not in ("tasks_active", "tasks_kept") and isinstance(value, int):
            outcomes.add_metric([pipeline, key[len("tasks_") :]], float(value))
    durations = out.add(
        "Histogram", "rvai_http_request_duration_seconds", "HTTP requests, first byte in to last byte out", ["method", "route"]
    )
    for (method, route), (buckets, total) in sorted((latency or {}).items()):
        durations.add_metric([pipeline, method, route], list(buckets), float(total))
    return out.text(process=process)


def _executor_series(out: _Families, pipeline: str, stats: Mapping[str, Any]) -> None:
    requests = stats["requests"]
    outcomes = out.add("Counter", "rvai_requests", "Pipeline requests finished, by outcome", ["outcome"])
    for outcome in ("succeeded", "failed"):
        outcomes.add_metric([pipeline, outcome], float(requests[outcome]))
    out.add("Counter", "rvai_requests_submitted", "Pipeline requests submitted").add_metric(
        [pipeline], float(requests["submitted"])
    )
    out.add("Gauge", "rvai_requests_in_flight", "Pipeline requests submitted and not finished").add_metric(
        [pipeline], float(requests["in_flight"])
    )
    latency = requests["latency"]
    out.add("Histogram", "rvai_request_latency_seconds", "Succeeded requests, submit to last cell done").add_metric(
        [pipeline], rebucket(latency["buckets"], SECONDS_EDGES), float(latency["sum"])
    )
    sids = stats["sids"]
    out.add("Gauge", "rvai_live_sids", "State ids with kept cell state").add_metric([pipeline], float(sids["live"]))
    out.add("Counter", "rvai_sids_expired", "State ids dropped after their TTL").add_metric(
        [pipeline], float(sids["expired"])
    )
    out.add("Counter", "rvai_sids_evicted", "State ids dropped to stay under max_states").add_metric(
        [pipeline], float(sids["evicted"])
    )
    cell = ["cell"]
    calls = out.add("Counter", "rvai_cell_calls", "Calls of a cell (a batch is one call)", cell)
    items = out.add("Counter", "rvai_cell_items", "Requests a cell processed", cell)
    failures = out.add("Counter", "rvai_cell_failures", "Failed calls of a cell", cell)
    busy = out.add("Counter", "rvai_cell_busy_seconds", "Seconds spent in a cell's calls", cell)
    queued = out.add("Gauge", "rvai_cell_queue_depth", "Requests waiting for a cell", cell)
    running = out.add("Gauge", "rvai_cell_running", "Calls of a cell running now", cell)
    call_time = out.add("Histogram", "rvai_cell_call_seconds", "Duration of a cell's calls", cell)
    wait = out.add("Histogram", "rvai_cell_queue_wait_seconds", "Inputs complete to the call starting, per request", cell)
    batch = out.add("Histogram", "rvai_cell_batch_size", "Requests per call of a cell", cell)
    for ref, entry in stats["cells"].items():
        labels = [pipeline, str(ref)]
        calls.add_metric(labels, float(entry["calls"]))
        items.add_metric(labels, float(entry["items"]))
        failures.add_metric(labels, float(entry["failures"]))
        busy.add_metric(labels, float(entry["busy_seconds"]))
        queued.add_metric(labels, float(entry["queued"]))
        running.add_metric(labels, float(entry["running"]))
        call_time.add_metric(labels, rebucket(entry["call_time"]["buckets"], SECONDS_EDGES), float(entry["call_time"]["sum"]))
        wait.add_metric(labels, rebucket(entry["queue_wait"]["buckets"], SECONDS_EDGES), float(entry["queue_wait"]["sum"]))
        sizes = {int(k): int(v) for k, v in entry["batch_sizes"].items()} or {1: int(entry["calls"])}
        batch.add_metric(labels, rebucket(sizes.items(), SIZE_EDGES), float(sum(size * n for size, n in sizes.items())))


def stream_metrics_text(
    pipeline: str, stats: Mapping[str, Any], rates: Mapping[str, float], *, process: bool = True
) -> bytes:
    """The Prometheus text exposition of a :class:`SourceSinkDriver`'s ``stats()``.

    Args:
        pipeline: the pipeline's name (the ``pipeline`` label of every series).
        stats: ``SourceSinkDriver.stats()``.
        rates: source ref → results per second over the last interval.
        process: add the standard process metrics of this process (``process_*``, ``python_*``).

    Returns:
        ``rvai_source_*`` series per source (frames/s, produced, processed, failed, dropped,
        written, queued, in flight, state) and ``rvai_sink_*`` series per sink (written,
        buffered, write failures, lost), in the text format Prometheus scrapes. With a position
        store (``stats()["positions"]``), also ``rvai_position_writes_total``,
        ``rvai_position_write_errors_total``, ``rvai_position_store_failing`` and per source
        ``rvai_source_position_acknowledged`` (the highest index every sink acknowledged, in
        order), ``rvai_source_position_recorded`` (the highest one in the store: a restart
        resumes after it; left out while none is) and ``rvai_source_position_unrecorded``
        (items acknowledged since: what a crash now would replay).

    Raises:
        MissingExtraError: prometheus-client is not installed (``pip install 'rvai_sdk[fastapi]'``).
    """
    out = _Families()
    source_counters = {
        "produced": "Items the source produced",
        "processed": "Results of the source's items",
        "failed": "Items whose request failed",
        "dropped": "Items dropped by the drop policy (inference fell behind a live source)",
        "written": "Results newly stored, summed over the sinks",
        "present": "Results a sink already held (a replay), not written again",
        "dead_lettered": "Results a sink rejected as data, kept in its dead-letter place",
        "unfinished": "Items cut off by a stop (never written, not failed)",
        "resent": "Requests sent again after the inference process came back",
        "errors": "Times the source failed and was reopened",
    }
    counters = {key: out.add("Counter", f"rvai_source_{key}", doc, ["source"]) for key, doc in source_counters.items()}
    queued = out.add("Gauge", "rvai_source_queued", "Items waiting to be sent", ["source"])
    in_flight = out.add("Gauge", "rvai_source_in_flight", "Requests sent and not written yet", ["source"])
    fps = out.add("Gauge", "rvai_source_frames_per_second", "Results per second over the last interval", ["source"])
    state = out.add("Gauge", "rvai_source_state", "1 for the source's current state", ["source", "state"])
    for ref, entry in stats["sources"].items():
        for key, metric in counters.items():
            metric.add_metric([pipeline, ref], float(entry.get(key, 0)))
        queued.add_metric([pipeline, ref], float(entry["queued"]))
        in_flight.add_metric([pipeline, ref], float(entry["in_flight"]))
        fps.add_metric([pipeline, ref], float(rates.get(ref, 0.0)))
        state.add_metric([pipeline, ref, str(entry["state"])], 1.0)
    sink_counters = {
        "written": "Records the sink newly stored",
        "present": "Records the sink already held",
        "dead_lettered": "Records the sink rejected as data and dead-lettered",
        "write_failures": "Writes that failed and were retried",
        "lost": "Records given up on when stopping",
    }
    sink_metrics = {key: out.add("Counter", f"rvai_sink_{key}", doc, ["sink"]) for key, doc in sink_counters.items()}
    buffered = out.add("Gauge", "rvai_sink_buffered", "Records waiting to be written", ["sink"])
    for ref, entry in stats["sinks"].items():
        for key, metric in sink_metrics.items():
            metric.add_metric([pipeline, ref], float(entry.get(key, 0)))
        buffered.add_metric([pipeline, ref], float(entry["buffered"]))
    positions = stats.get("positions")
    if positions:
        _position_metrics(out, pipeline, positions)
    return out.text(process=process)


def _position_metrics(out: _Families, pipeline: str, positions: Mapping[str, Any]) -> None:
    """The series of a stream driver's position store (see :func:`stream_metrics_text`)."""
    out.add("Counter", "rvai_position_writes", "Writes of the stream positions to their store").add_metric(
        [pipeline], float(positions["writes"])
    )
    out.add("Counter", "rvai_position_write_errors", "Writes of the stream positions that failed (retried)").add_metric(
        [pipeline], float(positions["errors"])
    )
    out.add("Gauge", "rvai_position_store_failing", "1 while the position store fails").add_metric(
        [pipeline], 1.0 if positions["state"] == "failing" else 0.0
    )
    gauges = {
        "acknowledged": "Highest index every sink acknowledged, in order",
        "recorded": "Highest index recorded in the position store: a restart resumes after it",
        "unrecorded": "Items acknowledged since the last recorded position: what a crash now would replay",
    }
    families = {key: out.add("Gauge", f"rvai_source_position_{key}", doc, ["source"]) for key, doc in gauges.items()}
    for ref, entry in positions["sources"].items():
        for key, family in families.items():
            if entry.get(key) is not None:  # no position yet: no sample, rather than a made-up one
                family.add_metric([pipeline, ref], float(entry[key]))


class MetricsServer:
    """Serves the latest metrics text on ``GET /metrics`` at ``127.0.0.1:port``, from a thread of its own.

    Construction is cheap; :meth:`start` binds the port and starts the thread,
    :meth:`update` replaces the text, :meth:`close` stops it.

    Args:
        port: the TCP port (``0``: any free one; :attr:`url` says which after :meth:`start`).

    Example:
        >>> server = MetricsServer(0).start()
        >>> server.update(b"up 1\\n"); server.url.startswith("http://127.0.0.1:")
        True
        >>> server.close()
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.text = b""
        self.url = ""
        self._http: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        """Bind ``127.0.0.1:port`` and serve; ``self``.

        Raises:
            OSError: the port cannot be bound (in use, not allowed).
        """
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = server.text
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/metrics"
        self._thread = threading.Thread(target=self._http.serve_forever, name="rvai-sdk-metrics", daemon=True)
        self._thread.start()
        return self

    def update(self, text: bytes) -> None:
        """Serve ``text`` from now on."""
        self.text = text

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._http is None:
            return
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http = None
