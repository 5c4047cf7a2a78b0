"""An image file's width and height, read from its header (PNG ``IHDR``, JPEG ``SOF``) without decoding it."""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_STANDALONE = frozenset((0x01, 0xD8, *range(0xD0, 0xD8)))


def dimensions(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG or JPEG header; ``None`` for other formats or a header cut short.

    Examples:
        >>> dimensions(PNG_SIGNATURE + struct.pack(">I4sII", 13, b"IHDR", 12000, 9000))
        (12000, 9000)
        >>> dimensions(b"GIF89a") is None
        True
    """
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    return None


def _png(data: bytes) -> tuple[int, int] | None:
    header = data[len(PNG_SIGNATURE) : len(PNG_SIGNATURE) + 16]
    if len(header) < 16 or header[4:8] != b"IHDR":
        return None
    width, height = struct.unpack(">II", header[8:16])
    return int(width), int(height)


def _jpeg(data: bytes) -> tuple[int, int] | None:
    pos = 2
    size = len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return None  # not at a marker: a corrupt file, left to the decoder
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > size:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None
