"""The PNG codec: our encoder, the pure numpy decoder, and agreement with Pillow."""

from __future__ import annotations

import io
import struct
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types import Image
from rvai_sdk.types import _png
from tests.conftest import require_extra
from tests.unit.types._support import examples

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def png_with_filters(array: np.ndarray, filters: list[int]) -> bytes:
    """A PNG of ``array`` whose row ``y`` uses filter ``filters[y % len(filters)]``."""
    height, width, channels = array.shape
    stride = width * channels
    rows = []
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        line = array[y].reshape(-1).astype(np.int32)
        kind = filters[y % len(filters)]
        left = np.concatenate([np.zeros(channels, np.int32), line[:-channels]])
        upleft = np.concatenate([np.zeros(channels, np.int32), prev[:-channels]])
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
            filtered = line - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        rows.append(bytes([kind]) + (filtered % 256).astype(np.uint8).tobytes())
        prev = line
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    data = zlib.compress(b"".join(rows))
    # Split the data over two IDAT chunks, as encoders may.
    return (
        _png.SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", data[:5])
        + chunk(b"IDAT", data[5:])
        + chunk(b"IEND", b"")
    )


images = hnp.arrays(
    dtype=np.uint8, shape=st.tuples(st.integers(1, 10), st.integers(1, 10), st.sampled_from([1, 2, 3, 4]))
)


@examples
@given(images, st.lists(st.integers(0, 4), min_size=1, max_size=5))
def test_pure_decoder_handles_all_five_filters_and_every_colour_type(array: np.ndarray, filters: list[int]) -> None:
    assert np.array_equal(_png.decode(png_with_filters(array, filters)), array)


@examples
@given(images, st.integers(0, 9))
def test_encoder_output_decodes_to_the_same_array(array: np.ndarray, level: int) -> None:
    data = Image(array).to_png(compress_level=level)
    assert data.startswith(_png.SIGNATURE)
    assert np.array_equal(_png.decode(data), array)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_pillow_and_the_pure_decoder_give_identical_arrays(channels: int) -> None:
    require_extra("PIL")
    from PIL import Image as PILImage

    rng = np.random.default_rng(channels)
    array = rng.integers(0, 256, size=(17, 23, channels), dtype=np.uint8)
    array[5:9] = 200  # flat areas make Pillow pick varied filters
    buffer = io.BytesIO()
    picture = PILImage.fromarray(array.squeeze(-1) if channels == 1 else array, MODES[channels])
    picture.save(buffer, format="PNG", optimize=True)
    for data in (buffer.getvalue(), Image(array).to_png()):
        assert np.array_equal(_png.decode(data), array)
        assert np.array_equal(Image.from_bytes(data), array)
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(Image(array).to_png()))).reshape(array.shape), array)


def test_without_pillow_png_still_decodes_and_other_formats_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` raise ImportError
    image = Image(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    assert np.array_equal(Image.from_json(image.to_json()), image)
    assert np.array_equal(Image.from_bytes(png_with_filters(np.asarray(image), [4, 3])), image)
    with pytest.raises(InputValidationError, match=r"only PNG images can be decoded without Pillow.*pip install 'rvai_sdk\[image\]'"):
        Image.from_bytes(b"\xff\xd8\xff\xe0 a jpeg")


def test_jpeg_and_palette_images_decode_with_pillow() -> None:
    require_extra("PIL")
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 4), (10, 200, 30)).save(buffer, format="JPEG")
    assert Image.from_bytes(buffer.getvalue()).shape == (4, 8, 3)
    buffer = io.BytesIO()
    PILImage.new("P", (3, 2), 0).save(buffer, format="PNG")
    assert Image.from_bytes(buffer.getvalue()).shape == (2, 3, 3)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"GIF89a", "not a PNG file"),
        (_png.SIGNATURE, "no IHDR chunk"),
        (_png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 16, 0, 0, 0, 0)), "bit depth 16.*needs Pillow"),
        (_png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 3, 0, 0, 0)), "colour type 3.*needs Pillow"),
        (_png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 1)), "interlace 1.*needs Pillow"),
        (_png.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + chunk(b"IDAT", b"xx"), "corrupt"),
        (
            _png.SIGNATURE
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x01"))
            + chunk(b"IEND", b""),
            "wrong size",
        ),
        (
            _png.SIGNATURE
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x07\x01")),
            "unknown filter type 7",
        ),
    ],
    ids=["signature", "no-header", "16-bit", "palette", "interlaced", "corrupt", "short", "filter"],
)
def test_pure_decoder_rejects_what_it_cannot_read(data: bytes, match: str) -> None:
    with pytest.raises(InputValidationError, match=match):
        _png.decode(data)
