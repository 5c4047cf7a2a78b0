"""The ``rvai-sdk`` command line: inspect, draw, serve and stream pipelines.

``rvai-sdk info TARGET`` prints a pipeline's inputs, outputs, cells and
parameters with their schemas; ``rvai-sdk show TARGET -o graph.svg`` draws it;
``rvai-sdk serve TARGET`` serves it over HTTP (:class:`FastAPIDriver`) until
Ctrl-C; ``rvai-sdk stream TARGET --source URL --sink URL`` feeds it from sources
into sinks (:class:`SourceSinkDriver`) with a live progress table per source.
``serve`` and ``stream`` with ``--detach`` run in the background as a named service
(:mod:`rvai_sdk.services`) that ``rvai-sdk ps`` lists, ``logs NAME [-f]`` shows,
``stop NAME`` stops (SIGTERM, then SIGKILL after ``--timeout``) and ``rm NAME`` forgets.
TARGET is ``module:attribute`` (a ``Pipeline``, a ``PipelineFactory``, or a
function returning either; the current directory is importable) or a name
registered by an installed package under the ``rvai_sdk.pipelines`` entry-point
group::

    # pyproject.toml of a package that ships a pipeline
    [project.entry-points."rvai_sdk.pipelines"]
    counting = "my_package.pipelines:build_counting"

Sources and sinks are named by URL and found by the URL's scheme under the
entry-point groups ``rvai_sdk.sources`` and ``rvai_sdk.sinks``. This module only
dispatches: each entry point names the ``from_url`` classmethod of the source or
sink class that parses its own URL (``rvai_sdk``'s own are listed in its
``setup.cfg``: ``VideoSource.from_url`` for files and ``rtsp://``...), or any callable
taking the URL and returning a :class:`~rvai_sdk.drivers.Source` (or
:class:`~rvai_sdk.drivers.Sink`), so a package adds a scheme with::

    [project.entry-points."rvai_sdk.sinks"]
    kafka = "my_package.sinks:KafkaSink.from_url"     # --sink kafka://broker:9092/results

A source or sink URL with no scheme is a file path (scheme ``file``); a scheme with a
driver suffix (``postgresql+psycopg``) is looked up whole, then without the suffix.
The drivers ``serve`` and ``stream`` run are found the same way, under
``rvai_sdk.cli_drivers`` (names ``serve`` and ``stream``). The lookups live in
``rvai_sdk._entry_points``; their public names are importable from here.

Logging: ``--log-level`` (default ``info``, or ``$RVAI_SDK_LOG_LEVEL``) and ``--log-format
text|json`` (or ``$RVAI_SDK_LOG_FORMAT``) configure the standard library's root logger on
stderr, before or after the command (``rvai-sdk --log-level debug serve ...`` or
``rvai-sdk serve ... --log-level debug``); the inference and driver processes' records
arrive there too, named ``inference[PIPELINE]`` and ``driver[REF]``. Tracing: ``serve`` and
``stream`` take ``--trace otlp|console|file`` (:mod:`rvai_sdk.tracing`). ``serve`` logs an
access line per request; the ``dummy:`` sink logs every result. ``rvai-sdk --version``
prints the version; ``python -m rvai_sdk`` is ``rvai-sdk``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvai_sdk import __version__
from rvai_sdk import types as _types
from rvai_sdk._logging import LOG_FORMATS, LOG_LEVELS, configure
from rvai_sdk._entry_points import (
    DRIVERS_GROUP,
    ENTRY_POINT_GROUP,
    SINKS_GROUP,
    SOURCES_GROUP,
    command_driver,
    load_pipeline,
    load_sink,
    load_source,
    registered_pipelines,
)
from rvai_sdk.drivers.metrics import MetricsServer, stream_metrics_text  # stream_metrics_text: public here too
from rvai_sdk.exc import DriverError, RvaiError, TargetError, UnknownSchemeError, UsageError
from rvai_sdk.pipeline import Pipeline

if TYPE_CHECKING:
    from rvai_sdk.runtime import InferenceProcess, PipelineDriverProcess

__all__ = [
    "main",
    "load_pipeline",
    "registered_pipelines",
    "load_source",
    "load_sink",
    "command_driver",
    "parse_params",
    "parse_models",
    "progress_line",
    "stream_metrics_text",
    "ENTRY_POINT_GROUP",
    "SOURCES_GROUP",
    "SINKS_GROUP",
    "DRIVERS_GROUP",
    "TargetError",
    "UsageError",
    "UnknownSchemeError",
]

# The entry-point lookups live in rvai_sdk._entry_points and the errors in rvai_sdk.exc;
# imported above, each stays importable as rvai_sdk.cli.X.

def _describe(pipeline: Pipeline) -> str:
    lines = [f"pipeline {pipeline.name!r}", "", "inputs:"]
    for ref, port_spec in pipeline.inputs.items():
        targets = ", ".join(f"{cell}.{port}" for cell, port in port_spec.targets)
        lines.append(f"  {ref}: {_types.type_name(port_spec.type)}  -> {targets}")
    lines += ["", "outputs:"]
    for ref, out in pipeline.outputs.items():
        lines.append(f"  {ref}: {_types.type_name(out.type)}  <- {out.cell}.{out.port}")
    lines += ["", "cells (in execution order):"]
    for ref in pipeline.order:
        spec = pipeline.spec(ref)
        extras = [f"state {spec.state.__name__}"] if spec.state else []
        if spec.has_call_batch:
            extras.append(f"batched (max {spec.max_batch_size}, wait {spec.max_batch_wait * 1000:g} ms)")
        if spec.has_load_model:
            extras.append("loads a model")
        lines.append(f"  {ref}: {spec.name}" + (f"  [{', '.join(extras)}]" if extras else ""))
        for info in spec.parameters.fields_info():
            default = "" if info.required else f" = {_types.to_json(info.make_default())!r}"
            schema = info.json_schema()
            parts = [schema, *schema.get("anyOf", [])]
            limits = [f"{k} {part[k]}" for part in parts for k in ("minimum", "maximum") if k in part]
            if "enum" in schema:
                limits.append(f"one of {schema['enum']}")
            note = f" ({', '.join(limits)})" if limits else ""
            description = f"  {info.description}" if info.description else ""
            lines.append(f"      parameter {info.name}: {_types.type_name(info.type)}{default}{note}{description}")
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args.target)
    if args.json:
        print(json.dumps(pipeline.describe(), indent=2))
    else:
        print(_describe(pipeline))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args.target)
    if args.output is None:
        print(pipeline.to_dot())
        return 0
    drawing = pipeline.show(args.output)
    print(f"wrote {drawing.path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    registered = registered_pipelines()
    if not registered:
        print(f"no pipelines registered under the {ENTRY_POINT_GROUP!r} entry-point group")
    for name, value in sorted(registered.items()):
        print(f"{name}  ({value})")
    return 0


# -- --param ref.name=value --------------------------------------------------------------------


def parse_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Turn ``ref.name=value`` strings into ``Inference(parameters=...)``.

    A value is read as JSON when it parses (``4.5``, ``true``, ``[1, 2]``, ``null``),
    else taken as a string.

    Args:
        items: the ``--param`` values.

    Returns:
        Cell ref → parameter name → value.

    Raises:
        UsageError: an item is not ``ref.name=value``.

    Example:
        >>> parse_params(["mean.alarm_above=2.5", "label.text=hello"])
        {'mean': {'alarm_above': 2.5}, 'label': {'text': 'hello'}}
    """
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, equals, text = item.partition("=")
        ref, dot, name = key.strip().rpartition(".")
        if not equals or not dot or not ref or not name:
            raise UsageError(f"--param {item!r} is not ref.name=value (e.g. --param mean.alarm_above=2.5)")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        params.setdefault(ref, {})[name] = value
    return params


def parse_models(items: Sequence[str], pipeline: Pipeline | None = None) -> dict[str, str]:
    """Turn ``REF=PATH`` strings into ``Inference(models=...)``: cell ref → model path.

    A path that exists is made absolute (the inference process may run elsewhere);
    another (a model name a cell understands) is passed on as given.

    Args:
        items: the ``--model`` values.
        pipeline: when given, each ref must be one of its cells that loads a model.

    Raises:
        UsageError: an item is not ``REF=PATH``, a ref is given twice, is not a cell of
            the pipeline, or names a cell without ``load_model``.

    Example:
        >>> parse_models(["detect=yolo-tiny"])
        {'detect': 'yolo-tiny'}
    """
    models: dict[str, str] = {}
    for item in items:
        ref, equals, path = item.partition("=")
        ref = ref.strip()
        if not equals or not ref or not path:
            raise UsageError(f"--model {item!r} is not REF=PATH (e.g. --model detect=weights/yolo.pt)")
        if ref in models:
            raise UsageError(f"two --model options name cell {ref!r}; give one path per cell")
        if pipeline is not None:
            if ref not in pipeline.cells:
                raise UsageError(
                    f"--model {item!r}: pipeline {pipeline.name!r} has no cell {ref!r}; its cells are: "
                    f"{', '.join(pipeline.order)}"
                )
            if not pipeline.spec(ref).has_load_model:
                raise UsageError(
                    f"--model {item!r}: cell {ref!r} ({pipeline.spec(ref).name}) has no load_model, so it would "
                    "never see the path; name a cell that loads a model (rvai-sdk info shows them)"
                )
        models[ref] = str(Path(path).resolve()) if Path(path).exists() else path
    return models


def _named(items: Sequence[str], prefix: str) -> dict[str, str]:
    """``NAME=URL`` or ``URL`` items → ref → URL (unnamed ones are ``prefix-1``, ``prefix-2``...)."""
    named: dict[str, str] = {}
    for i, item in enumerate(items, 1):
        name, equals, rest = item.partition("=")
        if equals and name and rest and all(c.isalnum() or c in "-_." for c in name):
            ref, url = name, rest
        else:
            ref, url = f"{prefix}-{i}", item
        if ref in named:
            raise UsageError(f"two --{prefix} options are named {ref!r}; give each its own NAME=URL")
        named[ref] = url
    return named


# -- running until told to stop --------------------------------------------------------------


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT (Ctrl-C) or SIGTERM while the block runs (handlers restored after)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _start(args: argparse.Namespace) -> tuple[Pipeline, Any]:
    """The pipeline and its ``Inference`` (validated parameters) from the common arguments."""
    from rvai_sdk.runtime import Inference

    pipeline = load_pipeline(args.target)
    models = parse_models(args.model, pipeline)
    if args.trace is not None:  # before the runtime starts: its processes trace the same way
        from rvai_sdk.tracing import configure_tracing

        try:
            configure_tracing(args.trace, endpoint=args.trace_endpoint, path=args.trace_path)
        except ValueError as exc:
            raise UsageError(f"--trace: {exc}") from exc
    return pipeline, Inference(pipeline=pipeline, parameters=parse_params(args.param), models=models)


def _check_driver(handle: PipelineDriverProcess) -> None:
    from rvai_sdk.runtime.status import ProcessStatus

    if handle.status is ProcessStatus.FAILED or not handle.is_alive():
        failure = (handle.failure or "it stopped").splitlines()[0]
        raise DriverError(f"driver {handle.ref!r} stopped while running: {failure}")


def _port_in_use(port: int) -> UsageError:
    return UsageError(f"port {port} is in use; pick another with --port, or --port 0 for any free port")


def _wait_ready(
    handle: PipelineDriverProcess, url: str, api_key: str | None, timeout: float = 60.0, instance: str | None = None
) -> None:
    """Wait until ``GET {url}/ready`` answers 200 from this driver; fails at once when the driver fails or stops.

    With ``instance`` (the driver's id, from its service record), only an answer naming
    it counts: any other answer comes from another server holding the port.

    Raises:
        UsageError: another server answers on the port, or the driver could not bind it.
        DriverError: the driver stopped, or was not ready within ``timeout`` seconds.
    """
    port = int(url.rsplit(":", 1)[1])
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    last = "no answer"
    for attempt in range(10_000):  # bounded by the deadline long before
        try:
            _check_driver(handle)
        except DriverError as exc:
            if "is in use" in str(exc):
                raise _port_in_use(port) from exc
            raise
        answered: str | None = None
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/ready", headers=headers), timeout=5.0) as response:
                answered = response.headers.get("X-Rvai-Instance")
                if instance is not None and answered != instance:
                    raise _port_in_use(port)
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if instance is not None and exc.headers.get("X-Rvai-Instance") != instance:
                raise _port_in_use(port) from None
            if exc.code != 503:
                break
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        pause.wait(min(0.01 * 2 ** min(attempt, 5), remaining))
    raise DriverError(f"driver {handle.ref!r} at {url} was not ready within {timeout:g} s: {last}")


def _cmd_serve(args: argparse.Namespace) -> int:
    FastAPIDriver = command_driver("serve")
    from rvai_sdk.runtime import init

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535 (0: any free port), got {args.port}")
    if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
        raise UsageError(f"--grpc-port must be 0..65535 (0: any free port), got {args.grpc_port}")
    pipeline, inference = _start(args)
    reporter = _service_reporter()
    # the signal handlers go in after init: Ray sets its own for SIGTERM, which would abort the process
    with init(args.runtime) as rt, _stop_on_signals() as stop, rt.start_inference(inference) as proc:
        try:
            http = proc.add_driver("http", FastAPIDriver, {"host": args.host, "listen_port": args.port, "api_key": args.api_key})
        except DriverError as exc:
            if "is in use" in str(exc):
                raise _port_in_use(args.port) from exc
            raise
        service = http.get_service("http")
        host = service["address"]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{service['port']}"
        _wait_ready(http, url, args.api_key, instance=service.get("instance"))
        bound = f" (for {args.duration:g} s)" if args.duration is not None else " (Ctrl-C to stop)"
        print(f"serving pipeline {pipeline.name!r} on the {args.runtime} runtime at {url}{bound}", flush=True)
        print(f"  POST {url}/predict   docs {url}/docs   metrics {url}/metrics", flush=True)
        grpc = None if args.grpc_port is None else _add_grpc(proc, args)  # GrpcDriver: the V2 protocol over gRPC
        ports = {"http": int(service["port"])} | ({} if grpc is None else {"grpc": int(grpc.get_service("grpc")["port"])})
        reporter.running(ports=ports, url=url)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set():
            remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if remaining <= 0 or stop.wait(remaining):
                break
            _check_driver(http)
            if grpc is not None:
                _check_driver(grpc)
            if reporter.active:
                reporter.counters(_serve_counters(proc))
        print("stopping", flush=True)
        if grpc is not None:
            proc.remove_driver(grpc.pid)
        proc.remove_driver(http.pid)
    print("stopped", flush=True)
    return 0


def _add_grpc(proc: InferenceProcess, args: argparse.Namespace, timeout: float = 60.0) -> PipelineDriverProcess:
    """``serve --grpc-port``: a :class:`GrpcDriver` beside the HTTP one, once it accepts connections; prints its address.

    Raises:
        UsageError: the driver could not listen on ``--grpc-port``.
        DriverError: the driver stopped, or did not listen within ``timeout`` seconds.
    """
    import socket

    if args.grpc_port:  # a port another server holds: said now (a connection to it would look like ours)
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((args.host, args.grpc_port))
            except OSError as exc:
                raise UsageError(
                    f"--grpc-port {args.grpc_port} cannot be used on {args.host}: {exc.strerror}; pick another, "
                    "or --grpc-port 0 for any free port"
                ) from exc
    handle = proc.add_driver("grpc", command_driver("serve-grpc"), {"host": args.host, "listen_port": args.grpc_port, "api_key": args.api_key})
    service = handle.get_service("grpc")
    host, port = str(service["address"]), int(service["port"])
    pause, deadline = threading.Event(), time.monotonic() + timeout
    for attempt in range(10_000):  # bounded by the deadline long before
        try:
            _check_driver(handle)
        except DriverError as exc:
            raise UsageError(f"--grpc-port {args.grpc_port}: {exc}; pick another, or --grpc-port 0 for any free port") from exc
        try:
            socket.create_connection((host, port), timeout=5.0).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise DriverError(f"driver 'grpc' did not listen on {host}:{port} within {timeout:g} s") from None
        pause.wait(min(0.01 * 2 ** min(attempt, 5), max(0.0, deadline - time.monotonic())))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"  gRPC (Open Inference Protocol, e.g. tritonclient.grpc) at {address}", flush=True)
    return handle


def progress_line(stats: Mapping[str, Any], previous: dict[str, int], elapsed: float) -> str:
    """One line for a :class:`SourceSinkDriver`'s stats: per source, frames/s since the last line, dropped, written, processed.

    ``written`` counts only rows the sinks newly stored; rows a sink already held
    (a replay) show as ``already present``, rejected ones as ``dead-lettered``.

    Args:
        stats: ``SourceSinkDriver.stats()``.
        previous: source ref → items done at the last line; updated.
        elapsed: seconds since the last line.

    Example:
        >>> stats = {"sources": {"cam-1": {"processed": 50, "failed": 0, "dropped": 2, "written": 48, "state": "running"}}}
        >>> progress_line(stats, {"cam-1": 25}, 1.0)
        'cam-1: 25.0 frames/s, 2 dropped, 48 written, 50 processed'
    """
    parts = []
    for ref, entry in stats["sources"].items():
        done = int(entry["processed"]) + int(entry["failed"])
        rate = (done - previous.get(ref, 0)) / elapsed if elapsed > 0 else 0.0
        previous[ref] = done
        state = "" if entry.get("state") in ("running", None) else f" ({entry['state']})"
        if entry.get("state") in ("retrying", "failed") and entry.get("last_error"):
            state = f" ({entry['state']}: {str(entry['last_error']).splitlines()[0]})"
        extra = "".join(
            f", {entry[key]} {label}"
            for key, label in (("present", "already present"), ("dead_lettered", "dead-lettered"), ("failed", "failed"))
            if entry.get(key)
        )
        parts.append(
            f"{ref}: {rate:.1f} frames/s, {entry['dropped']} dropped, {entry['written']} written, "
            f"{entry['processed']} processed{extra}{state}"
        )
    for ref, sink in stats.get("sinks", {}).items():
        if sink.get("last_error") and sink.get("buffered"):
            parts.append(f"sink {ref}: {sink['buffered']} buffered, retrying: {str(sink['last_error']).splitlines()[0]}")
    return " | ".join(parts)


def _stream_done(stats: Mapping[str, Any]) -> bool:
    """Every source ended (at its end, or after ``--frames`` results) and each of its results is handed to the sinks."""
    for entry in stats["sources"].values():
        if entry["state"] not in ("ended", "failed") or entry["queued"] or entry["in_flight"]:
            return False
    return all(not sink["buffered"] for sink in stats["sinks"].values())


class _MetricsServer(MetricsServer):
    """``--metrics-port``: the shared metrics server, started at once; a port that cannot be bound is a usage error."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        try:
            self.start()
        except OSError as exc:
            raise UsageError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc}") from exc


def _cmd_stream(args: argparse.Namespace) -> int:
    SourceSinkDriver = command_driver("stream")
    from rvai_sdk.runtime import init

    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    if args.position_store is not None:  # a store that is not one fails here, before anything starts; a path made absolute
        try:
            checked = SourceSinkDriver.parameters_class.coerce({"position_store": args.position_store}, owner="driver SourceSinkDriver")
        except RvaiError as exc:
            raise UsageError(f"--position-store: {exc}") from exc
        args.position_store = str(checked.position_store)
    pipeline, inference = _start(args)
    sources = {ref: load_source(url) for ref, url in _named(args.source, "source").items()}
    sinks = {ref: load_sink(url) for ref, url in _named(args.sink, "sink").items()}
    from rvai_sdk._progress import ProgressDisplay

    display = ProgressDisplay(sys.stdout)  # a live table on a terminal (rich), else a line per interval
    reporter = _service_reporter()
    metrics = _MetricsServer(args.metrics_port) if args.metrics_port is not None else None
    try:
        # the signal handlers go in after init: Ray sets its own for SIGTERM, which would abort the process
        with init(args.runtime) as rt, _stop_on_signals() as stop, rt.start_inference(inference) as proc:
            stream = proc.add_driver(
                "stream", SourceSinkDriver, sources=sources, sinks=sinks,
                parameters={"limit": args.frames, "position_store": args.position_store},
            )
            names = ", ".join(f"{ref} ({url})" for ref, url in _named(args.source, "source").items())
            print(f"streaming {names} through pipeline {pipeline.name!r} into {', '.join(args.sink)}", flush=True)
            if metrics is not None:
                print(f"  metrics {metrics.url}", flush=True)
            reporter.running(
                ports={} if metrics is None else {"metrics": int(metrics.url.rsplit(":", 1)[1].split("/")[0])},
                url=None if metrics is None else metrics.url,
            )
            started = last = time.monotonic()
            deadline = None if args.duration is None else started + args.duration
            previous: dict[str, int] = {}
            stats = stream.stats()
            if metrics is not None:
                metrics.update(stream_metrics_text(pipeline.name, stats, {}))
            while not stop.is_set():
                remaining = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
                if remaining > 0:
                    stop.wait(remaining)
                _check_driver(stream)
                stats = stream.stats()
                now = time.monotonic()
                before = dict(previous)
                line = f"[{now - started:6.1f} s] {progress_line(stats, previous, now - last)}"
                elapsed = max(now - last, 1e-9)
                rates = {ref: (done - before.get(ref, 0)) / elapsed for ref, done in previous.items()}
                display.show(line, stats, rates, now - started)
                if metrics is not None:
                    metrics.update(stream_metrics_text(pipeline.name, stats, rates))
                reporter.counters(_stream_counters(stats))
                last = now
                if _stream_done(stats) or (deadline is not None and now >= deadline):
                    break
            display.close()
            print("stopping: finishing requests in flight and writing buffered results", flush=True)
            stats = _drain(stream, stats)
            reporter.counters(_stream_counters(stats), force=True)
            proc.remove_driver(stream.pid)
    finally:
        display.close()
        if metrics is not None:
            metrics.close()
    return _summary(stats)


def _drain(stream: Any, stats: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Stop the sources from taking more (a limit of 0), let what they took finish and be written; the counters then.

    Bounded by ``timeout``; what is left then is finished (or counted) by the driver's own stop.
    """
    try:
        stream.set_parameters({"limit": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = stream.stats()
            if all(not e["queued"] and not e["in_flight"] for e in stats["sources"].values()) and all(
                not s["buffered"] for s in stats["sinks"].values()
            ):
                break
            time.sleep(0.05)
    except RvaiError:  # the driver failed or stopped: report what was last seen
        pass
    return stats


def _summary(last: Mapping[str, Any]) -> int:
    """Print what each source did (as last seen before stopping); 1 when a source failed or a sink lost records."""
    status = 0
    for ref, entry in last["sources"].items():
        more = "".join(
            f", {entry[key]} {label}"
            for key, label in (("present", "already present"), ("dead_lettered", "dead-lettered"), ("unfinished", "unfinished"))
            if entry.get(key)
        )
        print(
            f"{ref}: {entry['processed']} processed, {entry['failed']} failed, {entry['dropped']} dropped, "
            f"{entry['written']} written{more} ({entry['state']})"
        )
        if entry["state"] == "failed" or (entry["state"] == "retrying" and not entry["processed"]):
            status = 1
            print(f"  source {entry['state']}: {entry['last_error']}", file=sys.stderr)
    for ref, sink in last["sinks"].items():
        if sink["last_error"] or sink["lost"]:
            print(f"sink {ref}: {sink['lost']} lost, last error: {sink['last_error']}", file=sys.stderr)
            status = 1 if sink["lost"] else status
    return status


# -- named background services: --detach, ps, logs, stop, rm ------------------------------------


def _service_reporter() -> Any:
    """This command's :class:`~rvai_sdk.services.ServiceReporter` (a no-op unless it runs as a detached service)."""
    from rvai_sdk import services

    return services.reporter()


def _serve_counters(proc: InferenceProcess) -> dict[str, int]:
    """What ``rvai-sdk ps`` shows for a running ``serve``: the inference process's requests by outcome."""
    try:
        requests = proc.stats()["requests"]
    except RvaiError:
        return {}
    return {key: int(requests[key]) for key in ("succeeded", "failed", "in_flight")}


def _stream_counters(stats: Mapping[str, Any]) -> dict[str, int]:
    """What ``rvai-sdk ps`` shows for a running ``stream``: its sources' counters, summed."""
    sources = list(stats["sources"].values())
    return {
        key: sum(int(entry.get(key, 0)) for entry in sources)
        for key in ("processed", "dropped", "written", "dead_lettered", "failed")
    }


def _wants_detach(args: argparse.Namespace) -> bool:
    """``--detach`` was given, and this is not already the detached service itself."""
    from rvai_sdk.services import SERVICE_ENV

    inside = os.environ.get(SERVICE_ENV)
    return bool(getattr(args, "detach", False)) and (inside is None or inside != args.name)


def _detach(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``serve|stream ... --detach``: start the same command as a named background service; 0 once it answers."""
    from rvai_sdk import services

    registry = services.Registry()
    name = services.check_name(args.name) if args.name else services.default_name(args.command, args.target, registry)
    record = services.start_detached(
        name=name, kind=args.command, target=args.target, runtime=args.runtime, argv=[*argv, "--name", name],
        registry=registry, wait=args.start_timeout,
    )
    if record.status == "running":
        where = record.url or ", ".join(f"{k} port {v}" for k, v in record.ports.items())
        print(f"started service {name!r} (pid {record.pid})" + (f": {where}" if where else ""))
        print(f"  rvai-sdk ps | rvai-sdk logs {name} -f | rvai-sdk stop {name}")
        return 0
    if record.status == "starting":
        print(f"service {name!r} (pid {record.pid}) is still starting after {args.start_timeout:g} s; "
              f"follow it with: rvai-sdk logs {name} -f")
        return 0
    print(f"rvai-sdk: service {name!r} {record.status} while starting: {record.reason}", file=sys.stderr)
    tail = _tail(Path(record.log), 20)
    if tail:
        print(f"last lines of its log ({record.log}):\n{tail}", file=sys.stderr)
    return 1


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' when it cannot be read)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 65536))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _cmd_ps(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    registry = services.Registry()
    records = [registry.get(name) for name in args.names] if args.names else registry.all()
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
    elif not records:
        print(f"no services (start one with: rvai-sdk serve TARGET --detach); registry {registry.path}")
    else:
        print(services.format_table(records))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    registry = services.Registry()
    record = registry.get(args.name)
    path = Path(record.log)
    if not path.exists():
        print(f"rvai-sdk: service {args.name!r} has no log yet ({path})", file=sys.stderr)
        return 1
    with open(path, "rb") as file:
        if args.lines is not None:
            text = _tail(path, args.lines)
            sys.stdout.write(text + ("\n" if text else ""))
            file.seek(0, os.SEEK_END)
        else:
            sys.stdout.write(file.read().decode("utf-8", "replace"))
        sys.stdout.flush()
        if not args.follow:
            return 0
        pause = threading.Event()
        checked = time.monotonic()
        try:
            while True:  # until the service ended and its log is read to the end (or Ctrl-C)
                chunk = file.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                    continue
                if time.monotonic() - checked >= 0.5:
                    checked = time.monotonic()
                    if registry.get(args.name).status not in services.LIVE:
                        rest = file.read()
                        sys.stdout.write(rest.decode("utf-8", "replace"))
                        sys.stdout.flush()
                        return 0
                pause.wait(0.1)
        except KeyboardInterrupt:
            return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    if args.timeout < 0:
        raise UsageError(f"--timeout must be at least 0 seconds, got {args.timeout:g}")
    registry = services.Registry()
    names = [r.name for r in registry.all() if r.status in services.LIVE] if args.all else args.names
    if not names and not args.all:
        raise UsageError("name the services to stop (rvai-sdk ps lists them), or pass --all")
    for record in [registry.get(name) for name in names]:  # every name checked before anything stops
        if record.status not in services.LIVE:
            print(f"{record.name}: not running ({record.status}{': ' + record.reason if record.reason else ''})")
            continue
        began = time.monotonic()
        ended = services.stop_service(record.name, timeout=args.timeout, registry=registry)
        how = "forced with SIGKILL after the graceful stop timed out" if ended.forced else "graceful"
        print(f"{record.name}: {ended.status} ({how}, {time.monotonic() - began:.1f} s)")
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    registry = services.Registry()
    records = [registry.get(name) for name in args.names]  # every name checked before anything is removed
    running = [r.name for r in records if r.status in services.LIVE]
    if running and not args.force:
        names = " ".join(running)
        raise UsageError(
            f"service(s) {', '.join(map(repr, running))} still running; stop them first (rvai-sdk stop {names}), "
            f"or remove them with rm --force (which stops them)"
        )
    for record in records:
        if record.status in services.LIVE:
            services.stop_service(record.name, timeout=args.timeout, registry=registry)
        registry.delete(record.name)
        print(f"removed {record.name}")
    return 0


def _service_options(sub: argparse.ArgumentParser) -> None:
    """``--detach``, ``--name`` and ``--start-timeout`` of ``serve`` and ``stream``."""
    sub.add_argument(
        "--detach", action="store_true",
        help="run in the background as a named service (see rvai-sdk ps, logs, stop, rm); returns once it answers",
    )
    sub.add_argument("--name", default=None, help="the service's name with --detach (default: COMMAND-TARGET)")
    sub.add_argument(
        "--start-timeout", type=float, default=120.0, metavar="SECONDS",
        help="with --detach, wait at most this long for the service to answer (default: 120)",
    )


def _add_service_commands(commands: Any) -> None:
    """The ``ps``, ``logs``, ``stop`` and ``rm`` subcommands."""
    ps = commands.add_parser("ps", help="list background services: status, pid, ports, uptime, counters")
    ps.add_argument("names", nargs="*", metavar="NAME", help="only these services")
    ps.add_argument("--json", action="store_true", help="print every detail as JSON")
    ps.set_defaults(run=_cmd_ps)

    logs = commands.add_parser("logs", help="print a background service's log")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing what it writes, until it ends")
    logs.add_argument("-n", "--lines", type=int, default=None, metavar="N", help="only the last N lines")
    logs.set_defaults(run=_cmd_logs)

    stop = commands.add_parser("stop", help="stop background services: SIGTERM, then SIGKILL after --timeout")
    stop.add_argument("names", nargs="*", metavar="NAME")
    stop.add_argument("--all", action="store_true", help="stop every running service")
    stop.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS",
        help="seconds for a graceful stop before it is killed (default: 10)",
    )
    stop.set_defaults(run=_cmd_stop)

    rm = commands.add_parser("rm", help="forget stopped or failed services and delete their logs")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.add_argument("-f", "--force", action="store_true", help="stop running ones first")
    rm.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="graceful stop timeout with --force")
    rm.set_defaults(run=_cmd_rm)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rvai-sdk``."""
    parser = argparse.ArgumentParser(prog="rvai-sdk", description="Inspect, draw, serve and stream rvai_sdk pipelines.")
    parser.add_argument("--version", action="version", version=f"rvai-sdk {__version__}")
    _log_options(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target_help = "module:attribute (a Pipeline, PipelineFactory or function returning one) or a registered name"

    info = commands.add_parser("info", help="inputs, outputs, cells and parameters of a pipeline")
    info.add_argument("target", help=target_help)
    info.add_argument("--json", action="store_true", help="print the full description with JSON schemas")
    info.set_defaults(run=_cmd_info)

    show = commands.add_parser("show", help="draw a pipeline (Graphviz), or print its DOT text")
    show.add_argument("target", help=target_help)
    show.add_argument("-o", "--output", type=Path, help="file to write; the suffix picks the format (.svg, .png, .pdf)")
    show.set_defaults(run=_cmd_show)

    listing = commands.add_parser("list", help=f"pipelines registered under {ENTRY_POINT_GROUP!r}")
    listing.set_defaults(run=_cmd_list)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("target", help=target_help)
        sub.add_argument("--runtime", choices=("debug", "local", "ray"), default="local", help="where the pipeline runs (default: local)")
        sub.add_argument(
            "--param", action="append", default=[], metavar="REF.NAME=VALUE",
            help="a cell parameter (the value as JSON, else a string); repeat for more",
        )
        sub.add_argument(
            "--model", action="append", default=[], metavar="REF=PATH",
            help="the model path handed to cell REF's load_model (else it gets None); repeat for more cells",
        )
        sub.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")
        _log_options(sub, argparse.SUPPRESS)
        sub.add_argument(
            "--trace", type=str.lower, choices=("otlp", "console", "file", "none"),
            default=(os.environ.get("RVAI_SDK_TRACE") or "").lower() or None,
            help="OpenTelemetry traces of every request/frame from every process: OTLP/HTTP (--trace-endpoint, else the "
            "OTEL_EXPORTER_OTLP_* variables), JSON on stderr, or JSON lines in --trace-path (default: off, or $RVAI_SDK_TRACE)",
        )
        sub.add_argument("--trace-endpoint", default=None, metavar="URL", help="the OTLP/HTTP traces URL with --trace otlp")
        sub.add_argument("--trace-path", default=None, metavar="DIR", help="the folder of --trace file (spans-PID.jsonl per process)")

    serve = commands.add_parser("serve", help="serve a pipeline over HTTP until Ctrl-C (FastAPIDriver)")
    common(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free port)")
    serve.add_argument(
        "--grpc-port", type=int, default=None, metavar="PORT",
        help="also serve the Open Inference Protocol over gRPC (GrpcDriver, the grpc extra) on PORT (0: any free port)",
    )
    serve.add_argument(
        "--api-key", default=os.environ.get("RVAI_SDK_API_KEY") or None,
        help="require 'Authorization: Bearer KEY' on every route but /health (default: $RVAI_SDK_API_KEY, else none)",
    )
    _service_options(serve)
    serve.set_defaults(run=_cmd_serve)

    stream = commands.add_parser(
        "stream", help="feed a pipeline from sources into sinks (SourceSinkDriver), with a progress line per source"
    )
    common(stream)
    stream.add_argument(
        "--source", action="append", required=True, metavar="[NAME=]URL",
        help="a video file, rtsp://..., mqtt://host/topic, dummy:?rate=10 ...; one stream (sid) each; repeat for more",
    )
    stream.add_argument(
        "--sink", action="append", required=True, metavar="[NAME=]URL",
        help="sqlite:///results.db, postgresql://user@host/db, mqtt://host/results/{source}, http://..., dummy:; repeat for more",
    )
    stream.add_argument("--frames", type=int, default=None, help="each source ends after exactly this many results")
    stream.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="seconds between progress lines")
    stream.add_argument(
        "--position-store", default=None, metavar="PATH|URL",
        help="record each source's position (what every sink acknowledged) in an SQLite file or redis://HOST:PORT/DB, "
        "so a restart after a crash resumes files and numbers live sources on",
    )
    stream.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve per-source and per-sink Prometheus metrics on 127.0.0.1:PORT/metrics (0: any free port)",
    )
    _service_options(stream)
    stream.set_defaults(run=_cmd_stream)
    _add_service_commands(commands)
    return parser


def _log_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """``--log-level`` and ``--log-format`` (on the main parser with defaults; on a command, without, so
    that a value given before the command stays)."""
    parser.add_argument(
        "--log-level", type=str.lower, choices=LOG_LEVELS,
        default=default if default is not None else (os.environ.get("RVAI_SDK_LOG_LEVEL") or "info").lower(),
        help="log records at this level and above on stderr (default: info, or $RVAI_SDK_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format", type=str.lower, choices=LOG_FORMATS,
        default=default if default is not None else (os.environ.get("RVAI_SDK_LOG_FORMAT") or "text").lower(),
        help="text lines, or one JSON object per line (default: text, or $RVAI_SDK_LOG_FORMAT)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rvai-sdk``; returns the exit status.

    An rvai_sdk error is printed on stderr without its traceback and gives status 2;
    ``stream`` gives 1 when a source failed or a sink lost records.
    """
    args = build_parser().parse_args(argv)
    try:
        configure(args.log_level, args.log_format)
    except ValueError as exc:  # $RVAI_SDK_LOG_LEVEL or $RVAI_SDK_LOG_FORMAT not one of the choices
        print(f"rvai-sdk: {exc}", file=sys.stderr)
        return 2
    try:
        if _wants_detach(args):
            status: int = _detach(args, sys.argv[1:] if argv is None else list(argv))
        else:
            status = args.run(args)
    except RvaiError as exc:
        message = str(exc).split("\nTraceback (most recent call last)", 1)[0].rstrip()
        print(f"rvai-sdk: {type(exc).__name__}: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before serve/stream took over the signal (while importing, starting)
        print("rvai-sdk: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
