"""Value behaviour, coercion tables, error messages with paths, ranges, enums, images and schemas."""

from __future__ import annotations

import base64
import copy
import importlib
import math
import pickle
from typing import Any, Optional

import numpy as np
import pytest

from rvai_sdk.exc import InputValidationError
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
    Value,
    coerce,
    fake,
    from_json,
    is_value_type,
    json_schema,
    to_json,
    type_name,
)
from tests.conftest import require_extra

# -- behaving like the wrapped value -------------------------------------------------------------


def test_values_behave_like_what_they_wrap() -> None:
    assert Integer(2) + 1 == 3
    assert isinstance(Integer(2), int) and isinstance(Float(1.5), float) and isinstance(String("a"), str)
    assert String("ab").upper() == "AB"
    assert Boolean(True) == True  # noqa: E712
    assert bool(Boolean(False)) is False
    assert Boolean(True).to_json() is True
    assert f"{Integer(3)} {Float(0.25)} {String('x')} {Boolean(True)}" == "3 0.25 x True"
    assert [repr(Integer(3)), repr(Float(0.5)), repr(String("x")), repr(Boolean(False))] == [
        "Integer(3)",
        "Float(0.5)",
        "String('x')",
        "Boolean(False)",
    ]
    assert Point(1, 2) == (1.0, 2.0)
    assert List[Integer]([1]) == [1]
    assert Dict[String, Integer]({"a": 1}) == {"a": 1}
    assert Enum[String](options=["a", "b"], selected="b") == "b"
    assert Image(np.zeros((2, 2, 3), np.uint8)).sum() == 0


def test_every_type_derives_from_value() -> None:
    for tp in (Integer, Float, String, Boolean, IntegerRange, FloatRange, Enum, Image, Point, BoundingBox, Class, Classes, List, Dict):
        assert issubclass(tp, Value)


def test_type_names_show_parameters() -> None:
    assert [Integer.type_name(), List.type_name(), List[Integer].type_name()] == ["Integer", "List", "List[Integer]"]
    assert Dict[String, Float].type_name() == "Dict[String, Float]"
    assert Enum[String].type_name() == "Enum[String]"
    assert List[Dict[Integer, List[Point]]].type_name() == "List[Dict[Integer, List[Point]]]"
    assert type_name(Optional[Float]) == "Float | None"
    assert Enum[String].item_type is String and Enum.item_type is None


# -- coercion tables -----------------------------------------------------------------------------

ACCEPTED: list[tuple[Any, Any, Any]] = [
    (Integer, 3, 3),
    (Integer, np.int64(3), 3),
    (Integer, np.uint8(200), 200),
    (Integer, 4.0, 4),
    (Integer, np.float32(-2.0), -2),
    (Integer, 10**30, 10**30),
    (Float, 2, 2.0),
    (Float, 0.5, 0.5),
    (Float, np.float32(0.5), 0.5),
    (Float, np.int16(7), 7.0),
    (String, "x", "x"),
    (String, "żółw 🐢", "żółw 🐢"),
    (String, np.str_("y"), "y"),
    (Boolean, True, True),
    (Boolean, np.bool_(False), False),
    (IntegerRange, 5, 5),
    (FloatRange, 2, 2.0),
    (Point, [1, 2], (1.0, 2.0)),
    (Point, (1.5, -2), (1.5, -2.0)),
    (Point, np.array([1.0, 2.0]), (1.0, 2.0)),
    (Point, {"x": 1, "y": 2}, (1.0, 2.0)),
    (BoundingBox, (0, 0, 1, 2), (0.0, 0.0, 1.0, 2.0)),
    (BoundingBox, {"xmin": 0, "ymin": 0, "xmax": 0, "ymax": 0}, (0.0, 0.0, 0.0, 0.0)),
    (Class, (1, "cat"), (1, "cat")),
    (Class, {"id": 1, "name": "cat"}, (1, "cat")),
    (Classes, [(1, "cat"), {"id": 2, "name": "dog"}], [(1, "cat"), (2, "dog")]),
    (List[Float], (1, 2.5), [1.0, 2.5]),
    (List[List[Integer]], [[1], [2.0, 3]], [[1], [2, 3]]),
    (Dict[String, Integer], {"a": 1}, {"a": 1}),
    (Dict[Integer, String], {np.int32(1): "a"}, {1: "a"}),
]


@pytest.mark.parametrize(("tp", "value", "expected"), ACCEPTED, ids=lambda v: repr(v)[:30])
def test_lossless_plain_values_are_coerced(tp: Any, value: Any, expected: Any) -> None:
    result = coerce(tp, value)
    assert type(result) is tp
    assert result == expected


REJECTED: list[tuple[Any, Any, str]] = [
    (Integer, True, r"^expected Integer, got bool True$"),
    (Integer, Boolean(True), r"^expected Integer, got Boolean Boolean\(True\)$"),
    (Integer, 1.5, r"^expected Integer, got float 1.5$"),
    (Integer, "1", r"^expected Integer, got str '1'$"),
    (Integer, "abc", r"^expected Integer, got str 'abc'$"),
    (Integer, float("nan"), r"^expected Integer, got float nan$"),
    (Integer, float("inf"), r"^expected Integer, got float inf$"),
    (Integer, None, r"^expected Integer, got None$"),
    (Float, False, r"^expected Float, got bool False$"),
    (Float, np.bool_(True), r"^expected Float, got bool"),
    (Float, "0.5", r"^expected Float, got str '0.5'$"),
    (Float, 10**400, r"too large for a 64-bit float"),
    (Float, 1j, r"^expected Float, got complex 1j$"),
    (String, 5, r"^expected String, got int 5$"),
    (String, b"x", r"^expected String, got bytes b'x'$"),
    (Boolean, 1, r"^expected Boolean, got int 1$"),
    (Boolean, "true", r"^expected Boolean, got str 'true'$"),
    (IntegerRange, "x", r"^expected IntegerRange, got str 'x'$"),
    (FloatRange, "x", r"^expected FloatRange, got str 'x'$"),
    (Image, np.zeros((2, 2, 3), np.float32), r"dtype float32"),
    (Image, np.zeros((2, 2, 5), np.uint8), r"shape \(2, 2, 5\)"),
    (Image, np.zeros((2, 2, 3, 1), np.uint8), r"shape \(2, 2, 3, 1\)"),
    (Image, np.zeros((0, 2, 3), np.uint8), r"shape \(0, 2, 3\)"),
    (Image, [[1]], r"^expected Image, got list \[\[1\]\]$"),
    (BoundingBox, (2, 0, 1, 1), r"xmin <= xmax"),
    (BoundingBox, (0, 2, 1, 1), r"ymin <= ymax"),
    (Point, (1, 2, 3), r"Point takes 2 values \(x, y\), got 3"),
    (Point, "ab", r"^expected Point, got str 'ab'$"),
    (Point, {"x": 1}, r"Point needs the fields x, y"),
    (Point, {"x": 1, "y": 2, "z": 3}, r"unknown: z"),
    (Class, (1.5, "cat"), r"^\.id: expected Integer, got float 1.5$"),
    (List[Integer], "abc", r"^expected List\[Integer\], got str 'abc'$"),
    (List[Integer], {1, 2}, r"^expected List\[Integer\], got set"),
    (Dict[String, Float], [1], r"^expected Dict\[String, Float\], got list \[1\]$"),
]


@pytest.mark.parametrize(("tp", "value", "match"), REJECTED, ids=lambda v: repr(v)[:30])
def test_lossy_or_wrong_values_are_rejected_naming_the_expected_type(tp: Any, value: Any, match: str) -> None:
    with pytest.raises(InputValidationError, match=match) as info:
        coerce(tp, value)
    assert info.value.expected is not None


def test_errors_name_the_expected_type_in_an_attribute() -> None:
    with pytest.raises(InputValidationError) as info:
        Integer.coerce("abc")
    assert (info.value.expected, info.value.field) == ("Integer", None)
    with pytest.raises(InputValidationError) as info:
        List[Float].coerce(3)
    assert info.value.expected == "List[Float]"


def test_long_reprs_are_cut_in_error_messages() -> None:
    with pytest.raises(InputValidationError) as info:
        Integer.coerce("x" * 500)
    assert len(str(info.value)) < 100 and str(info.value).endswith("...")


def test_values_of_the_right_type_are_returned_unchanged() -> None:
    values: list[Any] = [
        Integer(1),
        Float(1.0),
        String("a"),
        Boolean(True),
        IntegerRange(1, min=0),
        FloatRange(0.5, max=1),
        Enum[String](options=["a"]),
        Image(np.zeros((1, 1, 1), np.uint8)),
        Point(1, 2),
        BoundingBox(0, 0, 1, 1),
        Class(1, "a"),
        Classes([(1, "a")]),
        List[Integer]([1]),
        Dict[String, Integer]({"a": 1}),
    ]
    for value in values:
        assert type(value).coerce(value) is value
        assert coerce(type(value), value) is value
        assert coerce(Optional[type(value)], value) is value


def test_boolean_keeps_to_zero_and_one() -> None:
    assert int(Boolean(5)) == 1 and Boolean() == False  # noqa: E712
    assert hash(Boolean(True)) == hash(True)
    assert pickle.loads(pickle.dumps(Boolean(True))) == True  # noqa: E712


# -- nested error paths --------------------------------------------------------------------------


def test_errors_inside_containers_carry_their_path() -> None:
    with pytest.raises(InputValidationError, match=r"^\[1\]: expected Integer, got str 'x'$") as info:
        List[Integer]([1, "x"])
    assert info.value.field == "[1]"
    assert info.value.expected == "Integer"
    with pytest.raises(InputValidationError) as info:
        coerce(List[BoundingBox], [(0, 0, 1, 1), (0, 0, 1, 1), {"xmin": "a", "ymin": 0, "xmax": 1, "ymax": 1}])
    assert info.value.field == "[2].xmin"
    with pytest.raises(InputValidationError) as info:
        coerce(Dict[String, List[BoundingBox]], {"cam": [(0, 0, 1, 1), (0, 0, "w", 1)]})
    assert info.value.field == "['cam'][1].xmax"
    assert str(info.value) == "['cam'][1].xmax: expected Float, got str 'w'"
    with pytest.raises(InputValidationError) as info:
        coerce(Dict[String, List[Integer]], {"key": [1.5]})
    assert info.value.field == "['key'][0]"
    with pytest.raises(InputValidationError) as info:
        coerce(List[List[Point]], [[], [(0, 0), (1, "y")]])
    assert info.value.field == "[1][1].y"


def test_errors_while_decoding_json_carry_their_path() -> None:
    with pytest.raises(InputValidationError) as info:
        from_json(Dict[String, List[Point]], {"a": [{"x": 1, "y": 2}, {"x": "1", "y": 2}]})
    assert info.value.field == "['a'][1].x"
    with pytest.raises(InputValidationError, match=r"^\[0\]: expected Class, got int 3$"):
        Classes.from_json([3])
    with pytest.raises(InputValidationError, match=r"\['a'\]: key: expected an integer key, got 'a'"):
        Dict[Integer, String].from_json({"a": "b"})


def test_bad_dict_keys_are_named() -> None:
    with pytest.raises(InputValidationError, match=r"^\['a'\]: key: expected Integer, got str 'a'$"):
        Dict[Integer, String]({"a": "b"})
    with pytest.raises(InputValidationError, match=r"^\[1\]: key: expected String, got int 1$"):
        Dict[String, String]({1: "b"})


# -- ranges --------------------------------------------------------------------------------------


def test_ranges_validate_their_bounds() -> None:
    with pytest.raises(InputValidationError, match=r"^11 is out of range \[0, 10\] for IntegerRange$") as info:
        IntegerRange(11, min=0, max=10)
    assert info.value.expected == "IntegerRange"
    with pytest.raises(InputValidationError, match=r"-1 is out of range \[0, inf\]"):
        IntegerRange(-1, min=0)
    with pytest.raises(InputValidationError, match=r"nan is out of range \[0.0, 1.0\] for FloatRange"):
        FloatRange(float("nan"), min=0.0, max=1.0)
    with pytest.raises(InputValidationError, match=r"bounds are empty: min 2.0 > max 1.0"):
        FloatRange(1.5, min=2.0, max=1.0)
    assert math.isnan(FloatRange(float("nan")))
    r = IntegerRange(5, min=0)
    assert (r + 1, r.min, r.max, repr(r)) == (6, 0, None, "IntegerRange(5, min=0, max=None)")


def test_ranges_take_their_bounds_from_like() -> None:
    declared = FloatRange(0.5, min=0.0, max=1.0)
    with pytest.raises(InputValidationError, match=r"1.5 is out of range \[0.0, 1.0\] for FloatRange"):
        FloatRange.coerce(1.5, like=declared)
    value = FloatRange.coerce(0.7, like=declared)
    assert (value, value.min, value.max) == (0.7, 0.0, 1.0)
    assert FloatRange.coerce(2.0).max is None
    wide = FloatRange(0.75, min=0.0, max=10.0)
    narrowed = FloatRange.coerce(wide, like=declared)
    assert narrowed is not wide and (narrowed, narrowed.max) == (0.75, 1.0)  # like's bounds win
    with pytest.raises(InputValidationError, match="out of range"):
        FloatRange.coerce(FloatRange(5.0, min=0.0, max=10.0), like=declared)
    assert FloatRange.coerce(wide) is wide  # without like, the value keeps its own
    assert FloatRange.from_json(0.25, like=declared).min == 0.0
    assert IntegerRange.from_json(3, like=IntegerRange(0, min=0, max=3)).max == 3
    with pytest.raises(InputValidationError, match=r"4 is out of range \[0, 3\]"):
        from_json(IntegerRange, 4, like=IntegerRange(0, min=0, max=3))


def test_range_schemas_carry_bounds_only_on_instances() -> None:
    declared = FloatRange(0.5, min=0.0, max=1.0)
    assert declared.json_schema() == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert json_schema(FloatRange, like=declared) == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert FloatRange.json_schema() == Float.json_schema()
    assert IntegerRange.json_schema() == {"type": "integer"}
    assert IntegerRange(1, min=1).json_schema() == {"type": "integer", "minimum": 1}
    assert json_schema(IntegerRange | None, like=IntegerRange(1, max=2)) == {
        "anyOf": [{"type": "integer", "maximum": 2}, {"type": "null"}]
    }
    half_open = FloatRange(1.0, min=0.0).json_schema()
    assert half_open == {"anyOf": [{"type": "number", "minimum": 0.0}, {"type": "string", "enum": ["Infinity"]}]}


def test_ranges_survive_pickle_and_deepcopy_with_their_bounds() -> None:
    for value in (FloatRange(0.5, min=0.0, max=1.0), IntegerRange(3, min=None, max=7)):
        for copied in (pickle.loads(pickle.dumps(value, protocol=5)), copy.deepcopy(value)):
            assert type(copied) is type(value) and copied == value
            assert (copied.min, copied.max) == (value.min, value.max)


# -- enums ---------------------------------------------------------------------------------------


def test_enums_select_the_first_option_by_default() -> None:
    declared = Enum[String](options=["fast", "accurate"])
    assert declared.selected == "fast" and type(declared.selected) is String
    assert declared.options == (String("fast"), String("accurate"))
    assert str(declared) == "fast"
    assert repr(declared) == "Enum[String](options=[String('fast'), String('accurate')], selected=String('fast'))"


def test_enums_validate_membership_and_take_options_from_like() -> None:
    declared = Enum[String](options=["fast", "accurate"])
    assert Enum[String].coerce("accurate", like=declared).options == ("fast", "accurate")
    with pytest.raises(InputValidationError, match=r"^slow is not one of the options: fast, accurate$") as info:
        Enum[String].coerce("slow", like=declared)
    assert info.value.expected == "Enum[String]"
    with pytest.raises(InputValidationError, match="c is not one of the options: a, b"):
        Enum[String](options=["a", "b"], selected="c")
    with pytest.raises(InputValidationError, match="expected String, got int 1"):
        Enum[String](options=["a", 1])
    with pytest.raises(InputValidationError, match="needs at least one option"):
        Enum[String](options=[])
    other = Enum[String](options=["accurate", "fast", "other"], selected="fast")
    moved = Enum[String].coerce(other, like=declared)
    assert moved.options == declared.options and moved.selected == "fast"
    assert Enum[String].from_json("accurate", like=declared).options == declared.options


def test_enums_without_like_hold_only_the_given_value() -> None:
    lone = Enum[Integer].coerce(3)
    assert lone.options == (Integer(3),) and lone.selected == 3
    assert Enum[Integer].from_json(4).options == (Integer(4),)
    explicit = Enum[Integer].from_json({"selected": 2, "options": [1, 2]})
    assert explicit.options == (1, 2) and explicit.selected == 2


def test_enums_compare_and_hash_like_their_selected_value() -> None:
    a = Enum[String](options=["a", "b"])
    assert a == "a" and a != "b"
    assert a == Enum[String](options=["b", "a"], selected="a")
    assert hash(a) == hash("a")
    lookup: dict[Any, int] = {a: 1}
    assert lookup["a"] == 1


def test_bare_enums_hold_any_values() -> None:
    bare: Enum[Any] = Enum(options=[String("a"), String("b")])
    assert bare.selected == "a" and type(bare).type_name() == "Enum"
    mixed: Enum[Any] = Enum(options=["a", 1, 2.5, True])
    assert [type(o) for o in mixed.options] == [String, Integer, Float, Boolean]
    assert Enum.json_schema() == {}
    assert mixed.json_schema() == {"enum": ["a", 1, 2.5, True]}


def test_enum_schemas_list_the_options_on_instances() -> None:
    declared = Enum[String](options=["fast", "accurate"])
    assert Enum[String].json_schema() == {"type": "string"}
    assert declared.json_schema() == {"type": "string", "enum": ["fast", "accurate"]}
    assert json_schema(Enum[String], like=declared) == {"type": "string", "enum": ["fast", "accurate"]}


def test_enum_parametrisation_needs_a_value_type() -> None:
    with pytest.raises(TypeError, match=r"Enum takes one rvai_sdk value type, e.g. Enum\[String\]"):
        Enum[str]


# -- geometry ------------------------------------------------------------------------------------


def test_records_expose_their_fields() -> None:
    box = BoundingBox(xmin=1, ymin=2, xmax=4, ymax=6)
    assert (box.xmin, box.ymin, box.xmax, box.ymax) == (1.0, 2.0, 4.0, 6.0)
    assert (box.width, box.height, box.area) == (3.0, 4.0, 12.0)
    assert type(box.xmin) is Float
    assert box.to_json() == {"xmin": 1.0, "ymin": 2.0, "xmax": 4.0, "ymax": 6.0}
    p = Point(1, 2)
    assert (p.x, p.y) == (1.0, 2.0) and type(p.x) is Float and p.to_json() == {"x": 1.0, "y": 2.0}
    c = Class(3, "cat")
    assert (c.id, c.name) == (3, "cat") and type(c.id) is Integer and type(c.name) is String
    assert repr(c) == "Class(id=3, name='cat')"
    labels = Classes([Class(0, "dog"), {"id": 1, "name": "cat"}])
    assert [label.name for label in labels] == ["dog", "cat"]
    assert all(type(label) is Class for label in labels)
    assert labels.type_name() == "Classes"


def test_classes_cannot_be_parametrised_again() -> None:
    with pytest.raises(TypeError, match="Classes is already parametrised"):
        Classes[Integer]
    with pytest.raises(TypeError, match=r"List\[Integer\] is already parametrised"):
        List[Integer][Float]


# -- containers ----------------------------------------------------------------------------------


def test_unparametrised_containers_say_how_to_parametrise() -> None:
    for call in (lambda: List.from_json([1]), lambda: List.json_schema(), lambda: List.fake()):
        with pytest.raises(TypeError, match=r"use List\[T\]"):
            call()
    for call in (lambda: Dict.from_json({}), lambda: Dict.json_schema(), lambda: Dict.fake()):
        with pytest.raises(TypeError, match=r"use Dict\[K, V\]"):
            call()
    assert List([Integer(1)]) == [1]
    with pytest.raises(InputValidationError, match="a bare List holds rvai_sdk values only"):
        List([1])


def test_parametrisation_rejects_what_json_cannot_express() -> None:
    with pytest.raises(TypeError, match=r"Dict keys must be String or Integer \(JSON object keys\), got Float"):
        Dict[Float, Integer]
    with pytest.raises(TypeError, match=r"Dict takes a key and a value type"):
        Dict[String]  # type: ignore[misc]
    with pytest.raises(TypeError, match="List takes one rvai_sdk value type"):
        List[int]


def test_integer_keys_become_decimal_strings_in_json() -> None:
    value = Dict[Integer, Float]({-3: 1, 10**20: 2})
    assert value.to_json() == {"-3": 1.0, str(10**20): 2.0}
    assert Dict[Integer, Float].from_json({"-3": 1.0}) == {-3: 1.0}
    assert all(type(k) is Integer for k in Dict[Integer, Float].from_json({"-3": 1.0, "4": 2}))


def test_container_reprs_show_their_type() -> None:
    assert repr(List[Integer]([1])) == "List[Integer]([Integer(1)])"
    assert repr(Dict[String, Integer]({"a": 1})) == "Dict[String, Integer]({String('a'): Integer(1)})"


# -- images --------------------------------------------------------------------------------------


def test_images_are_views_and_operations_return_plain_arrays() -> None:
    array = np.zeros((4, 5, 3), np.uint8)
    image = Image(array)
    assert np.shares_memory(image, array)
    assert Image.coerce(array).base is not None
    assert type(image + 1) is np.ndarray
    assert type(np.sqrt(image)) is np.ndarray
    assert type(image[1:3]) is np.ndarray
    assert type(image[..., 0]) is np.ndarray
    assert type(image.sum(axis=2)) is np.ndarray
    assert type(image.astype(np.float32)) is np.ndarray
    assert type(image.reshape(-1)) is np.ndarray and type(image.T) is np.ndarray
    assert type(np.transpose(image, (2, 0, 1))) is np.ndarray
    assert type(np.concatenate([image, image], axis=2)) is np.ndarray
    assert type(image.copy()) is Image
    assert type(Image(image[1:3])) is Image
    assert repr(image) == "Image(4x5x3 uint8)"


def test_two_dimensional_arrays_become_single_channel_images() -> None:
    grey = Image(np.arange(6, dtype=np.uint8).reshape(3, 2))
    assert grey.shape == (3, 2, 1)
    assert np.array_equal(Image.from_json(grey.to_json()), grey)


def test_image_json_accepts_data_urls_and_rejects_bad_input() -> None:
    image = Image(np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    url = "data:image/png;base64," + image.to_json()
    assert np.array_equal(Image.from_json(url), image)
    with pytest.raises(InputValidationError, match="invalid base64"):
        Image.from_json("***")
    with pytest.raises(InputValidationError, match="cannot decode"):
        Image.from_json(base64.b64encode(b"not an image").decode())
    with pytest.raises(InputValidationError, match="expected Image, got int 3; the JSON form is a base64 PNG string"):
        Image.from_json(3)


def test_images_survive_pickle_and_deepcopy() -> None:
    image = Image(np.random.default_rng(0).integers(0, 256, (3, 4, 2), dtype=np.uint8))
    for copied in (pickle.loads(pickle.dumps(image, protocol=5)), copy.deepcopy(image)):
        assert type(copied) is Image and np.array_equal(copied, image)


# -- optional annotations and the module-level helpers -------------------------------------------


def test_optional_types_accept_none() -> None:
    for optional in (Integer | None, Optional[Integer]):
        assert is_value_type(optional)
        assert coerce(optional, None) is None
        assert from_json(optional, None) is None
        assert type_name(optional) == "Integer | None"
        assert json_schema(optional) == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
        assert type(fake(optional)) is Integer
    assert to_json(None) is None
    assert not is_value_type(int) and not is_value_type(Integer | String) and not is_value_type(None)
    with pytest.raises(InputValidationError, match="expected Integer, got None"):
        coerce(Integer, None)
    with pytest.raises(InputValidationError, match="expected Integer, got null"):
        from_json(Integer, None)


def test_helpers_reject_annotations_that_are_not_value_types() -> None:
    for call in (lambda: coerce(int, 1), lambda: from_json(str, "a"), lambda: json_schema(float), lambda: fake(list)):
        with pytest.raises(TypeError, match="is not an rvai_sdk value type"):
            call()


def test_float_json_uses_strings_for_non_finite_values() -> None:
    assert [Float(v).to_json() for v in (math.nan, math.inf, -math.inf)] == ["NaN", "Infinity", "-Infinity"]
    assert math.isnan(Float.from_json("NaN")) and Float.from_json("-Infinity") == -math.inf
    with pytest.raises(InputValidationError, match="expected Float, got str 'nan'"):
        Float.from_json("nan")
    assert math.copysign(1, Float.from_json(-0.0)) == -1


SCHEMA_TYPES: list[Any] = [
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
    Dict[Integer, Float],
    Dict[String, List[Integer]],
    Enum[Integer],
    Integer | None,
]


@pytest.mark.parametrize("tp", SCHEMA_TYPES, ids=type_name)
def test_json_forms_validate_against_their_schemas(tp: Any) -> None:
    require_extra("jsonschema")
    jsonschema = importlib.import_module("jsonschema")  # untyped; imported by name to keep mypy quiet

    rng = np.random.default_rng(5)
    schema = json_schema(tp)
    jsonschema.Draft202012Validator.check_schema(schema)
    for _ in range(5):
        jsonschema.validate(to_json(fake(tp, rng)), schema)


def test_non_finite_floats_and_bounded_values_validate_against_their_schemas() -> None:
    require_extra("jsonschema")
    jsonschema = importlib.import_module("jsonschema")  # untyped; imported by name to keep mypy quiet

    for number in (math.nan, math.inf, -math.inf, -0.0):
        jsonschema.validate(Float(number).to_json(), Float.json_schema())
        jsonschema.validate(Point(number, 1).to_json(), Point.json_schema())
    declared = FloatRange(0.5, min=0.0, max=1.0)
    jsonschema.validate(declared.to_json(), declared.json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(1.5, declared.json_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("NaN", declared.json_schema())
    mode = Enum[String](options=["fast", "accurate"])
    jsonschema.validate("accurate", json_schema(Enum[String], like=mode))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("slow", json_schema(Enum[String], like=mode))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"x": 1}, Point.json_schema())
