"""Calling a cell: building its inputs and context, checking its outputs, and the error a failure becomes.

:func:`call_one` and :func:`call_batch` never raise: each returns, per request,
the cell's outputs or the exception that took their place (``KeyboardInterrupt``
too, so that the scheduler's bookkeeping always happens). Both build contexts with
:func:`context`; outputs are checked at the cell boundary (a field never set, or
re-assigned to a value of the wrong type). A cell method defined with ``async def``
returns a coroutine, which :func:`~rvai_sdk.execution.async_calls.run` runs on the
process's event loop (the only place this module knows about async cells).
"""

from __future__ import annotations

import inspect
import traceback
from typing import Any

from rvai_sdk.context import InferenceContext
from rvai_sdk.exc import CellError, InputValidationError
from rvai_sdk.execution import async_calls
from rvai_sdk.execution.plan import CellPlan
from rvai_sdk.execution.requests import Request

__all__ = ["OutputCheckError", "call_batch", "call_one", "cell_error", "cell_errors", "context", "inputs_for"]

_ABSENT: Any = object()


class OutputCheckError(TypeError):
    """A cell returned Outputs with a field that is not set, or not of its declared type.

    Attributes:
        field: the name of the offending output field.
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def inputs_for(cell: CellPlan, req: Request) -> Any:
    """Cell ``cell``'s Inputs for ``req``, from the pipeline inputs and its predecessors' outputs."""
    results = req.results
    inputs = req.inputs
    values = {port: inputs[src_port] if src < 0 else getattr(results[src], src_port) for port, src, src_port in cell.bindings}
    return cell.inputs_cls(**values)


def context(cell: CellPlan, req: Request, model: Any) -> InferenceContext:
    """The context of ``req``'s call of ``cell``, with ``model`` (the model of the configuration the call uses)."""
    state = req.entry.state_for(cell.ref, cell.state_cls) if cell.state_cls is not None else None
    return InferenceContext(cell.ref, req.sid, state, model, cell.device, req.rid)


def call_one(cell: CellPlan, req: Request) -> Any:
    """Run an unbatched call of ``cell`` for ``req``: its checked outputs, or the exception raised."""
    try:
        index = cell.index
        config = req.config
        inputs = inputs_for(cell, req)
        if cell.has_call:
            out = cell.call(context(cell, req, config.models[index]), config.params[index], inputs)
        else:
            batch = cell.call_batch([context(cell, req, config.models[index])], config.params[index], [inputs])
            if inspect.iscoroutine(batch):
                batch = async_calls.run(batch, f"cell {cell.ref!r} call_batch()")
            out = _unwrap_single(batch)
        outputs_cls = cell.outputs_cls
        if type(out) is not outputs_cls and inspect.iscoroutine(out):  # an async def call(): run on the event loop
            out = async_calls.run(out, f"cell {cell.ref!r} call()")
        if type(out) is not outputs_cls and not isinstance(out, outputs_cls):
            raise TypeError(f"call() returned {type(out).__name__}; it must return {outputs_cls.__name__}")
        for name, tp, like, coerce in cell.out_checks:
            if type(getattr(out, name, _ABSENT)) is not tp:
                _check_output(cell, out, "call()", name, tp, like, coerce)
        return out
    except BaseException as exc:  # KeyboardInterrupt too: the bookkeeping must still happen
        return exc


def _unwrap_single(result: Any) -> Any:
    if not isinstance(result, (list, tuple)) or len(result) != 1:
        raise TypeError(f"call_batch() must return a list with one item per input, got {type(result).__name__}")
    item = result[0]
    if isinstance(item, BaseException):
        raise item
    return item


def call_batch(cell: CellPlan, reqs: list[Request]) -> list[Any]:
    """Run one ``call_batch`` of ``cell`` for ``reqs``: per request, its checked outputs or an exception.

    Each item runs with the parameters and model of its own request's configuration snapshot:
    around a parameter or model change (``Executor.set_parameters`` / ``set_models``) a
    batch whose requests straddle the change is split into one call per configuration, so a
    request submitted after the change never runs with the old model.
    """
    index = cell.index
    config = reqs[0].config
    for req in reqs:
        other = req.config
        if other is not config and (other.models[index] is not config.models[index] or other.params[index] is not config.params[index]):
            return _call_split(cell, reqs)
    model = config.models[index]
    try:
        inputs_list = [inputs_for(cell, req) for req in reqs]
        contexts = [context(cell, req, model) for req in reqs]
        outs = cell.call_batch(contexts, config.params[index], inputs_list)
        if inspect.iscoroutine(outs):  # an async def call_batch(): run on the event loop
            outs = async_calls.run(outs, f"cell {cell.ref!r} call_batch()")
        if not isinstance(outs, (list, tuple)) or len(outs) != len(reqs):
            got = f"{len(outs)} items" if isinstance(outs, (list, tuple)) else type(outs).__name__
            raise TypeError(f"call_batch() got {len(reqs)} inputs and returned {got}; return one output per input")
    except BaseException as exc:
        return [exc] * len(reqs)
    results: list[Any] = []
    checks = cell.out_checks
    outputs_cls = cell.outputs_cls
    for n, out in enumerate(outs):
        if isinstance(out, BaseException):
            results.append(out)
        elif isinstance(out, outputs_cls):
            try:
                for name, tp, like, coerce in checks:
                    if type(getattr(out, name, _ABSENT)) is not tp:
                        _check_output(cell, out, f"call_batch() item {n}", name, tp, like, coerce)
            except Exception as exc:
                results.append(exc)
            else:
                results.append(out)
        else:
            results.append(
                TypeError(f"call_batch() returned a {type(out).__name__} item; items must be {outputs_cls.__name__} or an exception")
            )
    return results


def _call_split(cell: CellPlan, reqs: list[Request]) -> list[Any]:
    """:func:`call_batch` for a batch whose requests carry different parameters or models for ``cell``:
    one call per (parameters, model) pair, results back in the batch's order."""
    index = cell.index
    groups: dict[tuple[int, int], list[int]] = {}
    for n, req in enumerate(reqs):
        key = (id(req.config.params[index]), id(req.config.models[index]))
        groups.setdefault(key, []).append(n)
    results: list[Any] = [None] * len(reqs)
    for positions in groups.values():
        for n, out in zip(positions, call_batch(cell, [reqs[n] for n in positions])):
            results[n] = out
    return results


def _check_output(cell: CellPlan, out: Any, where: str, name: str, tp: Any, like: Any, coerce: Any) -> None:
    """Check (and losslessly coerce) one output field whose value is not exactly of its declared type.

    Raises:
        OutputCheckError: the field is not set, or its value does not fit the declared type.
    """
    cls = cell.outputs_cls.__name__
    value = getattr(out, name, _ABSENT)
    if value is _ABSENT:
        raise OutputCheckError(
            f"{where} returned {cls} with output field {name!r} not set; construct it as {cls}({name}=...) "
            "and do not delete fields",
            name,
        )
    try:
        coerced = coerce(value, like=like)
    except (InputValidationError, TypeError, ValueError) as exc:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise OutputCheckError(
            f"{where} returned {cls} whose output field {name!r} holds {type(value).__name__} {shown}, "
            f"which does not fit its declared type {getattr(tp, '__name__', str(tp))} ({exc}); assign a value of that type",
            name,
        ) from None
    if coerced is not value:
        object.__setattr__(out, name, coerced)


def cell_error(cell: CellPlan, req: Request, exc: BaseException, formatted: str | None = None) -> CellError:
    """The :class:`~rvai_sdk.exc.CellError` that ``req``'s future fails with when ``cell`` raised ``exc`` for it.

    ``formatted``: ``exc``'s traceback formatted already (one exception failing a whole batch is formatted once).
    """
    sid = "a one-off request" if req.sid is None else f"sid {req.sid!r}"
    if isinstance(exc, OutputCheckError):
        return CellError(
            f"cell {cell.ref!r} ({cell.spec.name}) failed for {sid}: {exc}",
            ref=cell.ref,
            sid=req.sid,
            cause_type=type(exc).__name__,
            field=exc.field,
        )
    return CellError(
        f"cell {cell.ref!r} ({cell.spec.name}) failed for {sid}: {type(exc).__name__}: {exc}",
        ref=cell.ref,
        sid=req.sid,
        cause_type=type(exc).__name__,
        remote_traceback="".join(traceback.format_exception(exc)) if formatted is None else formatted,
    )


def cell_errors(cell: CellPlan, reqs: list[Request], results: list[Any]) -> dict[int, CellError]:
    """Request id to the :class:`~rvai_sdk.exc.CellError` of each request of a call whose result is an ``Exception``.

    Built before the scheduler takes its lock (formatting a traceback reads source files); an
    exception shared by a whole batch is formatted once.
    """
    formatted: dict[int, str] = {}
    out: dict[int, CellError] = {}
    for req, result in zip(reqs, results):
        if not isinstance(result, Exception):
            continue
        text = formatted.get(id(result))
        if text is None and not isinstance(result, OutputCheckError):
            text = formatted[id(result)] = "".join(traceback.format_exception(result))
        out[req.rid] = cell_error(cell, req, result, text)
    return out
