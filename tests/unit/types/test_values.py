"""Value behaviour, coercion tables, error messages with paths, schemas and the PNG codec."""

from __future__ import annotations

import base64
import io
import sys
from typing import Any

import jsonschema
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
    is_value_type,
    json_schema,
    to_json,
    type_name,
)
from rvai_sdk.types import _png
from tests.conftest import require_extra


def test_values_behave_like_what_they_wrap() -> None:
    assert Integer(2) + 1 == 3
    assert isinstance(Integer(2), int) and isinstance(Float(1.5), float) and isinstance(String("a"), str)
    assert String("ab").upper() == "AB"
    assert Boolean(True) == True  # noqa: E712
    assert bool(Boolean(False)) is False
    assert f"{Integer(3)} {Float(0.25)} {String('x')} {Boolean(True)}" == "3 0.25 x True"
    assert repr(Integer(3)) == "Integer(3)"
    assert Point(1, 2) == (1.0, 2.0)
    assert List[Integer]([1]) == [1]
    assert Enum[String](options=["a", "b"], selected="b") == "b"
    assert Image(np.zeros((2, 2, 3), np.uint8)).sum() == 0


ACCEPTED: list[tuple[Any, Any, Any]] = [
    (Integer, 3, 3),
    (Integer, np.int64(3), 3),
    (Integer, 4.0, 4),
    (Float, 2, 2.0),
    (Float, np.float32(0.5), 0.5),
    (String, "x", "x"),
    (String, np.str_("y"), "y"),
    (Boolean, True, True),
    (Boolean, np.bool_(False), False),
    (Point, [1, 2], (1.0, 2.0)),
    (Point, {"x": 1, "y": 2}, (1.0, 2.0)),
    (BoundingBox, (0, 0, 1, 2), (0.0, 0.0, 1.0, 2.0)),
    (Class, {"id": 1, "name": "cat"}, (1, "cat")),
    (List[Float], (1, 2.5), [1.0, 2.5]),
    (Dict[String, Integer], {"a": 1}, {"a": 1}),
]


@pytest.mark.parametrize(("tp", "value", "expected"), ACCEPTED, ids=lambda v: repr(v)[:30])
def test_lossless_plain_values_are_coerced(tp: Any, value: Any, expected: Any) -> None:
    result = coerce(tp, value)
    assert isinstance(result, tp)
    assert result == expected


REJECTED: list[tuple[Any, Any, str]] = [
    (Integer, True, r"expected Integer, got bool True"),
    (Integer, 1.5, r"expected Integer, got float 1.5"),
    (Integer, "1", r"expected Integer, got str '1'"),
    (Integer, float("nan"), r"expected Integer, got float nan"),
    (Float, False, r"expected Float, got bool"),
    (Float, "0.5", r"expected Float, got str"),
    (String, 5, r"expected String, got int 5"),
    (Boolean, 1, r"expected Boolean, got int 1"),
    (Image, np.zeros((2, 2, 3), np.float32), r"dtype float32"),
    (Image, np.zeros((2, 2, 5), np.uint8), r"shape \(2, 2, 5\)"),
    (Image, [[1]], r"expected Image, got list"),
    (BoundingBox, (2, 0, 1, 1), r"xmin <= xmax"),
    (Point, (1, 2, 3), r"Point takes 2 values \(x, y\), got 3"),
    (List[Integer], "abc", r"expected List\[Integer\], got str"),
    (Dict[String, Float], [1], r"expected Dict\[String, Float\], got list"),
    (FloatRange, "x", r"expected Float"),
]


@pytest.mark.parametrize(("tp", "value", "match"), REJECTED, ids=lambda v: repr(v)[:30])
def test_lossy_or_wrong_values_are_rejected_naming_the_expected_type(tp: Any, value: Any, match: str) -> None:
    with pytest.raises(InputValidationError, match=match):
        coerce(tp, value)


def test_errors_inside_containers_carry_their_path() -> None:
    with pytest.raises(InputValidationError, match=r"^\[1\]: expected Integer, got str 'x'$") as info:
        List[Integer]([1, "x"])
    assert info.value.field == "[1]"
    with pytest.raises(InputValidationError) as info:
        coerce(Dict[String, List[BoundingBox]], {"cam": [(0, 0, 1, 1), (0, 0, "w", 1)]})
    assert info.value.field == "['cam'][1].xmax"
    assert str(info.value).startswith("['cam'][1].xmax: expected Float, got str 'w'")
    with pytest.raises(InputValidationError, match=r"key: expected Integer"):
        Dict[Integer, String]({"a": "b"})
    with pytest.raises(InputValidationError, match=r"\['a'\]: key: expected an integer key"):
        Dict[Integer, String].from_json({"a": "b"})


def test_ranges_validate_bounds_and_take_them_from_like() -> None:
    declared = FloatRange(0.5, min=0.0, max=1.0)
    with pytest.raises(InputValidationError, match=r"1.5 is out of range \[0.0, 1.0\] for FloatRange"):
        FloatRange.coerce(1.5, like=declared)
    value = FloatRange.coerce(0.7, like=declared)
    assert (value, value.min, value.max) == (0.7, 0.0, 1.0)
    assert FloatRange.coerce(2.0).max is None
    with pytest.raises(InputValidationError, match=r"11 is out of range \[0, 10\]"):
        IntegerRange(11, min=0, max=10)
    assert IntegerRange(5, min=0) + 1 == 6
    assert json_schema(FloatRange, like=declared) == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert FloatRange.json_schema() == {"type": "number"}


def test_enums_validate_membership_and_take_options_from_like() -> None:
    declared = Enum[String](options=["fast", "accurate"])
    assert declared.selected == "fast"
    assert Enum[String].coerce("accurate", like=declared).options == ("fast", "accurate")
    with pytest.raises(InputValidationError, match="slow is not one of the options: fast, accurate"):
        Enum[String].coerce("slow", like=declared)
    assert json_schema(Enum[String], like=declared) == {"type": "string", "enum": ["fast", "accurate"]}
    bare = Enum(options=["a", 1])
    assert bare.options == (String("a"), Integer(1))
    assert hash(declared) == hash("fast")


def test_images_are_views_and_operations_return_plain_arrays() -> None:
    array = np.zeros((4, 5, 3), np.uint8)
    image = Image(array)
    assert np.shares_memory(image, array)
    assert type(image + 1) is np.ndarray
    assert type(image[1:3]) is np.ndarray
    assert type(image.astype(np.float32)) is np.ndarray
    assert type(image.reshape(-1)) is np.ndarray and type(image.T) is np.ndarray
    assert type(np.transpose(image, (2, 0, 1))) is np.ndarray
    assert type(image.copy()) is Image
    assert Image(np.zeros((3, 2), np.uint8)).shape == (3, 2, 1)
    assert repr(image) == "Image(4x5x3 uint8)"


def test_image_json_accepts_data_urls_and_rejects_bad_base64() -> None:
    image = Image(np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    url = "data:image/png;base64," + image.to_json()
    assert np.array_equal(Image.from_json(url), image)
    with pytest.raises(InputValidationError, match="invalid base64"):
        Image.from_json("***")
    with pytest.raises(InputValidationError, match="cannot decode image"):
        Image.from_json(base64.b64encode(b"not an image").decode())


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_pure_png_decoder_matches_pillow_for_every_filter(channels: int) -> None:
    require_extra("PIL")
    from PIL import Image as PILImage

    rng = np.random.default_rng(channels)
    array = rng.integers(0, 256, size=(17, 23, channels), dtype=np.uint8)
    array[5:9] = 200  # flat areas make Pillow pick varied filters
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    buffer = io.BytesIO()
    PILImage.fromarray(array.squeeze(-1) if channels == 1 else array, mode).save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    assert np.array_equal(_png.decode(data), array)
    assert np.array_equal(Image.from_bytes(data), array)
    assert np.array_equal(_png.decode(_png.encode(array)), array)


def test_all_five_png_filters_decode() -> None:
    import struct
    import zlib

    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, size=(10, 6, 3), dtype=np.uint8)
    rows = []
    prev = np.zeros(18, np.int32)
    for y in range(10):
        line = array[y].reshape(-1).astype(np.int32)
        kind = y % 5
        left = np.concatenate([np.zeros(3, np.int32), line[:-3]])
        upleft = np.concatenate([np.zeros(3, np.int32), prev[:-3]])
        if kind == 0:
            filtered = line
        elif kind == 1:
            filtered = line - left
        elif kind == 2:
            filtered = line - prev
        elif kind == 3:
            filtered = line - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            filtered = line - pred
        rows.append(bytes([kind]) + (filtered % 256).astype(np.uint8).tobytes())
        prev = line
    raw = zlib.compress(b"".join(rows))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    png = _png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 10, 8, 2, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    assert np.array_equal(_png.decode(png), array)


def test_without_pillow_png_still_decodes_and_other_formats_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    image = Image(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    assert np.array_equal(Image.from_json(image.to_json()), image)
    with pytest.raises(InputValidationError, match=r"pip install 'rvai_sdk\[image\]'"):
        Image.from_bytes(b"\xff\xd8\xff\xe0 a jpeg")


def test_jpeg_uploads_decode_with_pillow() -> None:
    require_extra("PIL")
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 4), (10, 200, 30)).save(buffer, format="JPEG")
    image = Image.from_bytes(buffer.getvalue())
    assert image.shape == (4, 8, 3)


SCHEMA_TYPES: list[Any] = [
    Integer,
    Float,
    String,
    Boolean,
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
    rng = np.random.default_rng(5)
    schema = json_schema(tp)
    for _ in range(5):
        value = fake(tp, rng)
        jsonschema.validate(to_json(value), schema)
    if tp is Float:
        jsonschema.validate(Float(1.0).to_json(), schema)


def test_optional_types_accept_none() -> None:
    assert is_value_type(Integer | None) and not is_value_type(int)
    assert coerce(Integer | None, None) is None
    assert type_name(List[Integer] | None) == "List[Integer] | None"
    with pytest.raises(InputValidationError, match="expected Integer, got None"):
        coerce(Integer, None)
    assert json_schema(Integer | None) == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_unparametrised_containers_say_how_to_parametrise() -> None:
    with pytest.raises(TypeError, match=r"use List\[T\]"):
        List.from_json([1])
    with pytest.raises(TypeError, match=r"Dict keys must be String or Integer"):
        Dict[Float, Integer]
    with pytest.raises(TypeError, match="List takes one rvai_sdk value type"):
        List[int]
    assert List([Integer(1)]) == [1]
    with pytest.raises(InputValidationError, match="a bare List holds rvai_sdk values only"):
        List([1])


def test_classes_and_boxes_expose_their_fields() -> None:
    box = BoundingBox(xmin=1, ymin=2, xmax=4, ymax=6)
    assert (box.xmin, box.ymax, box.width, box.height, box.area) == (1, 6, 3.0, 4.0, 12.0)
    labels = Classes([Class(0, "dog"), {"id": 1, "name": "cat"}])
    assert [c.name for c in labels] == ["dog", "cat"]
    assert labels.type_name() == "Classes"
    assert all(issubclass(t, Value) for t in (Point, BoundingBox, Class, Classes))
