"""The executor's statistics: one typed schema, the per-cell counters behind it, and merging across replicas.

:meth:`Executor.stats() <rvai_sdk.execution.Executor.stats>` returns an
:class:`ExecutorStats`: plain dicts, numbers and lists (JSON-serialisable), typed
here with ``TypedDict`` so that readers (metrics endpoints, benchmarks, the Ray
runtime) and the executor agree on one set of keys. :func:`merge_stats` combines
the stats of several executors (the replicas of one pipeline) into one of the
same shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, cast

from rvai_sdk.execution import metrics
from rvai_sdk.execution.metrics import Histogram

__all__ = [
    "CellCounters",
    "CellStats",
    "ExecutorStats",
    "RequestStats",
    "SidStats",
    "SizeSummary",
    "StuckCall",
    "TimingSummary",
    "merge_stats",
    "size_summary",
]


class TimingSummary(TypedDict):
    """A summary of timings in seconds (``Histogram.summary()``): count, sum, mean and max are exact.

    ``buckets`` holds the non-empty histogram buckets as ``(upper edge, count)`` pairs;
    the percentiles are estimated from them (buckets at most 25% wide).
    """

    count: int
    sum: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    buckets: list[tuple[float, int]]


class SizeSummary(TypedDict):
    """Count, mean, p50, p90, p99 and max of batch sizes (exact)."""

    count: int
    mean: float
    p50: int
    p90: int
    p99: int
    max: int


class RequestStats(TypedDict):
    """Requests since the executor started; ``latency`` is submit to last cell done, of those that succeeded."""

    submitted: int
    succeeded: int
    failed: int
    in_flight: int
    deadline_exceeded: int
    latency: TimingSummary


class StuckCall(TypedDict):
    """One request in a call running longer than ``stuck_after``."""

    cell: str
    sid: str | None
    seconds: float


class SidStats(TypedDict):
    """Kept states: ``live`` now, and how many ``expired`` (TTL) or were ``evicted`` (``max_states``)."""

    live: int
    expired: int
    evicted: int


class CellStats(TypedDict):
    """One cell: calls, items, failures, seconds in calls, queue length, calls running, and timing summaries.

    ``batch_sizes`` is exact (batch size to calls; batched cells only), ``batch_size`` summarises
    items per call, ``queue_wait`` is per item (inputs complete to its call starting, including
    the wait for a batch to fill) and ``call_time`` per call.
    """

    calls: int
    items: int
    failures: int
    busy_seconds: float
    queued: int
    running: int
    batch_sizes: dict[int, int]
    batch_size: SizeSummary
    queue_wait: TimingSummary
    call_time: TimingSummary


class ExecutorStats(TypedDict):
    """Everything :meth:`Executor.stats() <rvai_sdk.execution.Executor.stats>` returns."""

    requests: RequestStats
    stuck: list[StuckCall]
    broken: str | None
    sids: SidStats
    cells: dict[str, CellStats]


def timing_summary(histogram: Histogram) -> TimingSummary:
    """``histogram``'s summary, typed."""
    return cast(TimingSummary, histogram.summary())


def size_summary(sizes: Mapping[int, int]) -> SizeSummary:
    """Count, mean, p50, p90, p99 and max of batch sizes given as size -> calls (exact).

    Example:
        >>> size_summary({1: 3, 4: 1})
        {'count': 4, 'mean': 1.75, 'p50': 1, 'p90': 4, 'p99': 4, 'max': 4}
    """
    count = sum(sizes.values())
    if not count:
        return {"count": 0, "mean": 0.0, "p50": 0, "p90": 0, "p99": 0, "max": 0}
    ordered = sorted((size, n) for size, n in sizes.items() if n)

    def percentile(q: float) -> int:
        rank = max(1, -(-count * q // 100))
        seen = 0
        for size, n in ordered:
            seen += n
            if seen >= rank:
                return size
        return ordered[-1][0]  # pragma: no cover

    return {
        "count": count,
        "mean": sum(size * n for size, n in ordered) / count,
        "p50": percentile(50),
        "p90": percentile(90),
        "p99": percentile(99),
        "max": ordered[-1][0],
    }


class CellCounters:
    """One cell's counters and raw timings (mutated by the executor under its lock).

    Timings are appended to plain lists on the hot path and folded into histograms,
    vectorised, by :meth:`fold` (every ``_FOLD_EVERY`` calls and before a snapshot).
    """

    __slots__ = ("calls", "items", "busy_seconds", "failures", "batch_sizes", "waits", "times", "wait_hist", "time_hist")

    def __init__(self) -> None:
        self.calls = 0
        self.items = 0
        self.busy_seconds = 0.0
        self.failures = 0
        self.batch_sizes: dict[int, int] = {}
        self.waits: list[float] = []  # per item: seconds from ready (inputs complete) to its call starting
        self.times: list[float] = []  # per call: seconds the call took
        self.wait_hist = Histogram()
        self.time_hist = Histogram()

    def fold(self) -> None:
        """Move the raw timings into the histograms."""
        self.wait_hist.add(self.waits)
        self.waits = []
        self.time_hist.add(self.times)
        self.times = []

    def snapshot(self, *, queued: int, running: int, batched: bool) -> CellStats:
        """The cell's :class:`CellStats` (folds the raw timings first)."""
        self.fold()
        return {
            "calls": self.calls,
            "items": self.items,
            "failures": self.failures,
            "busy_seconds": self.busy_seconds,
            "queued": queued,
            "running": running,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "batch_size": size_summary(self.batch_sizes if batched else {1: self.calls}),
            "queue_wait": timing_summary(self.wait_hist),
            "call_time": timing_summary(self.time_hist),
        }


# -- merging the stats of several executors ---------------------------------------------------


def _is_summary(value: Mapping[str, Any]) -> bool:
    return "count" in value and "p50" in value and "max" in value


def _bucket_edges() -> dict[float, int]:
    return {edge: index for index, edge in enumerate(metrics._EDGES)}


def _merge_summaries(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge histogram summaries (``Histogram.summary()``): exact count, sum, mean and max;
    percentiles from the merged buckets when the summaries carry them, else the largest
    part's percentile (an upper bound)."""
    count = sum(int(p["count"]) for p in parts)
    merged: dict[str, Any] = {"count": count}
    if all("sum" in p for p in parts):
        merged["sum"] = sum(float(p["sum"]) for p in parts)
        merged["mean"] = merged["sum"] / count if count else 0.0
    else:
        merged["mean"] = sum(float(p["mean"]) * int(p["count"]) for p in parts) / count if count else 0.0
    merged["max"] = max((p["max"] for p in parts), default=0)
    if all("buckets" in p for p in parts):
        histogram = Histogram()
        edges = _bucket_edges()
        for part in parts:
            for edge, n in part["buckets"]:
                histogram.counts[edges[float(edge)]] += int(n)
        histogram.count = count
        histogram.max = float(merged["max"])
        for q in (50, 90, 99):
            merged[f"p{q}"] = histogram.percentile(q)
        merged["buckets"] = histogram.buckets()
    else:
        for key in ("p50", "p90", "p99"):
            merged[key] = max((p[key] for p in parts if p["count"]), default=parts[0][key])
    return {key: merged[key] for key in parts[0] if key in merged}


def merge_stats(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge the stats of several executors: numbers add up, dicts merge recursively, timing summaries combine.

    Lists concatenate (e.g. the stuck calls of every replica); ``None`` gives way to a value.
    A timing summary (a mapping with ``count``, ``p50`` and ``max``) merges exactly in count,
    sum, mean and max, and its percentiles come from the merged buckets (or, without buckets,
    are the largest part's: an upper bound). A dict keyed by ints (``batch_sizes``) comes back
    sorted by key.

    Example:
        >>> merge_stats([{"requests": {"failed": 1}, "cells": {"c": {"batch_sizes": {1: 2}}}},
        ...              {"requests": {"failed": 2}, "cells": {"c": {"batch_sizes": {1: 1, 4: 1}}}}])
        {'requests': {'failed': 3}, 'cells': {'c': {'batch_sizes': {1: 3, 4: 1}}}}
    """
    if parts and all(isinstance(p, Mapping) and _is_summary(p) for p in parts):
        return _merge_summaries(parts)
    merged: dict[Any, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in merged:
                merged[key] = merge_stats([value]) if isinstance(value, Mapping) else value
            elif isinstance(value, Mapping) and isinstance(merged[key], dict):
                merged[key] = merge_stats([merged[key], value])
            elif isinstance(value, (int, float)) and isinstance(merged[key], (int, float)):
                merged[key] = merged[key] + value
            elif isinstance(value, list) and isinstance(merged[key], list):
                merged[key] = merged[key] + value  # e.g. the stuck calls of every replica
            elif merged[key] is None:
                merged[key] = value
    if merged and all(isinstance(k, int) for k in merged):
        return dict(sorted(merged.items()))
    return merged
