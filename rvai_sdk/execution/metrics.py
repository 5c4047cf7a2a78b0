"""Cheap fixed-bucket histograms for the executor's timings (queue waits, call times, latencies).

Recording must cost next to nothing on the executor's hot path: the executor
appends raw values to a list and folds them in bulk into a fixed set of
log-spaced buckets, four per power of two (a bucket's upper edge is at most 25%
above its lower edge), found with a vectorised :func:`numpy.frexp` and no
search. Count, sum and maximum are exact; percentiles are estimated from the
buckets (the upper edge of the bucket holding the percentile, capped at the
maximum).

Example:
    >>> h = Histogram()
    >>> h.add([0.001, 0.002, 0.003, 0.004, 0.1])
    >>> s = h.summary()
    >>> s["count"], round(s["mean"], 4), s["max"]
    (5, 0.022, 0.1)
    >>> 0.003 <= s["p50"] <= 0.003 * 1.19
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Histogram", "SUB_BUCKETS", "LOWEST", "HIGHEST"]

SUB_BUCKETS = 4
"""Buckets per power of two."""
_MIN_EXP = -20
_MAX_EXP = 8
LOWEST = 2.0**_MIN_EXP / 2
"""Values at or below this (about 0.5 µs) share the first bucket."""
HIGHEST = 2.0**_MAX_EXP / 2
"""Values above this (128 s) share the last bucket."""
_OFFSET = -SUB_BUCKETS * _MIN_EXP + 1
_SIZE = SUB_BUCKETS * (_MAX_EXP - _MIN_EXP) + 2


def _upper_edges() -> list[float]:
    edges = [LOWEST]
    for exp in range(_MIN_EXP, _MAX_EXP):
        for sub in range(SUB_BUCKETS):
            edges.append((0.5 + (sub + 1) * 0.5 / SUB_BUCKETS) * 2.0**exp)
    edges.append(math.inf)
    return edges


_EDGES = _upper_edges()


class Histogram:
    """Counts of non-negative values (seconds, or sizes) in log-spaced buckets.

    Values are added in bulk (:meth:`add`): the executor appends raw timings to a
    plain list on its hot path and folds them in here now and then, vectorised.
    Not thread-safe by itself: the executor folds under its own lock.

    Attributes:
        count: values recorded.
        total: their exact sum.
        max: the largest one (0.0 before any).
    """

    __slots__ = ("counts", "count", "total", "max")

    def __init__(self) -> None:
        self.counts = np.zeros(_SIZE, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, values: Sequence[float]) -> None:
        """Add many values at once (a list of floats)."""
        if not len(values):
            return
        array = np.asarray(values, dtype=np.float64)
        mantissa, exp = np.frexp(array)
        index = SUB_BUCKETS * exp + (mantissa * (2 * SUB_BUCKETS)).astype(np.intp) + (_OFFSET - SUB_BUCKETS)
        index[array <= LOWEST] = 0  # zero and negatives too (frexp would misplace them)
        np.minimum(index, _SIZE - 1, out=index)
        self.counts += np.bincount(index, minlength=_SIZE)
        self.count += len(array)
        self.total += float(array.sum())
        self.max = max(self.max, float(array.max()))

    def record(self, value: float) -> None:
        """Add one value (for bulk use :meth:`add`)."""
        self.add([value])

    def merge(self, other: Histogram) -> None:
        """Add every value ``other`` recorded."""
        self.counts = self.counts + other.counts
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float:
        """Estimated ``q``-th percentile (0-100): the upper edge of its bucket, capped at the maximum; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100.0))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(_EDGES[min(index, _SIZE - 1)], self.max)

    def buckets(self) -> list[tuple[float, int]]:
        """Non-empty buckets as (upper edge, count), ascending; the last edge may be ``inf``."""
        return [(_EDGES[i], int(self.counts[i])) for i in np.flatnonzero(self.counts)]

    def summary(self) -> dict[str, Any]:
        """Count, sum, mean, p50, p90, p99 and max, plus the non-empty ``buckets`` (for a metrics endpoint)."""
        count = self.count
        return {
            "count": count,
            "sum": self.total,
            "mean": self.total / count if count else 0.0,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": self.max,
            "buckets": self.buckets(),
        }
