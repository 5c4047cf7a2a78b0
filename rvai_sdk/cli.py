"""The ``rvai-sdk`` command line: inspect, draw, serve and stream pipelines.

``rvai-sdk info TARGET`` prints a pipeline's inputs, outputs, cells and
parameters with their schemas; ``rvai-sdk show TARGET -o graph.svg`` draws it;
``rvai-sdk serve TARGET`` serves it over HTTP (:class:`FastAPIDriver`) until
Ctrl-C; ``rvai-sdk stream TARGET --source URL --sink URL`` feeds it from sources
into sinks (:class:`SourceSinkDriver`) with a live progress line per source.
TARGET is ``module:attribute`` (a ``Pipeline``, a ``PipelineFactory``, or a
function returning either; the current directory is importable) or a name
registered by an installed package under the ``rvai_sdk.pipelines`` entry-point
group::

    # pyproject.toml of a package that ships a pipeline
    [project.entry-points."rvai_sdk.pipelines"]
    counting = "my_package.pipelines:build_counting"

Sources and sinks are named by URL and found by the URL's scheme under the
entry-point groups ``rvai_sdk.sources`` and ``rvai_sdk.sinks``; each entry point
is a callable taking the URL and returning a :class:`~rvai_sdk.drivers.Source`
(or :class:`~rvai_sdk.drivers.Sink`), so a package adds a scheme with::

    [project.entry-points."rvai_sdk.sinks"]
    kafka = "my_package.sinks:kafka_sink_from_url"     # --sink kafka://broker:9092/results

A source or sink URL with no scheme is a file path (scheme ``file``); a scheme with a
driver suffix (``postgresql+psycopg``) is looked up whole, then without the suffix.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rvai_sdk import types as _types
from rvai_sdk.exc import RvaiError
from rvai_sdk.pipeline import Pipeline, PipelineFactory

if TYPE_CHECKING:
    from rvai_sdk.drivers import Sink, Source
    from rvai_sdk.runtime import InferenceProcess, PipelineDriverProcess

__all__ = [
    "main",
    "load_pipeline",
    "registered_pipelines",
    "load_source",
    "load_sink",
    "parse_params",
    "progress_line",
    "stream_metrics_text",
    "ENTRY_POINT_GROUP",
    "SOURCES_GROUP",
    "SINKS_GROUP",
    "TargetError",
    "UsageError",
    "UnknownSchemeError",
]

ENTRY_POINT_GROUP = "rvai_sdk.pipelines"
"""Entry-point group under which packages register pipelines by name."""
SOURCES_GROUP = "rvai_sdk.sources"
"""Entry-point group of source factories, named by URL scheme (a callable: URL → Source)."""
SINKS_GROUP = "rvai_sdk.sinks"
"""Entry-point group of sink factories, named by URL scheme (a callable: URL → Sink)."""


class TargetError(RvaiError, LookupError):
    """A pipeline target could not be found or is not a pipeline."""


class UsageError(RvaiError, ValueError):
    """A command-line argument is malformed (a ``--param``, a source or sink URL)."""


class UnknownSchemeError(UsageError, LookupError):
    """No installed package handles a source or sink URL's scheme."""


def registered_pipelines() -> dict[str, str]:
    """Names registered under :data:`ENTRY_POINT_GROUP`, mapped to their ``module:attribute``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_pipeline(target: str) -> Pipeline:
    """Resolve ``module:attribute`` or a registered name to a built :class:`Pipeline`.

    Args:
        target: ``"package.module:attribute"`` or a name from :func:`registered_pipelines`.

    Returns:
        The pipeline (factories are built, functions called with no arguments).

    Raises:
        TargetError: the module, attribute or name does not exist, or it is not a pipeline.
        PipelineBuildError: a factory found there does not build.
    """
    if ":" not in target:
        registered = registered_pipelines()
        if target not in registered:
            known = ", ".join(sorted(registered)) or "(none installed)"
            raise TargetError(
                f"{target!r} is neither module:attribute nor a registered pipeline; registered pipelines: {known}"
            )
        target = registered[target]
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import module {module_name!r} for {target!r}: {exc}") from exc
    try:
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise TargetError(f"module {module_name!r} has no attribute {attribute!r}") from exc
    if callable(obj) and not isinstance(obj, (Pipeline, PipelineFactory)):
        obj = obj()
    if isinstance(obj, PipelineFactory):
        obj = obj.build()
    if not isinstance(obj, Pipeline):
        raise TargetError(
            f"{target!r} is a {type(obj).__name__}, not a Pipeline, PipelineFactory or a function returning one"
        )
    return obj


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


# -- sources and sinks by URL ----------------------------------------------------------------


def _scheme(url: str) -> str:
    """The scheme of a source or sink URL; ``file`` for a plain path (``clip.mp4``, ``C:\\\\clip.mp4``)."""
    scheme, colon, _ = url.partition(":")
    if not colon or len(scheme) == 1 or not scheme or not (scheme[0].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)):
        return "file"
    return scheme.lower()


def _factories(group: str) -> dict[str, Any]:
    return {ep.name.lower(): ep for ep in entry_points(group=group)}


def _load_component(group: str, what: str, url: str) -> Any:
    scheme = _scheme(url)
    registered = _factories(group)
    ep = registered.get(scheme) or registered.get(scheme.split("+", 1)[0])
    if ep is None:
        known = ", ".join(sorted(registered)) or "(none installed)"
        raise UnknownSchemeError(
            f"no {what} handles {scheme}: URLs ({url!r}); installed {what} schemes: {known}; "
            f"a package adds one under the {group!r} entry-point group"
        )
    try:
        factory = ep.load()
    except ImportError as exc:
        raise UsageError(f"the {what} for {scheme}: URLs ({ep.value}) cannot be imported: {exc}") from exc
    try:
        return factory(url)
    except RvaiError:
        raise
    except Exception as exc:  # a third-party factory: its error, in one line, with who raised it
        raise UsageError(f"the {what} factory {ep.value} rejected {url!r}: {type(exc).__name__}: {exc}") from exc


def load_source(url: str) -> Source:
    """The source for ``url``, made by the factory registered for its scheme under :data:`SOURCES_GROUP`.

    Raises:
        UnknownSchemeError: no installed package handles the scheme (the message lists those that are).
        UsageError: the factory cannot be imported or rejects the URL.
    """
    from rvai_sdk.drivers import Source

    source = _load_component(SOURCES_GROUP, "source", url)
    if not isinstance(source, Source):
        raise UsageError(f"the source factory for {url!r} returned a {type(source).__name__}, not a Source")
    return source


def load_sink(url: str) -> Sink:
    """The sink for ``url``, made by the factory registered for its scheme under :data:`SINKS_GROUP`.

    Raises:
        UnknownSchemeError: no installed package handles the scheme (the message lists those that are).
        UsageError: the factory cannot be imported or rejects the URL.
    """
    from rvai_sdk.drivers import Sink

    sink = _load_component(SINKS_GROUP, "sink", url)
    if not isinstance(sink, Sink):
        raise UsageError(f"the sink factory for {url!r} returned a {type(sink).__name__}, not a Sink")
    return sink


def _extension(module: str, *names: str) -> tuple[Any, ...]:
    """Classes from ``rvai_sdk.extensions.<module>`` (imported on use: each needs its extra)."""
    imported = importlib.import_module(f"rvai_sdk.extensions.{module}")
    return tuple(getattr(imported, name) for name in names)


def _query(url: str) -> tuple[urllib.parse.SplitResult, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    return parts, dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))


def _json_values(query: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, text in query.items():
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def video_source_from_url(url: str) -> Source:
    """A :class:`VideoSource` for a file path, ``file://``, ``rtsp://``, ``http(s)://`` ... URL.

    Raises:
        UsageError: a file path (or ``file://`` URL) names no file.

    Example:
        >>> video_source_from_url("rtsp://10.0.0.5/stream1").live
        True
    """
    (VideoSource,) = _extension("sources.video_source", "VideoSource")

    if url.startswith("file://"):
        url = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    if _scheme(url) == "file" and not os.path.isfile(url):
        raise UsageError(f"no such video file: {url!r} (give a path to a video file, or an rtsp:// URL)")
    made: Source = VideoSource(url)
    return made


def dummy_source_from_url(url: str) -> Source:
    """A :class:`DummySource`: ``dummy:`` or ``dummy:?rate=25&count=100&seed=1&live=true``.

    Example:
        >>> int(dummy_source_from_url("dummy:?count=5&rate=0").params.count)
        5
    """
    (DummySource,) = _extension("sources.dummy_source", "DummySource")

    made: Source = DummySource(params=_json_values(_query(url)[1]))
    return made


def mqtt_source_from_url(url: str) -> Source:
    """An :class:`MqttSource`: ``mqtt://[user:password@]host[:port]/topic/filter`` (port 1883 by default).

    Example:
        >>> mqtt_source_from_url("mqtt://broker:1884/cameras/+/counts").topic
        'cameras/+/counts'
    """
    (MqttSource,) = _extension("sources.mqtt_source", "MqttSource")

    parts = urllib.parse.urlsplit(url)
    topic = urllib.parse.unquote(parts.path.lstrip("/"))
    if not topic:
        raise UsageError(f"MQTT source URL {url!r} names no topic: mqtt://host:1883/some/topic")
    made: Source = MqttSource(
        topic, host=parts.hostname or "127.0.0.1", port=parts.port or 1883, username=parts.username, password=parts.password
    )
    return made


def database_sink_from_url(url: str) -> Sink:
    """A :class:`DatabaseSink` for a SQLAlchemy URL; ``?table=NAME`` picks the table (default ``results``).

    ``postgresql://`` with no driver uses psycopg 3 (``postgresql+psycopg://``), the one the ``sql`` extra installs.

    Example:
        >>> sink = database_sink_from_url("sqlite:///frames.db?table=frames")
        >>> sink.url, sink.table
        ('sqlite:///frames.db', 'frames')
    """
    (DatabaseSink,) = _extension("sinks.database_sink", "DatabaseSink")

    base, _, query_text = url.partition("?")
    query = dict(urllib.parse.parse_qsl(query_text, keep_blank_values=True))
    table = query.pop("table", "results")
    scheme, _, rest = base.partition(":")
    if scheme in ("postgresql", "postgres"):
        base = f"postgresql+psycopg:{rest}"
    made: Sink = DatabaseSink(base + (f"?{urllib.parse.urlencode(query)}" if query else ""), table=table)
    return made


def mqtt_sink_from_url(url: str) -> Sink:
    """An :class:`MqttSink`: ``mqtt://[user:password@]host[:port]/results/{source}`` (a topic template).

    Example:
        >>> mqtt_sink_from_url("mqtt://127.0.0.1/results/{source}").topic
        'results/{source}'
    """
    (MqttSink,) = _extension("sinks.mqtt_sink", "MqttSink")

    parts = urllib.parse.urlsplit(url)
    topic = urllib.parse.unquote(parts.path.lstrip("/")) or "results/{source}"
    made: Sink = MqttSink(
        topic, host=parts.hostname or "127.0.0.1", port=parts.port or 1883, username=parts.username, password=parts.password
    )
    return made


def http_callback_sink_from_url(url: str) -> Sink:
    """An :class:`HttpCallbackSink` POSTing each record to ``url`` (a template: ``{source}``, ``{index}``...)."""
    (HttpCallbackSink,) = _extension("sinks.http_callback_sink", "HttpCallbackSink")

    made: Sink = HttpCallbackSink(url)
    return made


def dummy_sink_from_url(url: str) -> Sink:
    """A :class:`DummySink` that logs every record (``dummy:``)."""
    (DummySink,) = _extension("sinks.dummy_sink", "DummySink")

    made: Sink = DummySink()
    return made


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
    return pipeline, Inference(pipeline=pipeline, parameters=parse_params(args.param))


def _check_driver(handle: PipelineDriverProcess) -> None:
    from rvai_sdk.exc import DriverError
    from rvai_sdk.runtime.status import ProcessStatus

    if handle.status is ProcessStatus.FAILED or not handle.is_alive():
        failure = (handle.failure or "it stopped").splitlines()[0]
        raise DriverError(f"driver {handle.ref!r} stopped while running: {failure}")


def _cmd_serve(args: argparse.Namespace) -> int:
    FastAPIClient, FastAPIDriver = _extension("drivers.fast_api_driver", "FastAPIClient", "FastAPIDriver")
    from rvai_sdk.runtime import init

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535 (0: any free port), got {args.port}")
    pipeline, inference = _start(args)
    with _stop_on_signals() as stop, init(args.runtime) as rt, rt.start_inference(inference) as proc:
        http = proc.add_driver("http", FastAPIDriver, {"host": args.host, "listen_port": args.port, "api_key": args.api_key})
        service = http.get_service("http")
        host = service["address"]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{service['port']}"
        with FastAPIClient(process=http, api_key=args.api_key) as client:
            client.wait(timeout=60.0)
        bound = f" (for {args.duration:g} s)" if args.duration is not None else " (Ctrl-C to stop)"
        print(f"serving pipeline {pipeline.name!r} on the {args.runtime} runtime at {url}{bound}", flush=True)
        print(f"  POST {url}/predict   docs {url}/docs   metrics {url}/metrics", flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set():
            remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if remaining <= 0 or stop.wait(remaining):
                break
            _check_driver(http)
        print("stopping", flush=True)
        proc.remove_driver(http.pid)
    print("stopped", flush=True)
    return 0


def progress_line(stats: Mapping[str, Any], previous: dict[str, int], elapsed: float) -> str:
    """One line for a :class:`SourceSinkDriver`'s stats: per source, frames/s since the last line, dropped, written.

    ``written`` counts only rows the sinks newly stored; rows a sink already held
    (a replay) show as ``already present``, rejected ones as ``dead-lettered``.

    Args:
        stats: ``SourceSinkDriver.stats()``.
        previous: source ref → items done at the last line; updated.
        elapsed: seconds since the last line.

    Example:
        >>> stats = {"sources": {"cam-1": {"processed": 50, "failed": 0, "dropped": 2, "written": 48, "state": "running"}}}
        >>> progress_line(stats, {"cam-1": 25}, 1.0)
        'cam-1: 25.0 frames/s, 2 dropped, 48 written'
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
        parts.append(f"{ref}: {rate:.1f} frames/s, {entry['dropped']} dropped, {entry['written']} written{extra}{state}")
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


from rvai_sdk.drivers.metrics import MetricsServer, stream_metrics_text  # noqa: E402  (stream_metrics_text: public here too)


class _MetricsServer(MetricsServer):
    """``--metrics-port``: the shared metrics server, started at once; a port that cannot be bound is a usage error."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        try:
            self.start()
        except OSError as exc:
            raise UsageError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc}") from exc


def _cmd_stream(args: argparse.Namespace) -> int:
    (SourceSinkDriver,) = _extension("drivers.source_sink_driver", "SourceSinkDriver")
    from rvai_sdk.runtime import init

    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    pipeline, inference = _start(args)
    sources = {ref: load_source(url) for ref, url in _named(args.source, "source").items()}
    sinks = {ref: load_sink(url) for ref, url in _named(args.sink, "sink").items()}
    tty = sys.stdout.isatty()
    metrics = _MetricsServer(args.metrics_port) if args.metrics_port is not None else None
    try:
        with _stop_on_signals() as stop, init(args.runtime) as rt, rt.start_inference(inference) as proc:
            stream = proc.add_driver("stream", SourceSinkDriver, sources=sources, sinks=sinks, parameters={"limit": args.frames})
            names = ", ".join(f"{ref} ({url})" for ref, url in _named(args.source, "source").items())
            print(f"streaming {names} through pipeline {pipeline.name!r} into {', '.join(args.sink)}", flush=True)
            if metrics is not None:
                print(f"  metrics {metrics.url}", flush=True)
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
                print(f"\r{line}\x1b[K" if tty else line, end="" if tty else "\n", flush=True)
                if metrics is not None:
                    elapsed = max(now - last, 1e-9)
                    rates = {ref: (done - before.get(ref, 0)) / elapsed for ref, done in previous.items()}
                    metrics.update(stream_metrics_text(pipeline.name, stats, rates))
                last = now
                if _stream_done(stats) or (deadline is not None and now >= deadline):
                    break
            if tty:
                print()
            print("stopping: finishing requests in flight and writing buffered results", flush=True)
            stats = _drain(stream, stats)
            proc.remove_driver(stream.pid)
    finally:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rvai-sdk``."""
    parser = argparse.ArgumentParser(prog="rvai-sdk", description="Inspect, draw, serve and stream rvai_sdk pipelines.")
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
        sub.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this long")

    serve = commands.add_parser("serve", help="serve a pipeline over HTTP until Ctrl-C (FastAPIDriver)")
    common(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free port)")
    serve.add_argument(
        "--api-key", default=os.environ.get("RVAI_SDK_API_KEY") or None,
        help="require 'Authorization: Bearer KEY' on every route but /health (default: $RVAI_SDK_API_KEY, else none)",
    )
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
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve per-source and per-sink Prometheus metrics on 127.0.0.1:PORT/metrics (0: any free port)",
    )
    stream.set_defaults(run=_cmd_stream)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rvai-sdk``; returns the exit status.

    An rvai_sdk error is printed on stderr without its traceback and gives status 2;
    ``stream`` gives 1 when a source failed or a sink lost records.
    """
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
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
