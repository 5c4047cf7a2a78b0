"""DummySource fakes plain Integer inputs as counts (never negative) unless asked for both signs."""

from __future__ import annotations

from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.types import FloatRange, Integer


def _values(source: DummySource, ref: str) -> list[int]:
    return [int(item.inputs[ref]) for item in source.items()]


def test_integer_inputs_are_counts_by_default_and_both_signs_on_request() -> None:
    counts = DummySource(format={"count": Integer}, params=DummySource.parameters(rate=FloatRange(0), count=200, seed=7))
    values = _values(counts, "count")
    assert len(values) == 200 and min(values) >= 0 and max(values) > 0
    signed = DummySource(
        format={"count": Integer}, params=DummySource.parameters(rate=FloatRange(0), count=200, seed=7, signed=True)
    )
    assert min(_values(signed, "count")) < 0
    assert DummySource.from_url("dummy:?signed=true").params.signed

