"""Every value type round-trips exactly through JSON, pickle and deepcopy (property-based)."""

from __future__ import annotations

import copy
import json
import math
import pickle
from typing import Any

import dill
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rvai_sdk.types import (
    Boolean,
    BoundingBox,
    Class,
    Classes,
    Dict,
    Enum,
    Float,
    FloatRange,
    Image,
    Integer,
    IntegerRange,
    List,
    Point,
    String,
    from_json,
    to_json,
)

settings.register_profile("rvai", max_examples=60, deadline=None)
settings.load_profile("rvai")

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
anyfloat = st.floats(allow_nan=True, allow_infinity=True, width=64)

integers = st.integers(min_value=-(10**30), max_value=10**30).map(Integer)
floats = anyfloat.map(Float)
strings = st.text(max_size=20).map(String)
booleans = st.booleans().map(Boolean)
points = st.tuples(finite, finite).map(lambda p: Point(*p))
boxes = st.tuples(finite, finite, st.floats(0, 1e6), st.floats(0, 1e6)).map(
    lambda b: BoundingBox(b[0], b[1], b[0] + b[2], b[1] + b[3])
)
classes = st.tuples(st.integers(-1000, 1000), st.text(max_size=10)).map(lambda c: Class(*c))
images = hnp.arrays(
    dtype=np.uint8,
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 2, 3, 4])),
).map(Image)


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to itself, -0.0 apart from 0.0, and compares arrays and types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Enum):
        return same(a.selected, b.selected) and same(a.options, b.options)
    return bool(a == b)


def through_json(value: Any, tp: Any, like: Any = None) -> Any:
    return from_json(tp, json.loads(json.dumps(to_json(value), allow_nan=False)), like=like)


SCALARS = [
    (Integer, integers),
    (Float, floats),
    (String, strings),
    (Boolean, booleans),
    (Point, points),
    (BoundingBox, boxes),
    (Class, classes),
    (Image, images),
]


@pytest.mark.parametrize(("tp", "strategy"), SCALARS, ids=[t.__name__ for t, _ in SCALARS])
def test_scalar_types_round_trip_through_json_pickle_and_deepcopy(tp: Any, strategy: Any) -> None:
    @given(strategy)
    def check(value: Any) -> None:
        assert same(through_json(value, tp), value)
        assert same(pickle.loads(pickle.dumps(value, protocol=5)), value)
        assert same(copy.deepcopy(value), value)

    check()


@given(st.lists(integers, max_size=6))
def test_lists_round_trip(values: list[Integer]) -> None:
    value = List[Integer](values)
    assert same(through_json(value, List[Integer]), value)
    assert same(pickle.loads(pickle.dumps(value)), value)


@given(st.lists(st.lists(points, max_size=3), max_size=3))
def test_nested_lists_round_trip(values: list[list[Point]]) -> None:
    tp = List[List[Point]]
    value = tp(values)
    assert same(through_json(value, tp), value)
    assert same(dill.loads(dill.dumps(value)), value)


@given(st.dictionaries(st.text(max_size=5), st.lists(floats, max_size=3), max_size=4))
def test_string_keyed_dicts_round_trip(values: dict[str, list[float]]) -> None:
    tp = Dict[String, List[Float]]
    value = tp(values)
    assert same(through_json(value, tp), value)
    assert same(pickle.loads(pickle.dumps(value)), value)


@given(st.dictionaries(st.integers(-(10**12), 10**12), booleans, max_size=4))
def test_integer_keyed_dicts_round_trip(values: dict[int, Boolean]) -> None:
    tp = Dict[Integer, Boolean]
    value = tp(values)
    assert same(through_json(value, tp), value)


@given(st.lists(classes, max_size=5))
def test_classes_round_trip(values: list[Class]) -> None:
    value = Classes(values)
    assert same(through_json(value, Classes), value)
    assert same(pickle.loads(pickle.dumps(value)), value)


@given(st.data())
def test_ranges_round_trip_with_their_bounds(data: st.DataObject) -> None:
    low = data.draw(st.floats(-1e6, 1e6))
    high = data.draw(st.floats(low, low + 1e6))
    value = FloatRange(data.draw(st.floats(low, high)), min=low, max=high)
    back = through_json(value, FloatRange, like=value)
    assert float(back) == float(value) and (back.min, back.max) == (low, high)
    pickled = pickle.loads(pickle.dumps(value))
    assert (float(pickled), pickled.min, pickled.max) == (float(value), low, high)
    ilow = data.draw(st.integers(-1000, 1000))
    ivalue = IntegerRange(ilow + 3, min=ilow, max=ilow + 10)
    iback = through_json(ivalue, IntegerRange, like=ivalue)
    assert (int(iback), iback.min, iback.max) == (ilow + 3, ilow, ilow + 10)
    assert same(copy.deepcopy(ivalue), ivalue) and copy.deepcopy(ivalue).max == ilow + 10


@given(st.lists(st.text(max_size=6), min_size=1, max_size=5, unique=True), st.data())
def test_enums_round_trip_with_their_options(options: list[str], data: st.DataObject) -> None:
    selected = data.draw(st.sampled_from(options))
    value = Enum[String](options=options, selected=selected)
    back = through_json(value, Enum[String], like=value)
    assert same(back, value)
    assert same(pickle.loads(pickle.dumps(value)), value)
    assert same(copy.deepcopy(value), value)
    explicit = Enum[String].from_json({"selected": selected, "options": options})
    assert same(explicit, value)


def test_parametrised_classes_are_cached_and_pickle_by_reference() -> None:
    assert List[Integer] is List[Integer]
    assert Dict[String, List[Float]] is Dict[String, List[Float]]
    for tp in (List[Integer], Dict[Integer, String], Enum[String], List[List[Point]], Classes):
        assert pickle.loads(pickle.dumps(tp)) is tp
        assert dill.loads(dill.dumps(tp)) is tp


@pytest.mark.parametrize(
    "tp",
    [Integer, Float, String, Boolean, Point, BoundingBox, Class, Classes, Image, List[Point], Dict[String, Integer], Enum[Integer]],
    ids=lambda t: t.type_name(),
)
def test_fake_values_are_valid_and_round_trip(tp: Any) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        value = tp.fake(rng)
        assert isinstance(value, tp)
        assert same(tp.coerce(value), value)
        like = value if isinstance(value, Enum) else None
        assert same(through_json(value, tp, like=like), value)


def test_fake_ranges_and_enums_respect_their_declaration() -> None:
    rng = np.random.default_rng(0)
    r = FloatRange(0.5, min=0.0, max=1.0)
    assert all(0.0 <= r.fake(rng) <= 1.0 for _ in range(50))
    i = IntegerRange(3, min=2, max=4)
    assert {int(i.fake(rng)) for _ in range(60)} == {2, 3, 4}
    e = Enum[String](options=["a", "b"])
    assert {str(e.fake(rng)) for _ in range(40)} == {"a", "b"}
