"""The executor's plan: what it needs to know about every cell, fixed before the first request.

A :class:`Plan` is built once per executor from the pipeline and the runtime's
per-cell options (devices, batching policies) and never changes afterwards: the
cells in topological order (:class:`CellPlan`: how to call the cell, where its
inputs come from, which cells it feeds, its limits), the root cells, the batched
cells and where the pipeline's outputs are read. The scheduler keeps what changes
(queues, running calls, counters) in records of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rvai_sdk.cell import CellSpec
from rvai_sdk.exc import ParameterError
from rvai_sdk.execution.batching import BatchingPolicy
from rvai_sdk.pipeline.graph import Pipeline

__all__ = ["CellPlan", "Plan"]


class CellPlan:
    """The static facts about one cell: how to call it, where its inputs come from, its successors and limits.

    Attributes:
        index: position in the pipeline's topological order (``Pipeline.order``).
        ref: the cell ref.
        spec: the cell's :class:`~rvai_sdk.cell.CellSpec`.
        call, call_batch: the cell class's (class)methods.
        has_call: whether the cell defines ``call`` (else single items go through ``call_batch``).
        batched: whether the cell defines ``call_batch`` (its requests are batched).
        inputs_cls, outputs_cls, state_cls: the cell's data classes (``state_cls`` may be ``None``).
        bindings: per input port: ``(port, source cell index or -1 for a pipeline input, source port)``.
        successors: indices of the cells fed by this one.
        descendants: indices of every cell downstream of this one (its successors, theirs, and so on).
        n_preds: how many cells feed this one.
        concurrency: most concurrent calls.
        max_batch_size, max_batch_wait: batching limits (the policy given to the runtime, else the cell's own).
        track_busy: whether per-sid exclusivity must be tracked (batched, or concurrency > 1).
        device: the device the cell runs on.
        out_checks: per output field ``(name, declared type, declaration, coercer)``: the checks at the
            cell boundary.
    """

    __slots__ = (
        "index",
        "ref",
        "spec",
        "call",
        "call_batch",
        "has_call",
        "batched",
        "inputs_cls",
        "outputs_cls",
        "state_cls",
        "bindings",
        "successors",
        "descendants",
        "n_preds",
        "concurrency",
        "max_batch_size",
        "max_batch_wait",
        "track_busy",
        "device",
        "out_checks",
    )

    index: int
    ref: str
    spec: CellSpec
    call: Callable[..., Any]
    call_batch: Callable[..., Any]
    has_call: bool
    batched: bool
    inputs_cls: Any
    outputs_cls: Any
    state_cls: Any
    bindings: tuple[tuple[str, int, str], ...]
    successors: tuple[int, ...]
    descendants: tuple[int, ...]
    n_preds: int
    concurrency: int
    max_batch_size: int
    max_batch_wait: float
    track_busy: bool
    device: str
    out_checks: tuple[tuple[str, Any, Any, Any], ...]

    def __init__(
        self,
        index: int,
        ref: str,
        spec: CellSpec,
        *,
        bindings: tuple[tuple[str, int, str], ...],
        successors: tuple[int, ...],
        descendants: tuple[int, ...],
        n_preds: int,
        policy: BatchingPolicy | None,
        device: str,
    ) -> None:
        cls = spec.cell_class
        values: dict[str, Any] = {
            "index": index,
            "ref": ref,
            "spec": spec,
            "call": cls.call,
            "call_batch": cls.call_batch,
            "has_call": spec.has_call,
            "batched": spec.has_call_batch,
            "inputs_cls": spec.inputs,
            "outputs_cls": spec.outputs,
            "state_cls": spec.state,
            "bindings": bindings,
            "successors": successors,
            "descendants": descendants,
            "n_preds": n_preds,
            "concurrency": spec.concurrency,
            "max_batch_size": policy.max_batch_size if policy else spec.max_batch_size,
            "max_batch_wait": policy.max_batch_wait if policy else spec.max_batch_wait,
            "track_busy": spec.has_call_batch or spec.concurrency > 1,
            "device": device,
            "out_checks": spec.outputs._coercers(),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"CellPlan is immutable; cannot set {name!r}")

    def __repr__(self) -> str:
        return f"CellPlan({self.index}, {self.ref!r}, batched={self.batched}, concurrency={self.concurrency})"


class Plan:
    """The static facts about a pipeline that the executor runs: its cells in order, roots, batched cells, outputs.

    Args:
        pipeline: the pipeline.
        batching: cell ref to a :class:`BatchingPolicy` overriding the cell's own limits.
        devices: cell ref to the device it runs on (``"cpu"`` by default).

    Raises:
        ParameterError: a batching policy for an unknown cell, or for a cell without ``call_batch``.

    Attributes:
        cells: one :class:`CellPlan` per cell, in topological order (``cells[i].index == i``).
        roots: the cells fed only by pipeline inputs.
        batched: the cells with ``call_batch``.
        preds: per cell, how many cells feed it.
        outputs: per pipeline output ``(output ref, cell index, port)``.
    """

    __slots__ = ("cells", "roots", "batched", "preds", "outputs", "refs")

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        batching: Mapping[str, BatchingPolicy] | None = None,
        devices: Mapping[str, str] | None = None,
    ) -> None:
        batching = dict(batching or {})
        devices = dict(devices or {})
        for ref in batching:
            if ref not in pipeline.cells:
                raise ParameterError(f"batching given for unknown cell ref {ref!r}", ref=ref)
            if not pipeline.spec(ref).has_call_batch:
                raise ParameterError(
                    f"batching given for cell {ref!r}, which has no call_batch(); only batched cells take a policy",
                    ref=ref,
                )
        index = {ref: i for i, ref in enumerate(pipeline.order)}
        below: dict[str, set[int]] = {}  # cell ref -> the indices of every cell downstream of it
        for ref in reversed(pipeline.order):
            below[ref] = set()
            for successor in pipeline.successors(ref):
                below[ref].add(index[successor])
                below[ref] |= below[successor]
        cells = []
        for i, ref in enumerate(pipeline.order):
            bindings = tuple(
                (port, -1 if binding.cell is None else index[binding.cell], binding.port)
                for port, binding in pipeline.bindings[ref].items()
            )
            cell = CellPlan(
                i,
                ref,
                pipeline.spec(ref),
                bindings=bindings,
                successors=tuple(index[s] for s in pipeline.successors(ref)),
                descendants=tuple(sorted(below[ref])),
                n_preds=len(pipeline.predecessors(ref)),
                policy=batching.get(ref),
                device=devices.get(ref, "cpu"),
            )
            cells.append(cell)
        self.cells: tuple[CellPlan, ...] = tuple(cells)
        self.roots: tuple[CellPlan, ...] = tuple(c for c in cells if c.n_preds == 0)
        self.batched: tuple[CellPlan, ...] = tuple(c for c in cells if c.batched)
        self.preds: list[int] = [c.n_preds for c in cells]
        self.outputs: tuple[tuple[str, int, str], ...] = tuple(
            (o.ref, index[o.cell], o.port) for o in pipeline.outputs.values()
        )
        self.refs: dict[str, CellPlan] = {c.ref: c for c in cells}
