"""The Open Inference Protocol's types and wire forms, shared by the V2 codec and its transports.

What :mod:`~rvai_sdk.extensions.drivers._v2` decodes and encodes with, apart from the codec itself:

- :class:`V2Error`, a request the protocol refuses (``status`` is HTTP's), and :func:`json_type`
  that names a JSON value in its messages;
- compact JSON (:func:`json_bytes`, and :func:`tensor_json_bytes` that writes non-finite floats
  as Triton does);
- the datatypes: :data:`DATATYPES` (V2 name → numpy dtype) and :func:`datatype_of`;
- how one pipeline port maps onto a tensor (``_port``: its datatype, shape and ``rvai_type``;
  ``_ACCEPTS``: the datatypes an input of each kind takes; ``_tensor_metadata``);
- a tensor's contents on the wire: ``BYTES`` elements from JSON strings or length-prefixed binary
  data (``_flatten_strings``, ``_split_bytes``, ``_join_bytes``), numbers from JSON ``data``
  checked against their datatype (``_numeric_json``), and a request's ``shape`` and boolean
  parameters (``_shape``, ``_flag``).

The names the transports use are re-exported by ``_v2``; import them from there.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rvai_sdk import types as rtypes

__all__ = ["V2Error", "DATATYPES", "datatype_of", "json_type", "json_bytes", "tensor_json_bytes"]


class V2Error(Exception):
    """A request the protocol refuses: ``status`` is the HTTP status (400 bad request, 404 no such model...).

    Args:
        status: the HTTP status; the gRPC service maps it to a status code.
        message: what is wrong, naming the input, output, parameter or model.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_type(obj: Any) -> str:
    """How a JSON value is named in messages: ``an object``, ``an array``, ``a string``..."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number"
    )


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def json_bytes(obj: Any) -> bytes:
    """Compact JSON, no NaN (one encoder for every answer: ``json.dumps`` with options makes one per call)."""
    return _ENCODER.encode(obj).encode()


_TENSOR_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=True)


def tensor_json_bytes(obj: Any) -> bytes:
    """Compact JSON of an answer with tensor data: a non-finite float is written as the token ``NaN``,
    ``Infinity`` or ``-Infinity``, as Triton writes it (its clients, and Python's ``json``, read them back);
    JSON has no number for them."""
    return _TENSOR_ENCODER.encode(obj).encode()


# -- datatypes ---------------------------------------------------------------------------------------


DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""The V2 numeric datatypes and their little-endian numpy dtypes (``BYTES`` is the other one; BF16 is not taken)."""

_NAMES = {(dtype.kind, dtype.itemsize): name for name, dtype in DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any]) -> str | None:
    """The V2 datatype of a numpy dtype (``None``: none, e.g. complex numbers).

    Example:
        >>> datatype_of(np.dtype(np.float32)), datatype_of(np.dtype(bool)), datatype_of(np.dtype(complex))
        ('FP32', 'BOOL', None)
    """
    return _NAMES.get((dtype.kind, dtype.itemsize))


def _bad(message: str) -> V2Error:
    return V2Error(400, message)


# -- how one pipeline port maps onto a tensor --------------------------------------------------------


@dataclass(frozen=True)
class _Port:
    """How a pipeline input or output maps onto a V2 tensor."""

    kind: str  # tensor, image, integer, float, boolean, string, json
    datatype: str
    shape: list[int]
    type_name: str
    optional: bool
    dtype: np.dtype[Any] | None = None  # tensor: the dtype every value has


def _port(tp: Any) -> _Port:
    base, optional = rtypes.unwrap_optional(tp)
    name = rtypes.type_name(tp)
    if isinstance(base, type) and issubclass(base, rtypes.Tensor):
        dtype = base.expected_dtype
        datatype = datatype_of(dtype) if dtype is not None else None
        shape = [-1] if base.expected_shape is None else [-1 if d is None else d for d in base.expected_shape]
        if dtype is not None and datatype is None:  # complex: no V2 datatype, sent as JSON
            return _Port("json", "BYTES", [1], name, optional)
        return _Port("tensor", datatype or "FP32", shape, name, optional, dtype)
    if isinstance(base, type) and issubclass(base, rtypes.Image):
        return _Port("image", "UINT8", [-1, -1, -1], name, optional)
    if isinstance(base, type) and issubclass(base, rtypes.Boolean):
        return _Port("boolean", "BOOL", [1], name, optional)
    if isinstance(base, type) and issubclass(base, rtypes.Integer):
        return _Port("integer", "INT64", [1], name, optional)
    if isinstance(base, type) and issubclass(base, rtypes.Float):
        return _Port("float", "FP64", [1], name, optional)
    if isinstance(base, type) and issubclass(base, rtypes.String):
        return _Port("string", "BYTES", [1], name, optional)
    return _Port("json", "BYTES", [1], name, optional)


_ACCEPTS = {  # the datatypes an input of each kind takes
    "integer": {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"},
    "float": {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"},
    "boolean": {"BOOL"},
    "string": {"BYTES"},
    "json": {"BYTES"},
    "image": {"UINT8", "BYTES"},
}


def _tensor_metadata(ref: str, port: _Port) -> dict[str, Any]:
    parameters: dict[str, Any] = {"rvai_type": port.type_name}
    if port.kind == "json":
        parameters["content_type"] = "application/json"
    elif port.kind == "string":
        parameters["content_type"] = "text/plain; charset=utf-8"
    if port.optional:
        parameters["optional"] = True
    return {"name": ref, "datatype": port.datatype, "shape": port.shape, "parameters": parameters}


# -- a tensor's contents on the wire -----------------------------------------------------------------


def _flag(parameters: Mapping[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"request parameter {key!r} must be a boolean, got {json_type(value)}")
    return value


def _shape(where: str, obj: Mapping[str, Any]) -> tuple[int, ...]:
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _bad(f"{where}: 'shape' must be a list of sizes >= 0, got {json.dumps(shape)[:80]}")
    return tuple(shape)


def _flatten_strings(data: Any, where: str) -> list[bytes]:
    out: list[bytes] = []
    stack = [data]
    while stack:  # iterative: a deeply nested list cannot exhaust the stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            try:
                out.append(item.encode("utf-8"))
            except UnicodeEncodeError as exc:  # a lone surrogate, which JSON's \u escapes can carry
                raise _bad(f"{where}: a BYTES string is not valid Unicode text: {exc}") from None
        else:
            raise _bad(f"{where}: BYTES data in JSON are strings, got {json_type(item)}")
    return out


def _split_bytes(raw: bytes | memoryview, where: str) -> list[bytes]:
    """A binary BYTES tensor: each element a 4-byte little-endian length, then that many bytes."""
    view = memoryview(raw)
    items, offset = [], 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise _bad(f"{where}: a BYTES element's 4-byte length is cut off at byte {offset}")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise _bad(f"{where}: a BYTES element of {length} bytes runs past the tensor's end")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def _join_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _numeric_json(data: Any, datatype: str, where: str) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[datatype]
    try:
        loose = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise _bad(f"{where}: 'data' is not a list of numbers: {exc}") from exc
    if loose.size == 0:
        return np.zeros(0, dtype)
    kind = loose.dtype.kind
    allowed = "b" if datatype == "BOOL" else ("iu" if dtype.kind in "iu" else "iuf")
    if kind not in allowed:
        expected = {"b": "booleans", "iu": "integers", "iuf": "numbers"}[allowed]
        raise _bad(f"{where}: {datatype} data are {expected}, got {loose.dtype.kind!r}-kind values such as {loose.flat[0]!r}")
    if dtype.kind in "iu" and loose.dtype != dtype:  # converted once, from the array: its range checked first
        info = np.iinfo(dtype)
        low, high = loose.min(), loose.max()
        if low < info.min or high > info.max:
            raise _bad(f"{where}: a value does not fit {datatype} ({info.min}..{info.max}): {low if low < info.min else high}")
    return loose.astype(dtype, copy=False).reshape(-1)
