"""The protocol every value type implements, and small shared helpers."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from rvai_sdk.exc import InputValidationError

__all__ = ["Value", "hybridmethod", "mismatch", "nested", "rng_or_default"]

_F = TypeVar("_F", bound=Callable[..., Any])


class hybridmethod(Generic[_F]):
    """A method bound to the class when looked up on the class and to the instance on an instance.

    ``FloatRange.json_schema()`` describes any float range; ``FloatRange(0.5, min=0, max=1).json_schema()``
    adds that value's bounds.
    """

    def __init__(self, func: _F) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return types.MethodType(self.func, owner if obj is None else obj)


class Value:
    """Base of every rvai_sdk value type.

    A value type wraps a Python or numpy value and behaves like it (``Integer(2) + 1 == 3``),
    and adds: ``coerce`` (lossless conversion of plain values, else
    :class:`~rvai_sdk.exc.InputValidationError`), ``to_json``/``from_json`` (exact round
    trip through JSON), ``json_schema`` and ``fake`` (a random valid value).
    """

    __slots__ = ()

    @classmethod
    def type_name(cls) -> str:
        """The name shown in errors and schemas, e.g. ``"Integer"`` or ``"List[Integer]"``."""
        return cls.__name__

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Any:
        """Return ``value`` as this type if that loses nothing, else raise ``InputValidationError``."""
        raise NotImplementedError

    def to_json(self) -> Any:
        """The JSON form: plain dicts, lists, strings, numbers, booleans and None."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Any:
        """Decode the JSON form; ``like`` supplies bounds or options for ranges and enums."""
        raise NotImplementedError

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """A JSON schema of the JSON form."""
        raise NotImplementedError

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Any:
        """A random valid value."""
        raise NotImplementedError


def rng_or_default(rng: np.random.Generator | None) -> np.random.Generator:
    """``rng``, or a fresh default generator."""
    return rng if rng is not None else np.random.default_rng()


def mismatch(expected: str, value: Any) -> InputValidationError:
    """The error for a value that does not fit ``expected``."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return InputValidationError(f"expected {expected}, got {type(value).__name__} {text}", expected=expected)


def nested(prefix: str, exc: InputValidationError) -> InputValidationError:
    """Re-raise an error from inside a container with ``prefix`` (``[2]``, ``.xmin``) added to its path."""
    inner = exc.field or ""
    text = str(exc)
    if inner and text.startswith(inner + ": "):
        text = text[len(inner) + 2 :]
    path = prefix + inner
    return InputValidationError(f"{path}: {text}", field=path, expected=exc.expected)
