"""Bounded numbers: IntegerRange and FloatRange; bounds belong to the field declaration."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import hybridmethod, rng_or_default
from rvai_sdk.types.scalars import Float, Integer

__all__ = ["IntegerRange", "FloatRange"]


class _Bounded:
    """What the two range types share; ``_number`` is their unbounded base type (Integer or Float)."""

    _number: typing.ClassVar[Any]
    min: Any
    max: Any

    @classmethod
    def _make(cls, value: Any, low: Any, high: Any) -> Any:
        number = cls._number.coerce(value)
        if (low is not None and number < low) or (high is not None and number > high):
            shown = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise InputValidationError(
                f"{number} is out of range {shown} for {cls.__name__}", expected=f"{cls.__name__} in {shown}"
            )
        plain: Any = cls._number.__mro__[1]  # int or float
        self: Any = plain.__new__(cls, number)
        self.min = None if low is None else plain(low)
        self.max = None if high is None else plain(high)
        return self

    def __repr__(self) -> str:
        plain = type(self)._number.__mro__[1]
        return f"{type(self).__name__}({plain(self)!r}, min={self.min}, max={self.max})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (type(self)._number.__mro__[1](self), self.min, self.max))

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Any:
        if like is None:
            if type(value) is cls:
                return value
            return cls._make(value, getattr(value, "min", None), getattr(value, "max", None))
        return cls._make(value, like.min, like.max)

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Any:
        return cls.coerce(cls._number.from_json(obj), like)

    @hybridmethod
    def json_schema(self_or_cls: Any) -> dict[str, Any]:
        schema: dict[str, Any] = dict(self_or_cls._number.json_schema())
        if not isinstance(self_or_cls, type):
            if self_or_cls.min is not None:
                schema["minimum"] = self_or_cls.min
            if self_or_cls.max is not None:
                schema["maximum"] = self_or_cls.max
        return schema

    @hybridmethod
    def fake(self_or_cls: Any, rng: np.random.Generator | None = None) -> Any:
        rng = rng_or_default(rng)
        cls: Any = self_or_cls if isinstance(self_or_cls, type) else type(self_or_cls)
        low = getattr(self_or_cls, "min", None)
        high = getattr(self_or_cls, "max", None)
        if isinstance(self_or_cls, type):
            low = high = None
        lo = -1000 if low is None else low
        hi = lo + 2000 if high is None else high
        if issubclass(cls, int):
            drawn: Any = int(rng.integers(lo, hi + 1))
        else:
            drawn = float(rng.uniform(lo, hi))
        return cls._make(drawn, low, high)


class IntegerRange(_Bounded, Integer):
    """An integer with optional bounds ``min <= value <= max``.

    The JSON form is the bare number; bounds come from the field's default (``like``)
    and show in its schema as ``minimum``/``maximum``.

    Example:
        >>> r = IntegerRange(5, min=0, max=10)
        >>> r + 1, r.max
        (6, 10)
    """

    _number = Integer
    min: int | None
    max: int | None

    def __new__(cls, value: Any, min: int | None = None, max: int | None = None) -> IntegerRange:  # noqa: A002
        return typing.cast(IntegerRange, cls._make(value, min, max))


class FloatRange(_Bounded, Float):
    """A float with optional bounds ``min <= value <= max``.

    The JSON form is the bare number; bounds come from the field's default (``like``)
    and show in its schema as ``minimum``/``maximum``.

    Example:
        >>> FloatRange(0.5, min=0.0, max=1.0).json_schema()
        {'type': 'number', 'minimum': 0.0, 'maximum': 1.0}
        >>> FloatRange.coerce(0.7, like=FloatRange(0.5, min=0.0, max=1.0)).max
        1.0
    """

    _number = Float
    min: float | None
    max: float | None

    def __new__(cls, value: Any, min: float | None = None, max: float | None = None) -> FloatRange:  # noqa: A002
        return typing.cast(FloatRange, cls._make(value, min, max))
