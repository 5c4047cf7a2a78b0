"""Geometric and label values: Point, BoundingBox, Class, Classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._base import Value, mismatch, nested, rng_or_default
from rvai_sdk.types.containers import List
from rvai_sdk.types.scalars import Float, Integer, String

__all__ = ["Point", "BoundingBox", "Class", "Classes"]

_T = TypeVar("_T", bound="_Record")


class _Record(tuple, Value):  # type: ignore[type-arg]
    """A fixed tuple of named, typed fields; JSON form: an object."""

    __slots__ = ()
    _fields: tuple[tuple[str, type[Value]], ...] = ()

    def __new__(cls: type[_T], *values: Any, **named: Any) -> _T:
        names = [n for n, _ in cls._fields]
        if named:
            if values:
                raise TypeError(f"{cls.__name__}() takes either positional or keyword fields")
            missing = [n for n in names if n not in named]
            unknown = [n for n in named if n not in names]
            if missing or unknown:
                raise InputValidationError(
                    f"{cls.__name__} needs the fields {', '.join(names)}"
                    + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                    expected=cls.__name__,
                )
            values = tuple(named[n] for n in names)
        if len(values) != len(names):
            raise InputValidationError(
                f"{cls.__name__} takes {len(names)} values ({', '.join(names)}), got {len(values)}", expected=cls.__name__
            )
        coerced = []
        for (name, tp), value in zip(cls._fields, values):
            try:
                coerced.append(tp.coerce(value))
            except InputValidationError as exc:
                raise nested(f".{name}", exc) from exc
        self = tuple.__new__(cls, coerced)
        self._validate()
        return self

    def _validate(self) -> None:
        pass

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!s}" if not isinstance(v, str) else f"{n}={str(v)!r}" for (n, _), v in zip(self._fields, self))
        return f"{type(self).__name__}({inner})"

    @classmethod
    def coerce(cls: type[_T], value: Any, like: Any = None) -> _T:
        """Build from a sequence of the field values (a 1-D numpy array too) or a mapping of field names.

        Raises:
            InputValidationError: the wrong number of values, unknown or missing keys,
                or a field value that does not fit (``field`` is ``.name``).
        """
        if type(value) is cls:
            return value
        if isinstance(value, Mapping):
            return cls(**{str(k): v for k, v in value.items()})
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return cls(*value)
        if isinstance(value, np.ndarray) and value.ndim == 1:
            return cls(*value.tolist())
        raise mismatch(cls.type_name(), value)

    def to_json(self) -> dict[str, Any]:
        """An object with one key per field."""
        return {name: value.to_json() for (name, _), value in zip(self._fields, self)}

    @classmethod
    def from_json(cls: type[_T], obj: Any, like: Any = None) -> _T:
        """Decode the object form (every field required, no others).

        Raises:
            InputValidationError: not an object, missing or unknown keys, or a bad field value.
        """
        if not isinstance(obj, Mapping):
            raise mismatch(cls.type_name(), obj)
        decoded = {}
        for name, tp in cls._fields:
            if name in obj:
                try:
                    decoded[name] = tp.from_json(obj[name])
                except InputValidationError as exc:
                    raise nested(f".{name}", exc) from exc
        extra = {k: v for k, v in obj.items() if k not in decoded}
        return cls(**decoded, **extra)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """An object schema with every field required."""
        return {
            "type": "object",
            "title": cls.__name__,
            "properties": {name: tp.json_schema() for name, tp in cls._fields},
            "required": [name for name, _ in cls._fields],
            "additionalProperties": False,
        }


class Point(_Record):
    """A 2-D point ``(x, y)`` of Floats; also a tuple. JSON form: ``{"x": .., "y": ..}``.

    Examples:
        >>> p = Point(1, 2.5)
        >>> p.x, p.to_json()
        (Float(1.0), {'x': 1.0, 'y': 2.5})
    """

    __slots__ = ()
    _fields = (("x", Float), ("y", Float))

    @property
    def x(self) -> Float:
        """The horizontal coordinate."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def y(self) -> Float:
        """The vertical coordinate."""
        return self[1]  # type: ignore[no-any-return]

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Point:
        """A random point in ``[0, 1000)²``."""
        rng = rng_or_default(rng)
        return cls(*(float(v) for v in rng.uniform(0, 1000, 2)))


class BoundingBox(_Record):
    """An axis-aligned box ``(xmin, ymin, xmax, ymax)`` of Floats with ``xmin <= xmax``, ``ymin <= ymax``.

    Examples:
        >>> box = BoundingBox(10, 20, 50, 80)
        >>> box.width, box.height, box.area
        (40.0, 60.0, 2400.0)
    """

    __slots__ = ()
    _fields = (("xmin", Float), ("ymin", Float), ("xmax", Float), ("ymax", Float))

    def _validate(self) -> None:
        xmin, ymin, xmax, ymax = self
        if not (xmin <= xmax and ymin <= ymax):
            raise InputValidationError(
                f"BoundingBox needs xmin <= xmax and ymin <= ymax, got ({xmin}, {ymin}, {xmax}, {ymax})",
                expected="BoundingBox",
            )

    @property
    def xmin(self) -> Float:
        """Left edge."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def ymin(self) -> Float:
        """Top edge."""
        return self[1]  # type: ignore[no-any-return]

    @property
    def xmax(self) -> Float:
        """Right edge."""
        return self[2]  # type: ignore[no-any-return]

    @property
    def ymax(self) -> Float:
        """Bottom edge."""
        return self[3]  # type: ignore[no-any-return]

    @property
    def width(self) -> float:
        """``xmax - xmin``."""
        return float(self[2] - self[0])

    @property
    def height(self) -> float:
        """``ymax - ymin``."""
        return float(self[3] - self[1])

    @property
    def area(self) -> float:
        """``width * height``."""
        return self.width * self.height

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> BoundingBox:
        """A random valid box."""
        rng = rng_or_default(rng)
        x0, y0 = (float(v) for v in rng.uniform(0, 500, 2))
        w, h = (float(v) for v in rng.uniform(0, 500, 2))
        return cls(x0, y0, x0 + w, y0 + h)


class Class(_Record):
    """A label: ``Class(id, name)`` with an Integer id and a String name.

    Examples:
        >>> Class(3, "cat").to_json()
        {'id': 3, 'name': 'cat'}
    """

    __slots__ = ()
    _fields = (("id", Integer), ("name", String))

    @property
    def id(self) -> Integer:
        """The class id."""
        return self[0]  # type: ignore[no-any-return]

    @property
    def name(self) -> String:
        """The class name."""
        return self[1]  # type: ignore[no-any-return]

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Class:
        """A random label."""
        rng = rng_or_default(rng)
        return cls(int(rng.integers(0, 1000)), String.fake(rng))


class Classes(List[Class]):
    """A list of :class:`Class` labels (e.g. a label set, or a multi-label prediction).

    Examples:
        >>> Classes([(0, "dog"), {"id": 1, "name": "cat"}]).to_json()
        [{'id': 0, 'name': 'dog'}, {'id': 1, 'name': 'cat'}]
    """

    @classmethod
    def type_name(cls) -> str:
        """``"Classes"``."""
        return "Classes"
