"""JSON from the network, parsed without letting its nesting exhaust the interpreter's stack.

:func:`json.loads` recurses once per nested array or object. A payload of 100,000 ``[`` stops at the
recursion limit with :class:`RecursionError`, but only after running the whole process at the brink
of it: a garbage collection, a ``weakref.finalize`` callback or a log handler that happens to run
meanwhile fails there instead, far from the payload that caused it (an "exception ignored" in some
unrelated object). :func:`loads` refuses such a payload before parsing it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

__all__ = ["MAX_JSON_DEPTH", "JsonTooDeep", "loads"]

#: The deepest nesting of arrays and objects :func:`loads` parses (serde_json's default too).
MAX_JSON_DEPTH = 128

# A JSON string, escapes included, or an unterminated one to the end of the input: every quote outside a
# string starts a match, so the scan is linear (had an unterminated string no match, the search would try
# again from each of its quotes: quadratic in a body of escaped quotes).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)', re.DOTALL)


class JsonTooDeep(ValueError):
    """A JSON document nests arrays and objects deeper than :data:`MAX_JSON_DEPTH`."""


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data``, brackets inside strings not counted.

    Examples:
        >>> depth(b'{"a": [[1], "]]]]"]}')
        3
    """
    view = np.frombuffer(_STRING.sub(b"", data), np.uint8)
    opening = (view == ord("[")) | (view == ord("{"))
    brackets = view[opening | (view == ord("]")) | (view == ord("}"))]  # far fewer than the body's bytes
    if not brackets.size:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int32)
    return max(0, int(np.cumsum(steps).max()))


def _openings(raw: bytes) -> int:
    """How many ``[`` and ``{`` ``raw`` holds (numpy past a few KB: several times quicker than ``bytes.count``)."""
    if len(raw) < 8192:
        return raw.count(b"[") + raw.count(b"{")
    view = np.frombuffer(raw, np.uint8)
    return int(np.count_nonzero((view == ord("[")) | (view == ord("{"))))


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """:func:`json.loads`, refusing a document nested deeper than :data:`MAX_JSON_DEPTH` before parsing it.

    Raises:
        JsonTooDeep: (a :class:`ValueError`) the document nests too deeply; the message gives the limit.
        ValueError: ``data`` is not JSON (:class:`json.JSONDecodeError`) or not UTF-8 text.

    Examples:
        >>> loads(b'{"x": [1, 2]}')
        {'x': [1, 2]}
        >>> loads(b"[" * 100_000)
        Traceback (most recent call last):
        ...
        rvai_sdk.types._json.JsonTooDeep: JSON nested deeper than 128 arrays or objects (the limit here)
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
        encoding = json.detect_encoding(raw)  # json.loads takes UTF-16 and UTF-32 bytes too: scan them as text
        if encoding not in ("utf-8", "utf-8-sig"):
            data = raw.decode(encoding)
            raw = data.encode("utf-8", "surrogatepass")
    # fewer opening brackets than the limit cannot nest deeper: the common case costs a count
    if _openings(raw) > MAX_JSON_DEPTH and depth(raw) > MAX_JSON_DEPTH:
        raise JsonTooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} arrays or objects (the limit here)")
    return json.loads(data if isinstance(data, str) else raw)
