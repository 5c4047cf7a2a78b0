"""JSON from the network, parsed without letting its nesting exhaust the interpreter's stack.

:func:`json.loads` recurses once per nested array or object. A payload of 100,000 ``[`` stops at the
recursion limit with :class:`RecursionError`, but only after running the whole process at the brink
of it: a garbage collection, a ``weakref.finalize`` callback or a log handler that happens to run
meanwhile fails there instead, far from the payload that caused it (an "exception ignored" in some
unrelated object). :func:`loads` refuses such a payload before parsing it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["MAX_JSON_DEPTH", "JsonTooDeep", "loads"]

#: The deepest nesting of arrays and objects :func:`loads` parses (serde_json's default too).
MAX_JSON_DEPTH = 128

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPENING, _CLOSING = (ord("["), ord("{")), (ord("]"), ord("}"))


class JsonTooDeep(ValueError):
    """A JSON document nests arrays and objects deeper than :data:`MAX_JSON_DEPTH`."""


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data``, brackets inside strings not counted.

    One pass of vectorised comparisons, then work on the quotes, backslashes and brackets alone: linear in
    the size whatever the body (a regular expression over the strings cost a match per string, and retried
    from every quote of an unterminated one). A string left open runs to the end.

    Examples:
        >>> depth(b'{"a": [[1], "]]]]"]}')
        3
    """
    view = np.frombuffer(data, np.uint8)
    quotes = np.flatnonzero(view == _QUOTE)
    if quotes.size and data.find(b"\\") >= 0:  # drop the escaped quotes: an odd run of backslashes before
        backslashes = np.flatnonzero(view == _BACKSLASH)
        breaks = np.flatnonzero(np.diff(backslashes) != 1)
        starts = backslashes[np.concatenate(([0], breaks + 1))]
        ends = backslashes[np.concatenate((breaks, [backslashes.size - 1]))]
        run = np.searchsorted(ends, quotes - 1)  # the run of backslashes that could end just before each quote
        found = run < ends.size
        before = np.zeros(quotes.size, np.int64)
        hit = found.copy()
        hit[found] = ends[run[found]] == quotes[found] - 1
        before[hit] = ends[run[hit]] - starts[run[hit]] + 1
        quotes = quotes[before % 2 == 0]
    at = np.flatnonzero(
        (view == _OPENING[0]) | (view == _OPENING[1]) | (view == _CLOSING[0]) | (view == _CLOSING[1])
    )
    at = at[np.searchsorted(quotes, at) % 2 == 0]  # outside strings: an even number of real quotes before
    if not at.size:
        return 0
    kind = view[at]
    steps = np.where((kind == _OPENING[0]) | (kind == _OPENING[1]), 1, -1).astype(np.int32)
    return max(0, int(np.cumsum(steps).max()))


def _openings(raw: bytes) -> int:
    """How many ``[`` and ``{`` ``raw`` holds (numpy past a few KB: several times quicker than ``bytes.count``)."""
    if len(raw) < 8192:
        return raw.count(b"[") + raw.count(b"{")
    view = np.frombuffer(raw, np.uint8)
    return int(np.count_nonzero((view == _OPENING[0]) | (view == _OPENING[1])))


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
