"""Shared settings and helpers for the value-type suites."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hypothesis import settings

from rvai_sdk.types import Enum, from_json, to_json

examples = settings(max_examples=60, deadline=None)
"""Hypothesis settings for these suites (applied per test, so other suites keep their own)."""


def same(a: Any, b: Any) -> bool:
    """Exact equality: same types, NaN equals NaN, -0.0 differs from 0.0, arrays compared elementwise."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        if a == b and math.copysign(1, a) == math.copysign(1, b):
            return (getattr(a, "min", None), getattr(a, "max", None)) == (getattr(b, "min", None), getattr(b, "max", None))
        return False
    if isinstance(a, Enum):
        return same(a.selected, b.selected) and same(a.options, b.options)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, int) and hasattr(a, "min"):
        return int(a) == int(b) and (getattr(a, "min"), getattr(a, "max")) == (getattr(b, "min"), getattr(b, "max"))
    return bool(a == b)


def through_json(value: Any, tp: Any, like: Any = None) -> Any:
    """to_json, then a strict (no NaN literals) JSON text round trip, then from_json."""
    text = json.dumps(to_json(value), allow_nan=False)
    return from_json(tp, json.loads(text), like=like)
