"""Building a pipeline: add cells, wire ports, declare inputs and outputs, validate once."""

from __future__ import annotations

import re
from typing import Any, Union

import networkx as nx

from rvai_sdk import types as _types
from rvai_sdk.cell import Cell, PortRef
from rvai_sdk.exc import PipelineBuildError
from rvai_sdk.pipeline.graph import SINK, SOURCE, Binding, InputSpec, OutputSpec, Pipeline

__all__ = ["PipelineFactory", "PortLike"]

PortLike = Union[PortRef, str]
"""A port given as a reference (``cell.outputs.y``) or as a ``"ref.port"`` string."""

_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class PipelineFactory:
    """Collects cells and wiring, then :meth:`build` validates everything at once.

    Every problem (unknown ref, duplicate ref, port type mismatch, an input fed
    twice or never, a cycle, a reused output ref) is collected and raised as one
    :class:`~rvai_sdk.exc.PipelineBuildError` listing them all.

    Args:
        name: the pipeline's name, shown in docs, drawings and HTTP schemas.

    Example:
        >>> from rvai_sdk.pipeline import PipelineFactory
        >>> pf = PipelineFactory(name="empty")
        >>> pf.build()
        Traceback (most recent call last):
        ...
        rvai_sdk.exc.PipelineBuildError: pipeline 'empty' declares no output; declare one with declare_output(ref=..., output=cell.outputs.<port>)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._cells: list[tuple[str, Cell]] = []
        self._connections: list[tuple[PortLike, PortLike]] = []
        self._inputs: list[tuple[str, PortLike]] = []
        self._outputs: list[tuple[str, PortLike]] = []

    def add_cell(self, *, ref: str, cell: Cell) -> Cell:
        """Add a cell instance under a ref unique in the pipeline.

        Args:
            ref: the cell's name in the pipeline: letters, digits, ``_`` and ``-``.
            cell: a cell instance (``MyCell()``); one instance per ref.

        Returns:
            The cell, so ports can be referenced right away.
        """
        self._cells.append((ref, cell))
        return cell

    def connect(self, output: PortLike, input: PortLike) -> None:
        """Feed a cell's output port into another cell's input port.

        Args:
            output: the producing port, ``a.outputs.y`` or ``"a.y"``.
            input: the consuming port, ``b.inputs.x`` or ``"b.x"``.
        """
        self._connections.append((output, input))

    def declare_input(self, *, ref: str, input: PortLike) -> None:
        """Feed a cell input port from the pipeline input ``ref``; one ref may feed several ports.

        Args:
            ref: the pipeline input's name, as given to ``predict({ref: value})``.
            input: the cell input port it feeds.
        """
        self._inputs.append((ref, input))

    def declare_output(self, *, ref: str, output: PortLike) -> None:
        """Expose a cell output port as the pipeline output ``ref``.

        Args:
            ref: the pipeline output's name, a key of ``predict(...).result()``.
            output: the cell output port it reads.
        """
        self._outputs.append((ref, output))

    def build(self) -> Pipeline:
        """Validate the wiring and return the immutable :class:`Pipeline`.

        Raises:
            PipelineBuildError: listing every problem found, one line each.
        """
        return _Builder(self).build()


class _Builder:
    def __init__(self, factory: PipelineFactory) -> None:
        self.f = factory
        self.problems: list[str] = []
        self.cells: dict[str, Cell] = {}
        self.ref_of: dict[int, str] = {}

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def build(self) -> Pipeline:
        self.add_cells()
        bindings: dict[str, dict[str, Binding]] = {ref: {} for ref in self.cells}
        feeders: dict[tuple[str, str], list[str]] = {}
        graph = nx.DiGraph()
        graph.add_node(SOURCE)
        graph.add_node(SINK)
        for ref in self.cells:
            graph.add_node(ref)

        for out_like, in_like in self.f._connections:
            out = self.resolve(out_like, "output", "connect()")
            inp = self.resolve(in_like, "input", "connect()")
            if out is None or inp is None:
                continue
            (src_ref, src_port, src_type), (dst_ref, dst_port, dst_type) = out, inp
            if not _compatible(src_type, dst_type):
                self.problem(self.mismatch(dst_ref, dst_port, dst_type, src_ref, src_port, src_type))
                continue
            feeders.setdefault((dst_ref, dst_port), []).append(f"'{src_ref}.{src_port}'")
            bindings[dst_ref][dst_port] = Binding(src_ref, src_port)
            self.add_edge(graph, src_ref, dst_ref, (src_port, dst_port))

        inputs: dict[str, InputSpec] = {}
        for ref, in_like in self.f._inputs:
            if not self.valid_ref(ref, "pipeline input"):
                continue
            inp = self.resolve(in_like, "input", f"declare_input(ref={ref!r})")
            if inp is None:
                continue
            dst_ref, dst_port, dst_type = inp
            spec = inputs.get(ref)
            if spec is not None and _types.type_name(spec.type) != _types.type_name(dst_type):
                self.problem(
                    f"pipeline input {ref!r} feeds ports of different types: "
                    f"{', '.join(f'{c}.{p}' for c, p in spec.targets)} ({_types.type_name(spec.type)}) and "
                    f"'{dst_ref}.{dst_port}' ({_types.type_name(dst_type)}); declare a separate input for each type"
                )
                continue
            targets = (spec.targets if spec else ()) + ((dst_ref, dst_port),)
            like = self.cells[dst_ref].spec().inputs.fields_info()
            field_like = next((f.like for f in like if f.name == dst_port), None)
            inputs[ref] = InputSpec(ref=ref, type=dst_type, targets=targets, like=field_like)
            feeders.setdefault((dst_ref, dst_port), []).append(f"pipeline input {ref!r}")
            bindings[dst_ref][dst_port] = Binding(None, ref)
            self.add_edge(graph, SOURCE, dst_ref, (ref, dst_port))

        outputs: dict[str, OutputSpec] = {}
        for ref, out_like in self.f._outputs:
            if not self.valid_ref(ref, "pipeline output"):
                continue
            out = self.resolve(out_like, "output", f"declare_output(ref={ref!r})")
            if out is None:
                continue
            src_ref, src_port, src_type = out
            if ref in outputs:
                prev = outputs[ref]
                self.problem(
                    f"output ref {ref!r} is declared twice ('{prev.cell}.{prev.port}' and '{src_ref}.{src_port}'); "
                    "give each pipeline output its own ref"
                )
                continue
            outputs[ref] = OutputSpec(ref=ref, type=src_type, cell=src_ref, port=src_port)
            self.add_edge(graph, src_ref, SINK, (src_port, ref))

        for (dst_ref, dst_port), sources in feeders.items():
            if len(sources) > 1:
                self.problem(
                    f"input port '{dst_ref}.{dst_port}' is fed {len(sources)} times (by {' and by '.join(sources)}); "
                    "feed each input port once"
                )
        for ref, cell in self.cells.items():
            for info in cell.spec().inputs.fields_info():
                if (ref, info.name) not in feeders and info.required:
                    self.problem(
                        f"input port '{ref}.{info.name}' ({_types.type_name(info.type)}) is never fed; connect an "
                        f"output to it or declare it as a pipeline input with declare_input(ref=..., input=...)"
                    )
        if not self.f._outputs:
            self.problem(
                f"pipeline {self.f.name!r} declares no output; declare one with "
                "declare_output(ref=..., output=cell.outputs.<port>)"
            )
        cells_graph = graph.subgraph(self.cells)
        if not nx.is_directed_acyclic_graph(cells_graph):
            cycle = nx.find_cycle(cells_graph)
            path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
            self.problem(f"the pipeline has a cycle: {path}; a pipeline must be a DAG, remove one of these connections")

        if self.problems:
            raise PipelineBuildError(self.problems)
        return Pipeline(
            name=self.f.name,
            graph=graph,
            cells=dict(self.cells),
            inputs=inputs,
            outputs=outputs,
            bindings={ref: dict(b) for ref, b in bindings.items()},
        )

    def add_cells(self) -> None:
        for ref, cell in self.f._cells:
            if not self.valid_ref(ref, "cell"):
                continue
            if not isinstance(cell, Cell):
                hint = " (pass an instance: MyCell())" if isinstance(cell, type) and issubclass(cell, Cell) else ""
                self.problem(f"add_cell(ref={ref!r}) got {cell!r}, which is not a cell instance{hint}")
                continue
            if ref in self.cells:
                self.problem(f"duplicate ref {ref!r}: two cells were added under it; give each cell its own ref")
                continue
            if id(cell) in self.ref_of:
                self.problem(
                    f"the same {type(cell).__name__} instance was added as {self.ref_of[id(cell)]!r} and {ref!r}; "
                    f"create one instance per ref: {type(cell).__name__}()"
                )
                continue
            self.cells[ref] = cell
            self.ref_of[id(cell)] = ref

    def valid_ref(self, ref: object, what: str) -> bool:
        if not isinstance(ref, str) or not _REF.match(ref) or ref in (SOURCE, SINK):
            self.problem(
                f"{what} ref {ref!r} is not valid; use letters, digits, '_' and '-', starting with a letter or '_'"
            )
            return False
        return True

    def resolve(self, port: PortLike, direction: str, where: str) -> tuple[str, str, Any] | None:
        if isinstance(port, PortRef):
            ref = self.ref_of.get(id(port.cell))
            if ref is None or self.cells.get(ref) is not port.cell:
                self.problem(
                    f"{where}: port {type(port.cell).__name__}.{port.name} belongs to a cell that is not in the "
                    f"pipeline; add it first with add_cell(ref=..., cell=...)"
                )
                return None
            name, actual = port.name, port.direction
        elif isinstance(port, str) and port.count(".") == 1:
            ref, name = port.split(".")
            cell = self.cells.get(ref)
            if cell is None:
                known = ", ".join(self.cells) or "(none)"
                self.problem(f"{where}: unknown ref {ref!r} in port {port!r}; the pipeline's cells are: {known}")
                return None
            spec = cell.spec()
            wanted, other = (spec.input_ports, spec.output_ports) if direction == "input" else (spec.output_ports, spec.input_ports)
            if name in wanted:
                actual = direction  # a name that is both an input and an output resolves as asked
            elif name in other:
                actual = "output" if direction == "input" else "input"
            else:
                ports = ", ".join([*spec.input_ports, *spec.output_ports]) or "(none)"
                self.problem(f"{where}: cell {ref!r} has no port {name!r}; its ports are: {ports}")
                return None
        else:
            self.problem(f"{where}: {port!r} is not a port; pass cell.inputs.<name>, cell.outputs.<name> or 'ref.port'")
            return None
        if actual != direction:
            self.problem(
                f"{where}: '{ref}.{name}' is an {actual} port where an {direction} port is expected"
                + ("; connect(output, input) takes the producing port first" if where == "connect()" else "")
            )
            return None
        cell_spec = self.cells[ref].spec()
        infos = cell_spec.output_ports if direction == "output" else cell_spec.input_ports
        return ref, name, infos[name].type

    def mismatch(self, dst_ref: str, dst_port: str, dst_type: Any, src_ref: str, src_port: str, src_type: Any) -> str:
        text = (
            f"port '{dst_ref}.{dst_port}' expects {_types.type_name(dst_type)} but '{src_ref}.{src_port}' "
            f"produces {_types.type_name(src_type)}"
        )
        alternatives = [
            f"'{src_ref}.{name}'"
            for name, info in self.cells[src_ref].spec().output_ports.items()
            if _compatible(info.type, dst_type)
        ]
        if alternatives:
            return f"{text}; connect {' or '.join(alternatives)} instead, or add a converter cell"
        return f"{text}; add a converter cell between them"

    @staticmethod
    def add_edge(graph: nx.DiGraph, u: str, v: str, ports: tuple[str, str]) -> None:
        if graph.has_edge(u, v):
            graph.edges[u, v]["ports"].append(ports)
        else:
            graph.add_edge(u, v, ports=[ports])


def _compatible(produced: Any, expected: Any) -> bool:
    """Whether a value of type ``produced`` can feed a port of type ``expected``."""
    if produced is expected or produced == expected:
        return True
    base_p, opt_p = _types.unwrap_optional(produced)
    base_e, opt_e = _types.unwrap_optional(expected)
    if opt_p and not opt_e:
        return False
    return isinstance(base_p, type) and isinstance(base_e, type) and issubclass(base_p, base_e)
