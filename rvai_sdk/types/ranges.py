"""Bounded numbers: IntegerRange and FloatRange; bounds belong to the field declaration."""

from __future__ import annotations

import math
import typing
from typing import Any

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import hybridmethod, mismatch, rng_or_default
from rvai_sdk.types.scalars import Float, Integer, float_schema

__all__ = ["IntegerRange", "FloatRange"]

_SPAN = 2000  # width of the interval fake() draws from on an unbounded side


def _fake_interval(low: float | None, high: float | None) -> tuple[float, float]:
    """A finite interval inside the bounds to draw fake values from."""
    low = None if low is None or not math.isfinite(low) else low
    high = None if high is None or not math.isfinite(high) else high
    if low is None and high is None:
        return -_SPAN / 2, _SPAN / 2
    if low is None:
        assert high is not None
        return high - _SPAN, high
    if high is None:
        return low, low + _SPAN
    return low, high


class _Bounded:
    """What the two range types share; ``_number`` is their unbounded base type (Integer or Float)."""

    _number: typing.ClassVar[Any]
    _plain: typing.ClassVar[Any]  # int or float
    min: Any
    max: Any

    @classmethod
    def _make(cls, value: Any, low: Any, high: Any) -> Any:
        """Coerce ``value`` and the bounds, check ``low <= value <= high`` and build the instance."""
        name = typing.cast(Any, cls).type_name()
        try:
            number = cls._number.coerce(value)
        except InputValidationError:
            raise mismatch(name, value) from None
        low = None if low is None else cls._plain(cls._number.coerce(low))
        high = None if high is None else cls._plain(cls._number.coerce(high))
        if low is not None and high is not None and not low <= high:
            raise InputValidationError(f"{name} bounds are empty: min {low} > max {high}", expected=name)
        bounded = low is not None or high is not None
        if (
            (low is not None and number < low)
            or (high is not None and number > high)
            or (bounded and isinstance(number, float) and math.isnan(number))  # NaN is outside every bounded range
        ):
            shown = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            raise InputValidationError(f"{number} is out of range {shown} for {name}", expected=name)
        self: Any = cls._plain.__new__(cls, number)
        self.min = low
        self.max = high
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._plain(self)!r}, min={self.min}, max={self.max})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._plain(self), self.min, self.max))

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Any:
        """Convert like the unbounded type, keeping ``value``'s own bounds unless ``like`` gives them.

        Args:
            value: a range of this type (returned unchanged when ``like`` is ``None``) or a number.
            like: a range whose bounds apply (they win over ``value``'s).

        Raises:
            InputValidationError: not a number of the right kind, or out of range.
        """
        if type(value) is cls and like is None:
            return value
        if like is None:
            return cls._make(value, getattr(value, "min", None), getattr(value, "max", None))
        return cls._make(value, like.min, like.max)

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Any:
        """Decode the bare number, with ``like``'s bounds when given.

        Raises:
            InputValidationError: not a number of the right kind, or out of range.
        """
        try:
            number = cls._number.from_json(obj)
        except InputValidationError:
            raise mismatch(typing.cast(Any, cls).type_name(), obj) from None
        return cls.coerce(number, like)

    @hybridmethod
    def json_schema(self_or_cls: Any) -> dict[str, Any]:
        """The unbounded type's schema; on an instance, with its ``minimum``/``maximum``.

        For floats, the strings standing for non-finite values stay allowed where the
        bounds allow them (``"Infinity"`` without a ``max``, ``"NaN"`` only unbounded).
        """
        cls: Any = self_or_cls if isinstance(self_or_cls, type) else type(self_or_cls)
        if isinstance(self_or_cls, type):
            return dict(cls._number.json_schema())
        low, high = self_or_cls.min, self_or_cls.max
        bounds = {key: bound for key, bound in (("minimum", low), ("maximum", high)) if bound is not None}
        if cls._plain is int:
            return {"type": "integer", **bounds}
        allowed = tuple(
            name
            for name, ok in (("NaN", low is None and high is None), ("Infinity", high is None), ("-Infinity", low is None))
            if ok
        )
        return float_schema(allowed=allowed, bounds=bounds)

    @hybridmethod
    def fake(self_or_cls: Any, rng: np.random.Generator | None = None) -> Any:
        """A random finite value; on an instance, within its bounds (and carrying them)."""
        rng = rng_or_default(rng)
        cls: Any = self_or_cls if isinstance(self_or_cls, type) else type(self_or_cls)
        low = None if isinstance(self_or_cls, type) else self_or_cls.min
        high = None if isinstance(self_or_cls, type) else self_or_cls.max
        lo, hi = _fake_interval(low, high)
        if cls._plain is int:
            drawn: Any = int(rng.integers(math.ceil(lo), math.floor(hi) + 1))
        else:
            drawn = min(max(float(rng.uniform(lo, hi)), lo), hi)
        return cls._make(drawn, low, high)


class IntegerRange(_Bounded, Integer):
    """An integer with optional bounds ``min <= value <= max`` (``None``: unbounded).

    Construct with ``IntegerRange(value, min=None, max=None)``: ``value`` is coerced
    like :class:`Integer`; ``min``/``max`` are the inclusive bounds. A value that is
    not an integer or is out of range raises :class:`~rvai_sdk.exc.InputValidationError`.

    The JSON form is the bare number; the bounds belong to the field declaration
    (its default, passed as ``like``) and show in its instance schema as
    ``minimum``/``maximum``. With ``like``, ``coerce`` and ``from_json`` take
    ``like``'s bounds and check the value against them.

    Examples:
        >>> r = IntegerRange(5, min=0, max=10)
        >>> r + 1, r.max, r.json_schema()
        (6, 10, {'type': 'integer', 'minimum': 0, 'maximum': 10})
        >>> IntegerRange.coerce(12, like=r)
        Traceback (most recent call last):
        ...
        rvai_sdk.exc.InputValidationError: 12 is out of range [0, 10] for IntegerRange
    """

    _number = Integer
    _plain = int
    min: int | None
    max: int | None

    def __new__(cls, value: Any, min: int | None = None, max: int | None = None) -> IntegerRange:  # noqa: A002
        """Make a bounded integer.

        Args:
            value: the number (coerced like :class:`Integer`).
            min: the smallest allowed value, or ``None``.
            max: the largest allowed value, or ``None``.

        Raises:
            InputValidationError: the value is not an integer, or is out of range.
        """
        return typing.cast(IntegerRange, cls._make(value, min, max))


class FloatRange(_Bounded, Float):
    """A float with optional bounds ``min <= value <= max`` (``None``: unbounded).

    Construct with ``FloatRange(value, min=None, max=None)``: ``value`` is coerced
    like :class:`Float`; ``min``/``max`` are the inclusive bounds. A value that is
    not a number or is out of range raises :class:`~rvai_sdk.exc.InputValidationError`;
    NaN is outside every bounded range.

    The JSON form is the bare number; the bounds belong to the field declaration
    (its default, passed as ``like``) and show in its instance schema as
    ``minimum``/``maximum``.

    Examples:
        >>> FloatRange(0.5, min=0.0, max=1.0).json_schema()
        {'type': 'number', 'minimum': 0.0, 'maximum': 1.0}
        >>> FloatRange.coerce(0.7, like=FloatRange(0.5, min=0.0, max=1.0)).max
        1.0
    """

    _number = Float
    _plain = float
    min: float | None
    max: float | None

    def __new__(cls, value: Any, min: float | None = None, max: float | None = None) -> FloatRange:  # noqa: A002
        """Make a bounded float.

        Args:
            value: the number (coerced like :class:`Float`).
            min: the smallest allowed value, or ``None``.
            max: the largest allowed value, or ``None``.

        Raises:
            InputValidationError: the value is not a number, or is out of range.
        """
        return typing.cast(FloatRange, cls._make(value, min, max))
