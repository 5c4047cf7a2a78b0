"""What to run (a pipeline with its parameters, models, resources and batching) and the one function that builds it."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from rvai_sdk.exc import ParameterError
from rvai_sdk.execution.executor import BatchingPolicy, Executor, resolve_parameters
from rvai_sdk.execution.state_store import DurableStateStore, resolve_state_store
from rvai_sdk.pipeline.graph import Pipeline
from rvai_sdk.resources import CellResources
from rvai_sdk.runtime._devices import resolve_devices

__all__ = ["Inference", "build_executor", "exit_process"]


def _frozen_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


@attrs.frozen
class Inference:
    """Everything a runtime needs to start an inference process for one pipeline.

    Constructing it validates the refs and parameter values (no side effects).

    Attributes:
        pipeline: the built pipeline.
        parameters: cell ref to its Parameters (an instance or a mapping of field to value).
        models: cell ref to a model path handed to that cell's ``load_model``.
        resources: cell ref to its :class:`~rvai_sdk.resources.CellResources`.
        batching: cell ref to a :class:`BatchingPolicy` overriding a batched cell's limits.
        state_ttl: seconds an idle sid's state is kept (``None``: until dropped).
        max_states: most sids whose state is kept at once. With ``max_sid_length`` this
            bounds the memory of kept state: at most ``max_states`` keys of at most
            ``max_sid_length`` characters, each holding one State instance per stateful
            cell (whose size the cell's State class decides). A kept idle state costs
            about 0.7 KB besides its State (docs/concepts/execution.md): the default
            100,000 is about 70 MB of bookkeeping; lower it when States are large.
        request_timeout: the deadline in seconds of every request that does not give its
            own ``predict(..., timeout=)``; past it the request fails with
            :class:`~rvai_sdk.exc.DeadlineExceededError`. ``None`` (default): no deadline.
        stuck_after: seconds after which a call still running counts as stuck: the process
            reports itself not ready (``is_ready()`` false, HTTP ``/ready`` 503) and
            ``stats()["stuck"]`` names the cell, sid and seconds. ``None``: never.
        max_sid_length: most characters in a sid, checked on every path (``predict``,
            drivers, sources); a longer one is an :class:`~rvai_sdk.exc.InputValidationError`.
        supervise: on the local and ray runtimes, restart the inference process by itself
            when a call has been stuck for ``stuck_after`` seconds or the process died
            (requests in flight fail; kept state is lost, as with ``restart()``, unless a
            ``state_store`` keeps it). Off by
            default: the process reports, you decide.
        state_store: where per-sid state is checkpointed so that it survives ``restart()``,
            a crash and the supervisor's restart: ``None`` (default, memory only), a
            :class:`~rvai_sdk.execution.state_store.SqliteStateStore` (or a plain file path),
            a :class:`~rvai_sdk.execution.state_store.RedisStateStore` (or a ``redis://`` URL).
            ``state_ttl`` and ``drop_state`` apply to the store too. See
            docs/guides/durability.md for what survives what.

    Raises:
        ParameterError: an unknown ref or a rejected parameter value.

    Example:
        >>> from rvai_sdk.runtime import Inference
        >>> Inference(pipeline=object())
        Traceback (most recent call last):
        ...
        rvai_sdk.exc.ParameterError: Inference(pipeline=...) needs a Pipeline from PipelineFactory.build(), got object
    """

    pipeline: Pipeline
    parameters: dict[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    models: dict[str, str | Path] = attrs.field(factory=dict, converter=_frozen_mapping)
    resources: dict[str, CellResources] = attrs.field(factory=dict, converter=_frozen_mapping)
    batching: dict[str, BatchingPolicy] = attrs.field(factory=dict, converter=_frozen_mapping)
    state_ttl: float | None = 3600.0
    max_states: int = 100_000
    request_timeout: float | None = None
    stuck_after: float | None = 60.0
    max_sid_length: int = 256
    supervise: bool = False
    state_store: DurableStateStore | None = attrs.field(default=None, converter=resolve_state_store)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.pipeline, Pipeline):
            raise ParameterError(
                f"Inference(pipeline=...) needs a Pipeline from PipelineFactory.build(), got {type(self.pipeline).__name__}"
            )
        cells = self.pipeline.cells
        for what, mapping in (("models", self.models), ("resources", self.resources), ("batching", self.batching)):
            for ref in mapping:
                if ref not in cells:
                    raise ParameterError(
                        f"Inference({what}=...) names unknown cell ref {ref!r}; the pipeline's cells are: "
                        f"{', '.join(self.pipeline.order)}",
                        ref=str(ref),
                    )
        for ref, res in self.resources.items():
            if not isinstance(res, CellResources):
                raise ParameterError(f"Inference(resources=...)[{ref!r}] must be a CellResources, got {type(res).__name__}", ref=ref)
        for ref, policy in self.batching.items():
            if not isinstance(policy, BatchingPolicy):
                raise ParameterError(f"Inference(batching=...)[{ref!r}] must be a BatchingPolicy, got {type(policy).__name__}", ref=ref)
            if not self.pipeline.spec(ref).has_call_batch:
                raise ParameterError(
                    f"Inference(batching=...) names cell {ref!r}, which has no call_batch(); only batched cells take a policy",
                    ref=ref,
                )
        if self.state_ttl is not None and self.state_ttl <= 0:
            raise ParameterError(f"Inference(state_ttl=...) must be > 0 seconds or None, got {self.state_ttl!r}")
        if not isinstance(self.max_states, int) or self.max_states < 1:
            raise ParameterError(f"Inference(max_states=...) must be an int >= 1, got {self.max_states!r}")
        for name in ("request_timeout", "stuck_after"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf):
                raise ParameterError(f"Inference({name}=...) must be > 0 seconds or None (none), got {value!r}", field=name)
        if isinstance(self.max_sid_length, bool) or not isinstance(self.max_sid_length, int) or self.max_sid_length < 1:
            raise ParameterError(
                f"Inference(max_sid_length=...) must be an int >= 1, got {self.max_sid_length!r}", field="max_sid_length"
            )
        if self.supervise and self.stuck_after is None:
            raise ParameterError(
                "Inference(supervise=True) restarts a process whose call is stuck for stuck_after seconds; "
                "give stuck_after a number of seconds",
                field="supervise",
            )
        resolve_parameters(self.pipeline, self.parameters)


def build_executor(
    inference: Inference,
    *,
    parameters: Mapping[str, Any] | None = None,
    models: Mapping[str, str] | None = None,
    on_broken: Callable[[str], None] | None = None,
) -> Executor:
    """The executor for ``inference``, not started: the one place every runtime builds it.

    Args:
        inference: what to run.
        parameters: the parameters in force (they may have changed since ``inference`` was
            made); ``None`` takes ``inference.parameters``.
        models: the model paths in force (``InferenceProcess.set_models`` may have changed
            them); ``None`` takes ``inference.models``.
        on_broken: called with the reason when the executor cannot serve any more (a
            worker thread died); :func:`exit_process` in a child process.

    Raises:
        ProcessError: a cell asks for a GPU that is not there (and may not fall back to the CPU).
    """
    return Executor(
        inference.pipeline,
        parameters=inference.parameters if parameters is None else parameters,
        models={ref: str(path) for ref, path in inference.models.items()} if models is None else dict(models),
        devices=resolve_devices(inference.pipeline.order, inference.resources),
        batching=inference.batching,
        state_ttl=inference.state_ttl,
        max_states=inference.max_states,
        stuck_after=inference.stuck_after,
        on_broken=on_broken,
        state_store=inference.state_store,
    )


def exit_process(reason: str) -> None:
    """``on_broken`` of an executor in a child process: end it, so its watcher reports it dead and requests fail."""
    print(f"rvai: the inference process exits: {reason}", file=sys.stderr, flush=True)
    os._exit(75)
