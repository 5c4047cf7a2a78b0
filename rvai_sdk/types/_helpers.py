"""Module-level helpers that accept any value-type annotation, including ``T | None``."""

from __future__ import annotations

import types
import typing
from typing import Any

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import Value

__all__ = ["unwrap_optional", "is_value_type", "type_name", "coerce", "to_json", "from_json", "json_schema", "fake"]


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None`` / ``Optional[T]``, else ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def is_value_type(tp: Any) -> bool:
    """Whether ``tp`` is a value type from :mod:`rvai_sdk.types`, optionally ``| None``.

    Example:
        >>> from rvai_sdk.types import Integer
        >>> is_value_type(Integer), is_value_type(Integer | None), is_value_type(int)
        (True, True, False)
    """
    base, _ = unwrap_optional(tp)
    return isinstance(base, type) and issubclass(base, Value)


def _base(tp: Any) -> tuple[type[Value], bool]:
    base, optional = unwrap_optional(tp)
    if not (isinstance(base, type) and issubclass(base, Value)):
        raise TypeError(f"{tp!r} is not an rvai_sdk value type")
    return base, optional


def type_name(tp: Any) -> str:
    """The display name of a value type: ``"Integer"``, ``"List[Float] | None"``."""
    base, optional = unwrap_optional(tp)
    if isinstance(base, type) and issubclass(base, Value):
        name = base.type_name()
    else:
        name = getattr(base, "__name__", repr(base))
    return f"{name} | None" if optional else name


def coerce(tp: Any, value: Any, like: Any = None) -> Any:
    """Return ``value`` as type ``tp`` if that loses nothing; ``None`` only for an optional type.

    Raises:
        InputValidationError: the value does not fit.
    """
    base, optional = _base(tp)
    if value is None:
        if optional:
            return None
        raise InputValidationError(f"expected {base.type_name()}, got None", expected=base.type_name())
    return base.coerce(value, like=like)


def to_json(value: Any) -> Any:
    """The JSON form of a value (``None`` stays ``None``)."""
    if value is None:
        return None
    return value.to_json()


def from_json(tp: Any, obj: Any, like: Any = None) -> Any:
    """Decode the JSON form of a value of type ``tp``."""
    base, optional = _base(tp)
    if obj is None:
        if optional:
            return None
        raise InputValidationError(f"expected {base.type_name()}, got null", expected=base.type_name())
    return base.from_json(obj, like=like)


def json_schema(tp: Any, like: Any = None) -> dict[str, Any]:
    """The JSON schema of type ``tp`` (with ``like``'s bounds or options for ranges and enums)."""
    base, optional = _base(tp)
    schema = like.json_schema() if like is not None and isinstance(like, base) else base.json_schema()
    if optional:
        return {"anyOf": [schema, {"type": "null"}]}
    return dict(schema)


def fake(tp: Any, rng: np.random.Generator | None = None, like: Any = None) -> Any:
    """A random valid value of type ``tp`` (within ``like``'s bounds or options when given)."""
    base, _ = _base(tp)
    if like is not None and isinstance(like, base):
        return like.fake(rng)
    return base.fake(rng)
