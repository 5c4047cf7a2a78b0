"""Every value type round-trips exactly through JSON, pickle and deepcopy (property-based)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given
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
    coerce,
    fake,
)
from tests.unit.types._support import examples, same, through_json

try:
    import dill
except ImportError:  # the dill sub-checks are skipped
    dill = None

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
anyfloat = st.floats(allow_nan=True, allow_infinity=True, width=64)

integers = st.integers(min_value=-(10**40), max_value=10**40).map(Integer)
floats = st.one_of(anyfloat, st.sampled_from([-0.0, 0.0, float("nan"), float("inf"), float("-inf")])).map(Float)
strings = st.text(max_size=20).map(String)  # unicode, surrogates excluded by hypothesis
booleans = st.booleans().map(Boolean)
points = st.tuples(anyfloat, anyfloat).map(lambda p: Point(*p))
boxes = st.tuples(finite, finite, st.floats(0, 1e6), st.floats(0, 1e6)).map(
    lambda b: BoundingBox(b[0], b[1], b[0] + b[2], b[1] + b[3])
)
classes = st.tuples(st.integers(-(10**20), 10**20), st.text(max_size=10)).map(lambda c: Class(*c))
images = hnp.arrays(
    dtype=np.uint8,
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 2, 3, 4])),
).map(Image)


def check_round_trips(value: Any, tp: Any, like: Any = None) -> None:
    assert same(through_json(value, tp, like=like), value)
    assert same(pickle.loads(pickle.dumps(value, protocol=5)), value)
    assert same(copy.deepcopy(value), value)
    if dill is not None:
        assert same(dill.loads(dill.dumps(value)), value)


SIMPLE = [
    (Integer, integers),
    (Float, floats),
    (String, strings),
    (Boolean, booleans),
    (Point, points),
    (BoundingBox, boxes),
    (Class, classes),
    (Image, images),
]


@pytest.mark.parametrize(("tp", "strategy"), SIMPLE, ids=[t.__name__ for t, _ in SIMPLE])
def test_simple_types_round_trip_through_json_pickle_and_deepcopy(tp: Any, strategy: Any) -> None:
    @examples
    @given(strategy)
    def check(value: Any) -> None:
        check_round_trips(value, tp)

    check()


def test_negative_zero_nan_and_infinities_round_trip_exactly() -> None:
    for number in (-0.0, float("nan"), float("inf"), float("-inf")):
        check_round_trips(Float(number), Float)
    assert Float(float("-inf")).to_json() == "-Infinity"
    assert str(through_json(Float(-0.0), Float)) == "-0.0"


@examples
@given(st.lists(integers, max_size=6))
def test_lists_round_trip(values: list[Integer]) -> None:
    check_round_trips(List[Integer](values), List[Integer])


@examples
@given(st.lists(st.lists(points, max_size=3), max_size=3))
def test_nested_lists_round_trip(values: list[list[Point]]) -> None:
    check_round_trips(List[List[Point]](values), List[List[Point]])


@examples
@given(st.dictionaries(st.text(max_size=5), st.lists(floats, max_size=3), max_size=4))
def test_string_keyed_dicts_of_lists_round_trip(values: dict[str, list[float]]) -> None:
    check_round_trips(Dict[String, List[Float]](values), Dict[String, List[Float]])


@examples
@given(st.dictionaries(st.integers(-(10**20), 10**20), booleans, max_size=4))
def test_integer_keyed_dicts_round_trip(values: dict[int, Boolean]) -> None:
    check_round_trips(Dict[Integer, Boolean](values), Dict[Integer, Boolean])


@examples
@given(st.dictionaries(st.text(max_size=4), st.lists(boxes, max_size=2), max_size=3))
def test_dicts_of_lists_of_boxes_round_trip(values: dict[str, list[BoundingBox]]) -> None:
    check_round_trips(Dict[String, List[BoundingBox]](values), Dict[String, List[BoundingBox]])


@examples
@given(st.lists(images, max_size=3))
def test_lists_of_images_round_trip(values: list[Image]) -> None:
    check_round_trips(List[Image](values), List[Image])


@examples
@given(st.lists(classes, max_size=5))
def test_classes_round_trip(values: list[Class]) -> None:
    check_round_trips(Classes(values), Classes)


@examples
@given(st.one_of(st.none(), integers))
def test_optional_values_round_trip_through_the_helpers(value: Integer | None) -> None:
    assert same(through_json(value, Integer | None), value)
    assert coerce(Integer | None, value) is value


@examples
@given(st.data())
def test_float_ranges_round_trip_with_their_bounds(data: st.DataObject) -> None:
    low = data.draw(st.floats(-1e6, 1e6))
    high = data.draw(st.floats(low, low + 1e6))
    value = FloatRange(data.draw(st.floats(low, high)), min=low, max=high)
    check_round_trips(value, FloatRange, like=value)
    declared = FloatRange(low, min=low, max=high)
    back = coerce(FloatRange, float(value), like=declared)
    assert same(back, value)


@examples
@given(st.data())
def test_integer_ranges_round_trip_with_their_bounds(data: st.DataObject) -> None:
    low = data.draw(st.one_of(st.none(), st.integers(-(10**20), 10**20)))
    start = 0 if low is None else low
    high = data.draw(st.one_of(st.none(), st.integers(start, start + 10**6)))
    number = data.draw(st.integers(start, start if high is None else high))
    value = IntegerRange(number, min=low, max=high)
    check_round_trips(value, IntegerRange, like=value)


@examples
@given(st.lists(st.text(max_size=6), min_size=1, max_size=5, unique=True), st.data())
def test_enums_round_trip_with_their_options(options: list[str], data: st.DataObject) -> None:
    selected = data.draw(st.sampled_from(options))
    value = Enum[String](options=options, selected=selected)
    check_round_trips(value, Enum[String], like=value)
    assert same(Enum[String].from_json({"selected": selected, "options": options}), value)


@examples
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=4, unique=True))
def test_integer_enums_round_trip_with_their_options(options: list[int]) -> None:
    value = Enum[Integer](options=options, selected=options[-1])
    check_round_trips(value, Enum[Integer], like=value)


PARAMETRISED: list[Any] = [
    List[Integer],
    Dict[Integer, String],
    Dict[String, List[Float]],
    Enum[String],
    List[List[Point]],
    List[Enum[Integer]],
    Classes,
    List,
    Dict,
    Enum,
]


@pytest.mark.parametrize("tp", PARAMETRISED, ids=lambda t: t.type_name())
def test_parametrised_classes_are_cached_and_pickle_by_reference(tp: Any) -> None:
    assert pickle.loads(pickle.dumps(tp, protocol=5)) is tp
    assert copy.deepcopy(tp) is tp
    if dill is not None:
        assert dill.loads(dill.dumps(tp)) is tp


def test_parametrising_twice_gives_the_same_class() -> None:
    assert List[Integer] is List[Integer]
    assert Dict[String, List[Float]] is Dict[String, List[Float]]
    assert Enum[String] is Enum[String]
    assert List[Integer] is not List[Float]  # type: ignore[comparison-overlap]


FAKEABLE: list[Any] = [
    Integer,
    Float,
    String,
    Boolean,
    IntegerRange,
    FloatRange,
    Point,
    BoundingBox,
    Class,
    Classes,
    Image,
    List[Point],
    List[List[Integer]],
    Dict[String, Integer],
    Dict[Integer, List[BoundingBox]],
    Enum[Integer],
    Enum[List[Integer]],
    Integer | None,
]


@pytest.mark.parametrize("tp", FAKEABLE, ids=lambda t: getattr(t, "type_name", lambda: str(t))())
def test_fake_values_are_valid_and_round_trip(tp: Any) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        value = fake(tp, rng)
        assert value is not None
        assert coerce(tp, value) is value
        like = value if isinstance(value, (Enum, IntegerRange, FloatRange)) else None
        assert same(through_json(value, tp, like=like), value)
        assert same(pickle.loads(pickle.dumps(value, protocol=5)), value)


def test_fake_ranges_and_enums_respect_their_declaration() -> None:
    rng = np.random.default_rng(0)
    r = FloatRange(0.5, min=0.0, max=1.0)
    assert all(0.0 <= r.fake(rng) <= 1.0 and r.fake(rng).max == 1.0 for _ in range(50))
    i = IntegerRange(3, min=2, max=4)
    assert {int(i.fake(rng)) for _ in range(60)} == {2, 3, 4}
    below = IntegerRange(-5000, max=-4000)
    assert all(v <= -4000 for v in (below.fake(rng) for _ in range(20)))
    above = FloatRange(10.0, min=5.0, max=float("inf"))
    assert all(v >= 5.0 for v in (above.fake(rng) for _ in range(20)))
    e = Enum[String](options=["a", "b"])
    assert {str(e.fake(rng)) for _ in range(40)} == {"a", "b"}
    assert fake(Enum[String], rng, like=e).options == e.options


@examples
@given(st.lists(st.one_of(st.none(), integers), max_size=5))
def test_lists_of_optional_items_round_trip(values: list[Integer | None]) -> None:
    tp = List[Integer | None]
    check_round_trips(tp(values), tp)
    assert pickle.loads(pickle.dumps(tp)) is tp
