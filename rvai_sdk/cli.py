"""The ``rvai-sdk`` command line: inspect and draw pipelines.

``rvai-sdk info TARGET`` prints a pipeline's inputs, outputs, cells and
parameters with their schemas; ``rvai-sdk show TARGET -o graph.svg`` draws it.
TARGET is ``module:attribute`` (a ``Pipeline``, a ``PipelineFactory``, or a
function returning either; the current directory is importable) or a name
registered by an installed package under the ``rvai_sdk.pipelines`` entry-point
group::

    # pyproject.toml of a package that ships a pipeline
    [project.entry-points."rvai_sdk.pipelines"]
    counting = "my_package.pipelines:build_counting"
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from rvai_sdk import types as _types
from rvai_sdk.exc import RvaiError
from rvai_sdk.pipeline import Pipeline, PipelineFactory

__all__ = ["main", "load_pipeline", "registered_pipelines", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "rvai_sdk.pipelines"
"""Entry-point group under which packages register pipelines by name."""


class TargetError(RvaiError, LookupError):
    """A pipeline target could not be found or is not a pipeline."""


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rvai-sdk``."""
    parser = argparse.ArgumentParser(prog="rvai-sdk", description="Inspect and draw rvai_sdk pipelines.")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rvai-sdk``; returns the exit status (2 with a message on stderr for an rvai_sdk error)."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except RvaiError as exc:
        print(f"rvai-sdk: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
