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
    """Split an optional annotation into its type and whether it is optional.

    Args:
        tp: an annotation such as ``Integer``, ``Integer | None`` or ``Optional[Integer]``.

    Returns:
        ``(T, True)`` for ``T | None``, else ``(tp, False)``.

    Examples:
        >>> from rvai_sdk.types import Integer
        >>> unwrap_optional(Integer | None)
        (<class 'rvai_sdk.types.scalars.Integer'>, True)
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return tp, False


def is_value_type(tp: Any) -> bool:
    """Whether ``tp`` is a value type from :mod:`rvai_sdk.types`, optionally ``| None``.

    Args:
        tp: any annotation.

    Returns:
        True for a :class:`Value` subclass or its optional form.

    Examples:
        >>> from rvai_sdk.types import Integer
        >>> is_value_type(Integer), is_value_type(Integer | None), is_value_type(int)
        (True, True, False)
    """
    base, _ = unwrap_optional(tp)
    return isinstance(base, type) and issubclass(base, Value)


def _base(tp: Any) -> tuple[type[Value], bool]:
    base, optional = unwrap_optional(tp)
    if not (isinstance(base, type) and issubclass(base, Value)):
        raise TypeError(f"{tp!r} is not an rvai_sdk value type; use a type from rvai_sdk.types, optionally '| None'")
    return base, optional


def type_name(tp: Any) -> str:
    """The display name of a value type, as errors and schemas show it.

    Args:
        tp: a value type, optionally ``| None`` (other objects show their ``__name__``).

    Returns:
        e.g. ``"Integer"``, ``"List[Float] | None"``.

    Examples:
        >>> from rvai_sdk.types import Dict, Float, Integer, String
        >>> type_name(Integer | None), type_name(Dict[String, Float])
        ('Integer | None', 'Dict[String, Float]')
    """
    base, optional = unwrap_optional(tp)
    if isinstance(base, type) and issubclass(base, Value):
        name = base.type_name()
    else:
        name = getattr(base, "__name__", repr(base))
    return f"{name} | None" if optional else name


def coerce(tp: Any, value: Any, like: Any = None) -> Any:
    """Return ``value`` as type ``tp`` if that loses nothing; ``None`` only for an optional type.

    Args:
        tp: a value type, optionally ``| None``.
        value: a value of that type (returned unchanged) or a plain value to convert.
        like: for ranges and enums, the declaration whose bounds or options apply.

    Returns:
        The value as ``tp`` (or ``None``).

    Raises:
        InputValidationError: the value does not fit.
        TypeError: ``tp`` is not a value type.

    Examples:
        >>> from rvai_sdk.types import Integer
        >>> coerce(Integer | None, 3.0), coerce(Integer | None, None)
        (Integer(3), None)
    """
    if like is None and type(value) is tp and isinstance(value, Value):
        return value
    base, optional = _base(tp)
    if value is None:
        if optional:
            return None
        raise InputValidationError(f"expected {base.type_name()}, got None", expected=base.type_name())
    return base.coerce(value, like=like)


def to_json(value: Any) -> Any:
    """The JSON form of a value (``None`` stays ``None``).

    Args:
        value: a value-type instance or ``None``.

    Returns:
        Plain JSON-compatible objects (dicts, lists, strings, numbers, booleans, None).

    Examples:
        >>> from rvai_sdk.types import Float, List
        >>> to_json(List[Float]([1, float("inf")])), to_json(None)
        ([1.0, 'Infinity'], None)
    """
    if value is None:
        return None
    return value.to_json()


def from_json(tp: Any, obj: Any, like: Any = None) -> Any:
    """Decode the JSON form of a value of type ``tp``.

    Args:
        tp: a value type, optionally ``| None``.
        obj: the JSON form, as ``json.loads`` returns it.
        like: for ranges and enums, the declaration whose bounds or options apply.

    Returns:
        The decoded value (``None`` for JSON null, when optional).

    Raises:
        InputValidationError: ``obj`` is malformed, or null for a non-optional type.
        TypeError: ``tp`` is not a value type.

    Examples:
        >>> from rvai_sdk.types import Integer
        >>> from_json(Integer | None, 7), from_json(Integer | None, None)
        (Integer(7), None)
    """
    base, optional = _base(tp)
    if obj is None:
        if optional:
            return None
        raise InputValidationError(f"expected {base.type_name()}, got null", expected=base.type_name())
    return base.from_json(obj, like=like)


def json_schema(tp: Any, like: Any = None) -> dict[str, Any]:
    """The JSON schema of type ``tp``'s JSON form.

    Args:
        tp: a value type, optionally ``| None`` (then ``{"anyOf": [schema, {"type": "null"}]}``).
        like: a range or enum instance of ``tp`` whose bounds (``minimum``/``maximum``)
            or options (``enum``) the schema adds.

    Returns:
        A new schema dict.

    Raises:
        TypeError: ``tp`` is not a value type.

    Examples:
        >>> from rvai_sdk.types import FloatRange, Integer
        >>> json_schema(Integer | None)
        {'anyOf': [{'type': 'integer'}, {'type': 'null'}]}
        >>> json_schema(FloatRange, like=FloatRange(0.5, min=0.0, max=1.0))
        {'type': 'number', 'minimum': 0.0, 'maximum': 1.0}
    """
    base, optional = _base(tp)
    schema = like.json_schema() if like is not None and isinstance(like, base) else base.json_schema()
    if optional:
        return {"anyOf": [schema, {"type": "null"}]}
    return dict(schema)


def fake(tp: Any, rng: np.random.Generator | None = None, like: Any = None) -> Any:
    """A random valid value of type ``tp`` (never ``None``, even when optional).

    Args:
        tp: a value type, optionally ``| None``.
        rng: the random generator to draw from (a fresh one when ``None``).
        like: a range or enum instance of ``tp``: the value respects its bounds or options.

    Returns:
        A value of type ``tp``.

    Raises:
        TypeError: ``tp`` is not a value type, or a bare ``List``/``Dict``.

    Examples:
        >>> import numpy as np
        >>> from rvai_sdk.types import Enum, String
        >>> mode = Enum[String](options=["fast", "accurate"])
        >>> fake(Enum[String], np.random.default_rng(0), like=mode) in ("fast", "accurate")
        True
    """
    base, _ = _base(tp)
    if like is not None and isinstance(like, base):
        return like.fake(rng)
    return base.fake(rng)
