"""Bounded numbers: IntegerRange and FloatRange; bounds belong to the field declaration."""

from __future__ import annotations

import typing
from typing import Any, TypeVar

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import hybridmethod, rng_or_default
from rvai_sdk.types.scalars import Float, Integer

__all__ = ["IntegerRange", "FloatRange"]

_R = TypeVar("_R")


def _check(cls: type, value: float, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise InputValidationError(
            f"{value} is out of range {shown} for {cls.__name__}", expected=f"{cls.__name__} in {shown}"
        )


class IntegerRange(Integer):
    """An integer with optional bounds ``min <= value <= max``.

    The JSON form is the bare number; bounds come from the field's default (``like``)
    and show in its schema as ``minimum``/``maximum``.

    Example:
        >>> r = IntegerRange(5, min=0, max=10)
        >>> r + 1, r.max
        (6, 10)
    """

    min: int | None
    max: int | None

    def __new__(cls, value: Any, min: int | None = None, max: int | None = None) -> IntegerRange:  # noqa: A002
        number = Integer.coerce(value)
        _check(cls, number, min, max)
        self = int.__new__(cls, number)
        self.min = None if min is None else int(min)
        self.max = None if max is None else int(max)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)}, min={self.min}, max={self.max})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (int(self), self.min, self.max))

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> IntegerRange:
        if like is None:
            if type(value) is cls:
                return value
            return cls(value, getattr(value, "min", None), getattr(value, "max", None))
        return cls(value, like.min, like.max)

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> IntegerRange:
        return cls.coerce(Integer.from_json(obj), like)

    @hybridmethod
    def json_schema(self_or_cls: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if not isinstance(self_or_cls, type):
            if self_or_cls.min is not None:
                schema["minimum"] = self_or_cls.min
            if self_or_cls.max is not None:
                schema["maximum"] = self_or_cls.max
        return schema

    @hybridmethod
    def fake(self_or_cls: Any, rng: np.random.Generator | None = None) -> IntegerRange:
        rng = rng_or_default(rng)
        if isinstance(self_or_cls, type):
            return typing.cast(IntegerRange, self_or_cls(int(rng.integers(-1000, 1001))))
        low = -1000 if self_or_cls.min is None else self_or_cls.min
        high = low + 2000 if self_or_cls.max is None else self_or_cls.max
        return typing.cast(IntegerRange, type(self_or_cls)(int(rng.integers(low, high + 1)), self_or_cls.min, self_or_cls.max))


class FloatRange(Float):
    """A float with optional bounds ``min <= value <= max``.

    The JSON form is the bare number; bounds come from the field's default (``like``)
    and show in its schema as ``minimum``/``maximum``.

    Example:
        >>> FloatRange(0.5, min=0.0, max=1.0).json_schema()
        {'type': 'number', 'minimum': 0.0, 'maximum': 1.0}
        >>> FloatRange.coerce(0.7, like=FloatRange(0.5, min=0.0, max=1.0)).max
        1.0
    """

    min: float | None
    max: float | None

    def __new__(cls, value: Any, min: float | None = None, max: float | None = None) -> FloatRange:  # noqa: A002
        number = Float.coerce(value)
        _check(cls, number, min, max)
        self = float.__new__(cls, number)
        self.min = None if min is None else float(min)
        self.max = None if max is None else float(max)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({float(self)!r}, min={self.min}, max={self.max})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (float(self), self.min, self.max))

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> FloatRange:
        if like is None:
            if type(value) is cls:
                return value
            return cls(value, getattr(value, "min", None), getattr(value, "max", None))
        return cls(value, like.min, like.max)

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> FloatRange:
        return cls.coerce(Float.from_json(obj), like)

    @hybridmethod
    def json_schema(self_or_cls: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if not isinstance(self_or_cls, type):
            if self_or_cls.min is not None:
                schema["minimum"] = self_or_cls.min
            if self_or_cls.max is not None:
                schema["maximum"] = self_or_cls.max
        return schema

    @hybridmethod
    def fake(self_or_cls: Any, rng: np.random.Generator | None = None) -> FloatRange:
        rng = rng_or_default(rng)
        if isinstance(self_or_cls, type):
            return typing.cast(FloatRange, self_or_cls(float(rng.uniform(-1000.0, 1000.0))))
        low = -1000.0 if self_or_cls.min is None else self_or_cls.min
        high = low + 2000.0 if self_or_cls.max is None else self_or_cls.max
        return typing.cast(FloatRange, type(self_or_cls)(float(rng.uniform(low, high)), self_or_cls.min, self_or_cls.max))
