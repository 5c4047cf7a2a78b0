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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rvai_sdk import __version__
from rvai_sdk import types as _types
from rvai_sdk._cli_run import parse_models, parse_params
from rvai_sdk._cli_serve import cmd_serve
from rvai_sdk._cli_services import add_service_commands, detach, service_options, wants_detach
from rvai_sdk._cli_stream import cmd_stream, progress_line
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
from rvai_sdk._logging import LOG_FORMATS, LOG_LEVELS, configure
from rvai_sdk.drivers.metrics import stream_metrics_text  # public here too
from rvai_sdk.exc import RvaiError, TargetError, UnknownSchemeError, UsageError
from rvai_sdk.pipeline import Pipeline

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

# The entry-point lookups live in rvai_sdk._entry_points, the errors in rvai_sdk.exc, and the commands that
# run a pipeline in rvai_sdk._cli_run (what serve and stream share), _cli_serve, _cli_stream and _cli_services
# (--detach, ps, logs, stop, rm); this module parses the command line and dispatches. Imported above, each
# public name stays importable as rvai_sdk.cli.X.

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
        sub.add_argument(
            "--stuck-after", type=float, default=60.0, metavar="SECONDS",
            help="a cell call running longer counts as stuck: not ready, and the process is restarted (default: 60)",
        )
        sub.add_argument(
            "--no-supervise", dest="supervise", action="store_false",
            help="do not restart the inference process when it dies, wedges or a call is stuck (local and ray)",
        )
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
    service_options(serve)
    serve.set_defaults(run=cmd_serve)

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
    service_options(stream)
    stream.set_defaults(run=cmd_stream)
    add_service_commands(commands)
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
        if wants_detach(args):
            status: int = detach(args, sys.argv[1:] if argv is None else list(argv))
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
