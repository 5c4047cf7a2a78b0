"""Rendering pipelines with Graphviz; pygraphviz is imported only here."""

from __future__ import annotations

import typing
from pathlib import Path

from rvai_sdk._compat import require

if typing.TYPE_CHECKING:
    from rvai_sdk.pipeline.graph import Pipeline, PipelineDrawing


def render(pipeline: Pipeline, path: Path | None) -> PipelineDrawing:
    """Lay out ``pipeline`` with ``dot``; write it to ``path`` if given and return the drawing."""
    from rvai_sdk.pipeline.graph import PipelineDrawing

    pgv = require("pygraphviz", extra="draw")
    graph = pgv.AGraph(string=pipeline.to_dot())
    graph.layout(prog="dot")
    svg = graph.draw(format="svg").decode()
    if path is not None:
        fmt = path.suffix.lstrip(".") or "svg"
        if fmt == "svg":
            path.write_text(svg)
        else:
            graph.draw(str(path), format=fmt)
    return PipelineDrawing(svg=svg, path=path)
