"""The stats schema and merging the stats of several executors (what the Ray runtime does across replicas)."""

from __future__ import annotations

from typing import Any, get_type_hints

import pytest

from rvai_sdk.execution import Executor, merge_stats
from rvai_sdk.execution.metrics import Histogram
from rvai_sdk.execution.stats import CellStats, ExecutorStats, RequestStats, SidStats, TimingSummary, size_summary
from rvai_sdk.types import Integer
from tests.conftest import AddOne, chain_pipeline

pytestmark = pytest.mark.timeout(60)


def summary(values: list[float]) -> dict[str, Any]:
    histogram = Histogram()
    histogram.add(values)
    return histogram.summary()


def test_numbers_add_dicts_merge_lists_concatenate_and_none_gives_way() -> None:
    merged = merge_stats(
        [
            {"requests": {"failed": 1, "submitted": 5}, "stuck": [{"cell": "a"}], "broken": None, "only": 1},
            {"requests": {"failed": 2, "submitted": 7}, "stuck": [{"cell": "b"}], "broken": "worker died"},
        ]
    )
    assert merged == {
        "requests": {"failed": 3, "submitted": 12},
        "stuck": [{"cell": "a"}, {"cell": "b"}],
        "broken": "worker died",
        "only": 1,
    }


def test_batch_size_counts_merge_by_size_and_come_back_sorted() -> None:
    merged = merge_stats([{"batch_sizes": {4: 1, 1: 2}}, {"batch_sizes": {2: 5, 1: 1}}])
    assert list(merged["batch_sizes"].items()) == [(1, 3), (2, 5), (4, 1)]


def test_timing_summaries_merge_exactly_as_if_one_histogram_had_seen_every_value() -> None:
    a, b = [0.001, 0.002, 0.004], [0.1, 0.0005]
    merged = merge_stats([summary(a), summary(b)])
    whole = summary(a + b)
    assert merged.pop("buckets") == whole.pop("buckets")
    assert merged == pytest.approx(whole)
    assert merged["count"] == 5 and merged["max"] == 0.1


def test_summaries_without_buckets_merge_count_mean_and_max_and_bound_the_percentiles() -> None:
    parts = [
        {"count": 2, "mean": 1.0, "p50": 1.0, "p90": 1.5, "p99": 1.5, "max": 1.5},
        {"count": 6, "mean": 3.0, "p50": 3.0, "p90": 4.0, "p99": 5.0, "max": 5.0},
        {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0},
    ]
    merged = merge_stats(parts)
    assert merged == {"count": 8, "mean": 2.5, "p50": 3.0, "p90": 4.0, "p99": 5.0, "max": 5.0}


def test_one_part_merges_to_itself() -> None:
    part = {"requests": {"latency": summary([0.01, 0.02])}, "cells": {"c0": {"batch_sizes": {1: 3}}}}
    assert merge_stats([part]) == part


def test_size_summary_is_exact() -> None:
    assert size_summary({}) == {"count": 0, "mean": 0.0, "p50": 0, "p90": 0, "p99": 0, "max": 0}
    assert size_summary({1: 98, 8: 2}) == {"count": 100, "mean": 1.14, "p50": 1, "p90": 1, "p99": 8, "max": 8}


def test_the_executor_stats_have_exactly_the_keys_of_the_typed_schema_and_merge_into_the_same_shape() -> None:
    executor = Executor(chain_pipeline(AddOne, AddOne))
    executor.start()
    try:
        for x in range(5):
            executor.submit({"x": Integer(x)}, f"s{x % 2}").result(timeout=10)
        stats = executor.stats()
    finally:
        executor.stop()
    assert set(stats) == set(get_type_hints(ExecutorStats))
    assert set(stats["requests"]) == set(get_type_hints(RequestStats))
    assert set(stats["requests"]["latency"]) == set(get_type_hints(TimingSummary))
    assert set(stats["sids"]) == set(get_type_hints(SidStats))
    for cell in stats["cells"].values():
        assert set(cell) == set(get_type_hints(CellStats))
    merged = merge_stats([stats, stats])
    assert merged["requests"]["succeeded"] == 10
    assert merged["cells"]["c0"]["call_time"]["count"] == 2 * stats["cells"]["c0"]["call_time"]["count"]
    assert set(merged["cells"]["c1"]) == set(get_type_hints(CellStats))
