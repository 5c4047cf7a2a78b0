"""Scalar value types: Integer, Float, String, Boolean."""

from __future__ import annotations

import math
import string as _string
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from rvai_sdk.types._base import Value, mismatch, rng_or_default

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Integer", "Float", "String", "Boolean"]

_I = TypeVar("_I", bound="Integer")
_F = TypeVar("_F", bound="Float")
_S = TypeVar("_S", bound="String")
_B = TypeVar("_B", bound="Boolean")


def _is_int(value: Any) -> bool:
    """An int or numpy integer, but not a boolean (``bool``, ``numpy.bool_`` or :class:`Boolean`)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_, Boolean))


class Integer(int, Value):
    """An integer. Behaves like ``int``; JSON form: a number.

    Coerces ints, numpy integers and integral finite floats (``1.0``); rejects booleans.

    Examples:
        >>> Integer(2) + 1
        3
        >>> Integer.coerce(4.0)
        Integer(4)
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts int under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: int, /) -> None: ...


    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"

    __str__ = int.__repr__

    @classmethod
    def coerce(cls: type[_I], value: Any, like: Any = None) -> _I:
        """Convert ints, numpy integers and integral finite floats; reject booleans, strings and ``1.5``.

        Raises:
            InputValidationError: the value is not a lossless integer.
        """
        if type(value) is cls:
            return value
        if _is_int(value):
            return cls(int(value))
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            return cls(int(value))
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> int:
        return int(self)

    @classmethod
    def from_json(cls: type[_I], obj: Any, like: Any = None) -> _I:
        return cls.coerce(obj)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {"type": "integer"}

    @classmethod
    def fake(cls: type[_I], rng: np.random.Generator | None = None) -> _I:
        return cls(int(rng_or_default(rng).integers(-1000, 1001)))


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def float_schema(*, allowed: tuple[str, ...], bounds: dict[str, float] | None = None) -> dict[str, Any]:
    """The JSON schema of a float: a number (within ``bounds``), or one of the ``allowed`` non-finite strings.

    Args:
        allowed: which of ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` may appear.
        bounds: ``minimum``/``maximum`` keywords for the number.
    """
    number: dict[str, Any] = {"type": "number", **(bounds or {})}
    if not allowed:
        return number
    return {"anyOf": [number, {"type": "string", "enum": list(allowed)}]}


class Float(float, Value):
    """A floating-point number. Behaves like ``float``; JSON form: a number, or ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"`` for the non-finite values.

    Coerces ints, floats and numpy numbers; rejects booleans.

    Examples:
        >>> Float(0.5) * 2
        1.0
        >>> Float("nan").to_json()
        'NaN'
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts float under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: float, /) -> None: ...


    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({float.__repr__(self)})"

    __str__ = float.__repr__

    @classmethod
    def coerce(cls: type[_F], value: Any, like: Any = None) -> _F:
        """Convert ints, floats and numpy numbers; reject booleans and strings.

        Raises:
            InputValidationError: the value is not a number, or an int too large for a float.
        """
        if type(value) is cls:
            return value
        if isinstance(value, (float, np.floating)) or _is_int(value):
            try:
                return cls(value)
            except OverflowError:
                raise mismatch(cls.type_name(), value, "too large for a 64-bit float") from None
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> float | str:
        """The number; ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` when not finite (JSON has no such numbers)."""
        value = float(self)
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")

    @classmethod
    def from_json(cls: type[_F], obj: Any, like: Any = None) -> _F:
        if isinstance(obj, str) and obj in _NON_FINITE:
            return cls(_NON_FINITE[obj])
        return cls.coerce(obj)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """A number, or one of the strings that stand for non-finite values."""
        return float_schema(allowed=tuple(_NON_FINITE))

    @classmethod
    def fake(cls: type[_F], rng: np.random.Generator | None = None) -> _F:
        return cls(float(rng_or_default(rng).uniform(-1000.0, 1000.0)))


class String(str, Value):
    """A text value. Behaves like ``str``; JSON form: a string.

    Examples:
        >>> String("cat").upper()
        'CAT'
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts str under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: str, /) -> None: ...


    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"

    __str__ = str.__str__

    @classmethod
    def coerce(cls: type[_S], value: Any, like: Any = None) -> _S:
        """Accept ``str`` (``numpy.str_`` included) only; numbers are not turned into text.

        Raises:
            InputValidationError: the value is not a string.
        """
        if type(value) is cls:
            return value
        if isinstance(value, str):
            return cls(value)
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> str:
        return str(self)

    @classmethod
    def from_json(cls: type[_S], obj: Any, like: Any = None) -> _S:
        return cls.coerce(obj)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {"type": "string"}

    @classmethod
    def fake(cls: type[_S], rng: np.random.Generator | None = None) -> _S:
        rng = rng_or_default(rng)
        letters = _string.ascii_letters + _string.digits
        return cls("".join(letters[i] for i in rng.integers(0, len(letters), int(rng.integers(1, 13)))))


class Boolean(int, Value):
    """A truth value (an ``int`` restricted to 0 and 1, since ``bool`` cannot be subclassed).

    ``Boolean(True) == True``; JSON form: ``true``/``false``. Coerces only booleans.

    Examples:
        >>> Boolean(True) == True, bool(Boolean(False))
        (True, False)
    """

    if TYPE_CHECKING:  # a dataclass field of this type accepts bool under mypy (fields are coerced)
        def __get__(self, obj: object, owner: Any, /) -> Self: ...
        def __set__(self, obj: object, value: bool, /) -> None: ...


    __slots__ = ()

    def __new__(cls: type[_B], value: Any = False) -> _B:
        return int.__new__(cls, bool(value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({bool(self)})"

    # Spelled out so type checkers accept ``Boolean(True) == True`` (int and bool look disjoint to them).
    def __eq__(self, other: object) -> bool:
        return int(self) == other

    def __ne__(self, other: object) -> bool:
        return int(self) != other

    __hash__ = int.__hash__

    def __str__(self) -> str:
        return str(bool(self))

    @classmethod
    def coerce(cls: type[_B], value: Any, like: Any = None) -> _B:
        """Accept ``bool`` and ``numpy.bool_`` only (``1`` and ``"true"`` are rejected).

        Raises:
            InputValidationError: the value is not a boolean.
        """
        if type(value) is cls:
            return value
        if isinstance(value, (bool, np.bool_)):
            return cls(bool(value))
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> bool:
        return bool(self)

    @classmethod
    def from_json(cls: type[_B], obj: Any, like: Any = None) -> _B:
        return cls.coerce(obj)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {"type": "boolean"}

    @classmethod
    def fake(cls: type[_B], rng: np.random.Generator | None = None) -> _B:
        return cls(bool(rng_or_default(rng).integers(0, 2)))
