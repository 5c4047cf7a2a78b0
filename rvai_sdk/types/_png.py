"""A small PNG codec: numpy + zlib encoding, and a pure decoder used when Pillow is absent."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from rvai_sdk.exc import InputValidationError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {v: k for k, v in _COLOR_TYPE.items()}


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)


def encode(array: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode an HxWxC uint8 array (C in 1..4) as PNG, filter type 0 on every row."""
    height, width, channels = array.shape
    raw = np.empty((height, 1 + width * channels), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = np.ascontiguousarray(array).reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), compress_level)) + _chunk(b"IEND", b"")


def _bad(reason: str) -> InputValidationError:
    return InputValidationError(f"cannot decode PNG: {reason}", expected="Image")


def decode(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced grey/grey+alpha/RGB/RGBA PNG into an HxWxC uint8 array."""
    if not data.startswith(SIGNATURE):
        raise _bad("not a PNG file")
    pos = len(SIGNATURE)
    header = None
    idat = []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        if len(payload) != length:
            raise _bad("truncated chunk")
        pos += 12 + length
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif tag == b"IDAT":
            idat.append(payload)
        elif tag == b"IEND":
            break
    if header is None:
        raise _bad("no IHDR chunk")
    width, height, depth, color_type, _, _, interlace = header
    if depth != 8 or interlace != 0 or color_type not in _CHANNELS:
        raise _bad(
            f"bit depth {depth}, colour type {color_type}, interlace {interlace} needs Pillow: pip install 'rvai_sdk[image]'"
        )
    channels = _CHANNELS[color_type]
    stride = width * channels
    expected = height * (stride + 1)
    try:  # never more than the header promises: compressed data cannot inflate beyond it
        raw = np.frombuffer(zlib.decompressobj().decompress(b"".join(idat), expected + 1), dtype=np.uint8)
    except zlib.error as exc:
        raise _bad(f"corrupt image data ({exc})") from exc
    if raw.size != expected:
        raise _bad("image data has the wrong size")
    raw = raw.reshape(height, stride + 1)
    out = np.empty((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind = int(raw[y, 0])
        line = raw[y, 1:]
        if kind == 0:
            cur = line
        elif kind == 1:
            cur = np.cumsum(line.reshape(width, channels), axis=0, dtype=np.uint8).reshape(stride)
        elif kind == 2:
            cur = line + prev
        elif kind in (3, 4):
            cur = _sequential(kind, line.tolist(), prev.tolist(), channels)
        else:
            raise _bad(f"unknown filter type {kind}")
        out[y] = cur
        prev = out[y]
    return out.reshape(height, width, channels)


def _sequential(kind: int, line: list[int], prev: list[int], bpp: int) -> np.ndarray:
    cur = [0] * len(line)
    for i, value in enumerate(line):
        left = cur[i - bpp] if i >= bpp else 0
        up = prev[i]
        if kind == 3:
            cur[i] = (value + ((left + up) >> 1)) & 0xFF
        else:
            upper_left = prev[i - bpp] if i >= bpp else 0
            p = left + up - upper_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
            predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else upper_left)
            cur[i] = (value + predictor) & 0xFF
    return np.array(cur, dtype=np.uint8)
