"""Images are refused by their header's width and height before they are decoded (issue 12, bounded input)."""

from __future__ import annotations

import base64
import io
import struct
import sys
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from rvai_sdk.data import Inputs
from rvai_sdk.exc import InputValidationError
from rvai_sdk.types import Image, _image_header, _png
from tests.conftest import require_extra

pytestmark = pytest.mark.timeout(60)


def chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def grey_png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A greyscale PNG header of ``width`` x ``height``; ``idat`` defaults to a valid all-black image."""
    if idat is None:
        packer = zlib.compressobj(9)
        idat = b"".join(packer.compress(bytes(width + 1)) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return _png.SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF) is rewritten to claim ``width`` x ``height``."""
    require_extra("PIL")
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out, format="JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_the_header_gives_width_and_height_of_png_and_jpeg_files() -> None:
    assert _image_header.dimensions(Image(np.zeros((3, 5, 3), np.uint8)).to_png()) == (5, 3)
    assert _image_header.dimensions(jpeg_claiming(12000, 9000)) == (12000, 9000)
    assert _image_header.dimensions(b"GIF89a....") is None
    assert _image_header.dimensions(_png.SIGNATURE + b"\x00\x00") is None  # cut short: left to the decoder


def test_a_png_or_jpeg_over_the_limit_is_refused_naming_its_size_and_the_limit() -> None:
    with pytest.raises(InputValidationError, match=r"12000x12000 \(144000000 pixels\).*limit of 33554432"):
        Image.from_bytes(grey_png(12000, 12000, idat=b""))  # the header alone decides
    with pytest.raises(InputValidationError, match="12000x9000"):
        Image.from_bytes(jpeg_claiming(12000, 9000))
    with pytest.raises(InputValidationError, match="12000x12000") as raised:
        Image.from_json(base64.b64encode(grey_png(12000, 12000, idat=b"")).decode())
    assert raised.value.expected == "Image"


def test_other_formats_are_checked_from_pillows_header_before_decoding() -> None:
    require_extra("PIL")
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(np.zeros((20, 30, 3), np.uint8)).save(out, format="BMP")
    with Image.pixel_limit(599), pytest.raises(InputValidationError, match="30x20"):
        Image.from_bytes(out.getvalue())
    with Image.pixel_limit(600):
        assert Image.from_bytes(out.getvalue()).shape == (20, 30, 3)


def test_the_limit_is_set_per_type_and_per_block_of_code() -> None:
    picture = Image(np.zeros((4, 5, 1), np.uint8)).to_png()

    class Thumbnail(Image):
        max_pixels = 19

    with pytest.raises(InputValidationError, match="limit of 19 pixels"):
        Thumbnail.from_bytes(picture)
    assert Image.from_bytes(picture).shape == (4, 5, 1)
    with Image.pixel_limit(19), pytest.raises(InputValidationError, match="limit of 19 pixels"):
        Image.from_bytes(picture)
    with Image.pixel_limit(20):
        assert Image.from_bytes(picture).shape == (4, 5, 1)
    with Image.pixel_limit(None):
        assert Thumbnail.from_bytes(Image(np.zeros((2, 2, 1), np.uint8)).to_png()).shape == (2, 2, 1)


def test_a_data_class_names_the_field_whose_image_is_too_large() -> None:
    @dataclass
    class Frames(Inputs):
        frame: Image = Inputs.field()

    encoded = base64.b64encode(grey_png(12000, 12000, idat=b"")).decode()
    with pytest.raises(InputValidationError, match="12000x12000") as raised:
        Frames.from_json({"frame": encoded})
    assert raised.value.field is not None and "frame" in raised.value.field


def test_without_pillow_a_png_that_inflates_beyond_its_header_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    packer = zlib.compressobj(9)
    bomb = packer.compress(bytes(50 * (1 << 20))) + packer.flush()  # 50 MiB of zeros behind a 2x2 header
    with pytest.raises(InputValidationError, match="wrong size"):
        Image.from_bytes(grey_png(2, 2, idat=bomb))
    with pytest.raises(InputValidationError, match="12000x12000"):
        Image.from_bytes(grey_png(12000, 12000, idat=b""))
    assert Image.from_bytes(grey_png(3, 2)).shape == (2, 3, 1)
