"""The example value type of docs/guides/custom_types.md (kept identical to the guide's code by a test)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types import Value


class Polygon(Value):
    """A closed polygon of at least three (x, y) vertices, in pixels."""

    __slots__ = ("points",)

    def __init__(self, points: Any) -> None:
        try:
            array = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputValidationError(f"expected Polygon (a list of [x, y] pairs), got {points!r:.60}", expected="Polygon") from exc
        if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 3:
            raise InputValidationError(f"expected Polygon (3 or more [x, y] pairs), got shape {array.shape}", expected="Polygon")
        if not np.isfinite(array).all():
            raise InputValidationError("expected Polygon with finite coordinates, got NaN or infinity", expected="Polygon")
        self.points = array

    @property
    def area(self) -> float:
        x, y = self.points[:, 0], self.points[:, 1]
        return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)

    def contains(self, x: float, y: float) -> bool:
        """Whether (x, y) is inside (even-odd rule)."""
        inside = False
        px, py = self.points[:, 0], self.points[:, 1]
        for i in range(len(px)):
            j = i - 1
            if (py[i] > y) != (py[j] > y) and x < (px[j] - px[i]) * (y - py[i]) / (py[j] - py[i]) + px[i]:
                inside = not inside
        return inside

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Polygon):
            return NotImplemented
        return self.points.shape == other.points.shape and bool(np.array_equal(self.points, other.points))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Polygon({len(self.points)} vertices)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.points,))  # a plain array: large ones cross processes through shared memory

    # -- the protocol ------------------------------------------------------------------

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Polygon:
        if type(value) is cls:
            return value
        if isinstance(value, (list, tuple, np.ndarray)):
            return cls(value)
        raise InputValidationError(f"expected Polygon, got {type(value).__name__} {value!r:.60}", expected="Polygon")

    def to_json(self) -> list[list[float]]:
        return self.points.tolist()

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Polygon:
        if not isinstance(obj, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)
            for p in obj
        ):
            raise InputValidationError("expected Polygon as a list of [x, y] number pairs", expected="Polygon")
        return cls(obj)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        pair = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
        return {"type": "array", "items": pair, "minItems": 3}

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Polygon:
        rng = rng if rng is not None else np.random.default_rng()
        count = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=count))
        radius = rng.uniform(5, 50)
        return cls(np.stack([100 + radius * np.cos(angles), 100 + radius * np.sin(angles)], axis=1))
