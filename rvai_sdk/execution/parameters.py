"""Cell parameters for the executor: resolving and validating them, and which fields ``load_model`` reads."""

from __future__ import annotations

import copy
import os
import typing
from collections.abc import Mapping
from typing import Any

from rvai_sdk.data import Parameters
from rvai_sdk.exc import ParameterError
from rvai_sdk.pipeline.graph import Pipeline

__all__ = ["check_model_paths", "coerce_parameters", "differs", "recording", "resolve_parameters"]


def resolve_parameters(pipeline: Pipeline, given: Mapping[str, Any] | None) -> dict[str, Parameters]:
    """Every cell's Parameters: the given ones validated, defaults for the rest.

    Args:
        pipeline: the pipeline.
        given: cell ref to a Parameters instance or a mapping of field to value.

    Returns:
        Cell ref to a validated Parameters instance, for every cell.

    Raises:
        ParameterError: an unknown ref, a value of the wrong class, a rejected field,
            or a cell whose Parameters have required fields and none were given.
    """
    given = dict(given or {})
    unknown = [ref for ref in given if ref not in pipeline.cells]
    if unknown:
        raise ParameterError(
            f"parameters given for unknown cell ref {unknown[0]!r}; the pipeline's cells are: {', '.join(pipeline.order)}",
            ref=str(unknown[0]),
        )
    resolved: dict[str, Parameters] = {}
    for ref in pipeline.order:
        cls = pipeline.spec(ref).parameters
        value = given.get(ref)
        resolved[ref] = coerce_parameters(ref, cls, value, None)
    return resolved


def check_model_paths(pipeline: Pipeline, models: Mapping[str, Any], *, where: str) -> dict[str, str | None]:
    """Cell ref to model path as ``str``, checked: every ref a cell of ``pipeline``, every path a ``str`` or path.

    Args:
        pipeline: the pipeline the refs must name cells of.
        models: cell ref to a model path (``str`` or ``os.PathLike``), or ``None`` for no path
            (what ``load_model`` gets for a cell that ``Inference(models=...)`` does not name).
        where: how the caller names the argument in messages (``"set_models(...)"``).

    Raises:
        ParameterError: an unknown ref or a path of another type (names both).
    """
    if not isinstance(models, Mapping):
        raise ParameterError(f"{where} takes a mapping of cell ref to model path, got {type(models).__name__}")
    checked: dict[str, str | None] = {}
    for ref, path in models.items():
        if ref not in pipeline.cells:
            raise ParameterError(
                f"{where} names unknown cell ref {ref!r}; the pipeline's cells are: {', '.join(pipeline.order)}",
                ref=str(ref),
            )
        if path is None:
            checked[ref] = None
            continue
        if not isinstance(path, (str, os.PathLike)):
            raise ParameterError(
                f"{where}[{ref!r}] must be a model path (str or pathlib.Path), got {type(path).__name__}", ref=str(ref)
            )
        checked[ref] = str(os.fspath(path))
    return checked


def coerce_parameters(ref: str, cls: type[Parameters], value: Any, current: Parameters | None) -> Parameters:
    """Cell ``ref``'s Parameters from ``value`` (an instance, a mapping of changed fields, or ``None``) over ``current``.

    Raises:
        ParameterError: a rejected value, or no value for a class with required fields.
    """
    if value is None and current is None:
        try:
            return cls()
        except TypeError as exc:
            raise ParameterError(
                f"cell {ref!r} needs parameters: {cls.__name__} has required fields; pass "
                f"Inference(parameters={{{ref!r}: {cls.__name__}(...)}})",
                ref=ref,
            ) from exc
    return cls.coerce(value, current, owner=f"cell {ref!r}", ref=ref)


def differs(a: Any, b: Any) -> bool:
    """Whether two parameter values differ (values without a truth value, such as arrays, count as changed)."""
    if a is b:
        return False
    try:
        return bool(a != b)
    except Exception:  # arrays and other values without a truth value
        return True


def recording(params: Parameters) -> tuple[Parameters, set[str]]:
    """A copy of ``params`` that records which fields are read, and the set it records into."""
    cls = type(params)
    names = {f.name for f in cls.fields_info()}
    read: set[str] = set()

    def __getattribute__(self: Any, name: str) -> Any:
        if name in names:
            read.add(name)
        return object.__getattribute__(self, name)

    recorder = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__, "__module__": cls.__module__})
    recorder.__qualname__ = cls.__qualname__
    typing.cast(Any, recorder)._rvai_fields_cache = cls.fields_info()
    typing.cast(Any, recorder)._rvai_coercers_cache = cls._coercers()
    clone = copy.copy(params)
    try:
        object.__setattr__(clone, "__class__", recorder)
    except TypeError:  # e.g. slotted dataclasses: treat every field as read
        read.update(names)
        return params, read
    return clone, read
