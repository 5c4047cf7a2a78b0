"""The built pipeline: a validated DAG of cells between a virtual source and sink."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import networkx as nx

from rvai_sdk import types as _types
from rvai_sdk.cell import Cell, CellSpec
from rvai_sdk.exc import InputValidationError

__all__ = ["Pipeline", "PipelineDrawing", "InputSpec", "OutputSpec", "Binding", "SOURCE", "SINK"]

SOURCE = "__source__"
"""Node name of the virtual source: where pipeline inputs enter."""
SINK = "__sink__"
"""Node name of the virtual sink: where pipeline outputs leave."""


@attrs.frozen
class Binding:
    """Where one cell input port gets its value: a cell output (``cell``, ``port``) or a pipeline input (``cell`` is None)."""

    cell: str | None
    port: str


@attrs.frozen
class InputSpec:
    """A pipeline input: its ref, type, and the cell input ports it feeds."""

    ref: str
    type: Any
    targets: tuple[tuple[str, str], ...]
    like: Any = None

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of this input's value."""
        return dict(_types.json_schema(self.type, like=self.like))


@attrs.frozen
class OutputSpec:
    """A pipeline output: its ref, type, and the cell output port it reads."""

    ref: str
    type: Any
    cell: str
    port: str

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of this output's value."""
        return dict(_types.json_schema(self.type))


class Pipeline:
    """A validated pipeline, made by :meth:`PipelineFactory.build`; immutable and picklable.

    The graph is a :class:`networkx.DiGraph` whose nodes are the cell refs plus
    the virtual :data:`SOURCE` and :data:`SINK`; each edge's ``ports`` attribute
    lists the ``(from_port, to_port)`` pairs it carries.

    Attributes:
        name: the pipeline's name.
        graph: the DAG, source and sink included.
        cells: cell instances by ref.
        inputs: pipeline inputs by ref.
        outputs: pipeline outputs by ref.
        bindings: for each cell ref, where each fed input port gets its value.
        order: cell refs in a topological order.
    """

    def __init__(
        self,
        *,
        name: str,
        graph: nx.DiGraph,
        cells: Mapping[str, Cell],
        inputs: Mapping[str, InputSpec],
        outputs: Mapping[str, OutputSpec],
        bindings: Mapping[str, Mapping[str, Binding]],
    ) -> None:
        self.name = name
        self.graph = graph
        self.cells = dict(cells)
        self.inputs = dict(inputs)
        self.outputs = dict(outputs)
        self.bindings = {ref: dict(b) for ref, b in bindings.items()}
        self.order = tuple(n for n in nx.topological_sort(graph) if n not in (SOURCE, SINK))

    def spec(self, ref: str) -> CellSpec:
        """The :class:`CellSpec` of the cell at ``ref``."""
        return self.cells[ref].spec()

    def predecessors(self, ref: str) -> list[str]:
        """The cell refs whose outputs feed ``ref`` (the source excluded)."""
        return [p for p in self.graph.predecessors(ref) if p != SOURCE]

    def successors(self, ref: str) -> list[str]:
        """The cell refs fed by ``ref`` (the sink excluded)."""
        return [s for s in self.graph.successors(ref) if s != SINK]

    def validate_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check and coerce a request's inputs against the pipeline's input spec.

        Args:
            inputs: pipeline input ref to value; lossless plain values are coerced.

        Returns:
            A new dict of input ref to typed value.

        Raises:
            InputValidationError: an input is missing, unknown, or of the wrong type; the
                message and ``field`` name it.
        """
        if not isinstance(inputs, Mapping):
            raise InputValidationError(
                f"pipeline {self.name!r}: inputs must be a mapping of input ref to value, got {type(inputs).__name__}"
            )
        specs = self.inputs
        if inputs.keys() != specs.keys():
            unknown = [k for k in inputs if k not in specs]
            if unknown:
                raise InputValidationError(
                    f"pipeline {self.name!r} has no input {unknown[0]!r}; its inputs are: {', '.join(specs) or '(none)'}",
                    field=str(unknown[0]),
                )
            missing = [k for k in specs if k not in inputs]
            raise InputValidationError(
                f"pipeline {self.name!r}: missing input {missing[0]!r} ({_types.type_name(specs[missing[0]].type)}); "
                f"its inputs are: {', '.join(specs)}",
                field=missing[0],
                expected=_types.type_name(specs[missing[0]].type),
            )
        validated = {}
        for ref, value in inputs.items():
            spec = specs[ref]
            if spec.like is None and type(value) is spec.type:
                validated[ref] = value
                continue
            try:
                validated[ref] = _types.coerce(spec.type, value, like=spec.like)
            except InputValidationError as exc:
                path = ref + (exc.field or "")
                raise InputValidationError(f"input {path!r}: {exc.detail}", field=path, expected=exc.expected) from exc
        return validated

    def input_schema(self) -> dict[str, Any]:
        """A JSON schema (an object) for the ``inputs`` of a request."""
        return _object_schema(f"{self.name} inputs", self.inputs)

    def output_schema(self) -> dict[str, Any]:
        """A JSON schema (an object) for the ``outputs`` of a response."""
        return _object_schema(f"{self.name} outputs", self.outputs)

    def describe(self) -> dict[str, Any]:
        """A JSON-compatible description: name, cells, inputs and outputs with their schemas."""
        return {
            "name": self.name,
            "cells": {
                ref: {
                    "cell": spec.name,
                    "inputs": spec.inputs.json_schema(),
                    "outputs": spec.outputs.json_schema(),
                    "parameters": spec.parameters.json_schema(),
                    "state": spec.state.__name__ if spec.state else None,
                    "batched": spec.has_call_batch,
                }
                for ref, spec in ((r, self.spec(r)) for r in self.order)
            },
            "inputs": self.input_schema(),
            "outputs": self.output_schema(),
        }

    def to_dot(self) -> str:
        """The pipeline in Graphviz DOT, source and sink included (needs no extra)."""
        lines = [f'digraph "{_dot_escape(self.name)}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];']
        lines.append(f'  "{SOURCE}" [label="source", shape=circle, style=filled, fillcolor="#dfe7fd"];')
        lines.append(f'  "{SINK}" [label="sink", shape=doublecircle, style=filled, fillcolor="#dfe7fd"];')
        for ref in self.order:
            spec = self.spec(ref)
            batched = "<BR/><I>batched</I>" if spec.has_call_batch else ""
            state = f"<BR/><I>state: {html.escape(spec.state.__name__)}</I>" if spec.state else ""
            label = f"<<B>{html.escape(ref)}</B><BR/>{html.escape(spec.name)}{state}{batched}>"
            lines.append(f'  "{_dot_escape(ref)}" [label={label}, shape=box, style=rounded];')
        for u, v, data in self.graph.edges(data=True):
            # one line per port pair: escape each, then join with DOT's own line break (escaping it would print "\\n")
            label = "\\n".join(_dot_escape(f"{a} → {b}") for a, b in data["ports"])
            lines.append(f'  "{_dot_escape(u)}" -> "{_dot_escape(v)}" [label="{label}", fontsize=10];')
        lines.append("}")
        return "\n".join(lines)

    def show(self, path: str | Path | None = None) -> PipelineDrawing:
        """Draw the pipeline with Graphviz (the ``draw`` extra).

        In Jupyter the returned drawing renders inline as SVG.

        Args:
            path: where to write the drawing; the suffix picks the format (``.svg``, ``.png``, ``.pdf``).

        Returns:
            The drawing (its ``svg`` text, and ``path`` when written).

        Raises:
            MissingExtraError: pygraphviz is not installed (``pip install 'rvai_sdk[draw]'``).
        """
        from rvai_sdk.pipeline.drawing import render

        return render(self, None if path is None else Path(path))

    def __repr__(self) -> str:
        return (
            f"<Pipeline {self.name!r}: {len(self.cells)} cells, inputs={list(self.inputs)}, "
            f"outputs={list(self.outputs)}>"
        )


@attrs.frozen
class PipelineDrawing:
    """A rendered pipeline: its SVG text, and the file written if a path was given."""

    svg: str = attrs.field(repr=False)
    path: Path | None = None

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path is not None else ""
        return f"<PipelineDrawing: {len(self.svg) / 1024:.1f} KiB of SVG{where}>"


def _object_schema(title: str, specs: Mapping[str, InputSpec] | Mapping[str, OutputSpec]) -> dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "properties": {ref: spec.json_schema() for ref, spec in specs.items()},
        "required": list(specs),
        "additionalProperties": False,
    }


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
