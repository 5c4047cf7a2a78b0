"""The histograms behind the executor's timing statistics."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rvai_sdk.execution.metrics import HIGHEST, LOWEST, Histogram

seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


@settings(deadline=None)  # no timing assertions in tests: the machine is shared and noisy
@given(st.lists(seconds, min_size=1, max_size=200))
def test_count_sum_and_max_are_exact_and_every_value_lands_in_its_bucket(values: list[float]) -> None:
    h = Histogram()
    h.add(values)
    assert h.count == len(values) == sum(n for _, n in h.buckets())
    assert math.isclose(h.total, math.fsum(values), rel_tol=1e-9, abs_tol=1e-12)
    assert h.max == max(values)
    for value in values:
        single = Histogram()
        single.record(value)
        ((edge, n),) = single.buckets()
        assert n == 1
        assert value <= edge
        if LOWEST < value < HIGHEST:
            assert edge <= value * 1.25 + 1e-300  # buckets are at most 25% wide (4 per octave)


@settings(deadline=None)  # no timing assertions in tests: the machine is shared and noisy
@given(st.lists(st.floats(min_value=1e-6, max_value=100.0), min_size=1, max_size=300), st.sampled_from([50, 90, 99]))
def test_percentiles_are_within_one_bucket_of_the_exact_ones(values: list[float], q: int) -> None:
    h = Histogram()
    h.add(values)
    ordered = sorted(values)
    exact = ordered[max(1, math.ceil(len(values) * q / 100)) - 1]
    assert exact <= h.percentile(q) <= min(exact * 1.25, h.max)


def test_zero_negative_and_huge_values_go_to_the_end_buckets() -> None:
    h = Histogram()
    h.add([0.0, -1.0, 1e9])
    assert h.buckets() == [(LOWEST, 2), (math.inf, 1)]
    assert h.percentile(99) == 1e9  # capped at the maximum


def test_an_empty_histogram_summarises_to_zeros() -> None:
    summary = Histogram().summary()
    assert summary == {"count": 0, "sum": 0.0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "buckets": []}


def test_merge_adds_counts() -> None:
    a, b = Histogram(), Histogram()
    a.add([0.001, 0.002])
    b.add([0.004])
    a.merge(b)
    assert (a.count, a.max, sum(n for _, n in a.buckets())) == (3, 0.004, 3)
