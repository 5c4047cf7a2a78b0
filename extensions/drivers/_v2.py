"""The pipeline as an Open Inference Protocol (KServe V2) model, whatever the transport: decoding
requests, encoding answers.

The HTTP routes (``drivers/http/oip``) and the gRPC service (``drivers/grpc``) both decode
and encode through :class:`V2Codec`, so a type maps the same way over both; the mapping
table is in ``rvai_sdk.extensions.drivers.http.oip``'s docstring and the guide. A bad
request raises :class:`V2Error` (its ``status`` is HTTP's: 400, 404...), which each
transport turns into its own error form.

The types and wire forms the codec works with live in :mod:`~rvai_sdk.extensions.drivers._v2_types`:
:class:`V2Error`, the datatypes (``DATATYPES``, :func:`datatype_of`), how a pipeline port maps
onto a tensor, compact JSON, and the helpers that read and write a tensor's contents
(``BYTES`` elements, numbers from JSON, shapes, boolean parameters). This module re-exports the
names the transports import from it (``V2Error``, ``DATATYPES``, ``datatype_of``, ``_join_bytes``,
``_numeric_json``), so they keep importing them from here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import rvai_sdk
from rvai_sdk import types as rtypes
from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._json import loads as bounded_json

from ._v2_types import (
    DATATYPES,
    V2Error,
    _ACCEPTS,
    _Port,
    _bad,
    _flag,
    _flatten_strings,
    _join_bytes as _join_bytes,
    _numeric_json as _numeric_json,
    _port,
    _shape,
    _split_bytes,
    _tensor_metadata,
    datatype_of,
    json_type,
    tensor_json_bytes,
)

if TYPE_CHECKING:
    from rvai_sdk.pipeline.graph import Pipeline

__all__ = ["V2Codec", "V2Error", "V2Request", "DATATYPES", "EXTENSIONS", "VERSION", "datatype_of", "encode_output"]

_INT64 = np.iinfo(np.int64)
"""An Integer input's range (its metadata says INT64)."""

VERSION = "1"
"""The one version every pipeline answers as."""

EXTENSIONS = ["binary_tensor_data", "parameters", "sequence"]
"""What ``GET /v2`` lists: the binary-data extension, request parameters, sequences (sids)."""


# -- requests -------------------------------------------------------------------------------------------


@dataclass
class V2Request:
    """One decoded inference request.

    Attributes:
        inputs: the typed inputs, as ``Pipeline.validate_inputs`` returns them.
        sid: the request's sid (``sequence_id`` or ``sid``), ``None`` for a one-off request.
        start: ``sequence_start``: drop the sid's state before the request.
        end: ``sequence_end``: drop the sid's state once the request is answered.
        timeout: the deadline in seconds from the ``timeout`` parameter (``None``: none given).
        id: the request's ``id``, echoed in the answer.
        outputs: output ref → sent as binary data; every output when the request names none.
    """

    inputs: dict[str, Any]
    sid: str | None = None
    start: bool = False
    end: bool = False
    timeout: float | None = None
    id: str | None = None
    outputs: dict[str, bool] = field(default_factory=dict)


class V2Codec:
    """The pipeline as a V2 model: metadata, and requests and answers with JSON tensors or binary data.

    Args:
        pipeline: the pipeline served.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.name = pipeline.name
        self.inputs = {ref: _port(spec.type) for ref, spec in pipeline.inputs.items()}
        self.outputs = {ref: _port(spec.type) for ref, spec in pipeline.outputs.items()}

    # -- metadata ----------------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return {"name": "rvai_sdk", "version": rvai_sdk.__version__, "extensions": EXTENSIONS}

    def model_metadata(self) -> dict[str, Any]:
        """``GET /v2/models/{name}``: inputs and outputs as tensors (``parameters.rvai_type`` names the type)."""
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": "rvai_sdk",
            "inputs": [_tensor_metadata(ref, port) for ref, port in self.inputs.items()],
            "outputs": [_tensor_metadata(ref, port) for ref, port in self.outputs.items()],
        }

    def model_config(self) -> dict[str, Any]:
        """``GET /v2/models/{name}/config``: Triton's configuration form (no batch dimension; sequences by sid)."""

        def tensors(ports: Mapping[str, _Port]) -> list[dict[str, Any]]:
            return [{"name": ref, "data_type": f"TYPE_{p.datatype if p.datatype != 'BYTES' else 'STRING'}", "dims": p.shape} for ref, p in ports.items()]

        return {
            "name": self.name,
            "platform": "rvai_sdk",
            "backend": "rvai_sdk",
            "version_policy": {"specific": {"versions": [VERSION]}},
            "max_batch_size": 0,
            "input": tensors(self.inputs),
            "output": tensors(self.outputs),
            "sequence_batching": {},
        }

    # -- requests ---------------------------------------------------------------------------------

    def request(
        self,
        body: bytes,
        header_length: str | None,
        *,
        max_sid_length: int,
        max_image_pixels: int | None,
    ) -> V2Request:
        """An inference request's body → its typed inputs and parameters.

        Args:
            body: the whole body.
            header_length: the ``Inference-Header-Content-Length`` header: the JSON part's
                size, the rest being the inputs' binary data (``None``: all JSON).
            max_sid_length: the longest sid accepted.
            max_image_pixels: the most pixels of an image input (``None``: ``Image.max_pixels``).

        Raises:
            V2Error: 400 naming the offending input, output or parameter.
        """
        if header_length is None:
            head, binary = body, memoryview(b"")
        else:
            digits = header_length.strip()
            if not (digits.isascii() and digits.isdigit()) or int(digits) > len(body):
                raise _bad(
                    f"header Inference-Header-Content-Length must be the size of the JSON part, at most the body's "
                    f"{len(body)} bytes; got {header_length!r}"
                )
            size = int(digits)
            head, binary = body[:size], memoryview(body)[size:]
        try:
            obj = bounded_json(head)
        except (ValueError, RecursionError) as exc:  # RecursionError: a backstop, the depth is checked first
            raise _bad(f"the inference request is not valid JSON: {exc}") from exc
        offset = 0

        def raw_of(i: int, where: str, tensor: Mapping[str, Any]) -> memoryview | None:
            nonlocal offset
            params = tensor.get("parameters") or {}
            size = params.get("binary_data_size")
            if size is None:
                if "data" not in tensor:
                    raise _bad(f"{where}: the tensor has neither 'data' nor parameters.binary_data_size")
                return None
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise _bad(f"{where}: 'binary_data_size' must be a number of bytes >= 0")
            if offset + size > len(binary):
                raise _bad(
                    f"{where}: 'binary_data_size' is {size} bytes, but only {len(binary) - offset} bytes of binary "
                    "data are left in the body"
                )
            offset += size
            return binary[offset - size : offset]

        def rest() -> None:
            if offset != len(binary):
                raise _bad(f"the body has {len(binary) - offset} bytes of binary data that no input's binary_data_size claims")

        return self.decode(obj, raw_of, rest, max_sid_length=max_sid_length, max_image_pixels=max_image_pixels)

    def decode(
        self,
        obj: Any,
        raw_of: Callable[[int, str, Mapping[str, Any]], memoryview | None],
        done: Callable[[], None] | None = None,
        *,
        max_sid_length: int,
        max_image_pixels: int | None,
    ) -> V2Request:
        """A request in the protocol's JSON form (``id``, ``parameters``, ``inputs``, ``outputs``) → its typed inputs.

        Each transport brings the tensors' contents its own way: ``raw_of(i, where, tensor)``
        returns the raw (binary) contents of the ``i``-th input tensor, or ``None`` when the
        tensor carries them as JSON ``data``; ``done()`` is called after the last input (e.g.
        to refuse binary data that no input claims).

        Args:
            obj: the request object.
            raw_of: the raw contents of an input tensor, or ``None``.
            done: called once every input was read.
            max_sid_length: the longest sid accepted.
            max_image_pixels: the most pixels of an image input (``None``: ``Image.max_pixels``).

        Raises:
            V2Error: 400 naming the offending input, output or parameter.
        """
        if not isinstance(obj, dict):
            raise _bad(f"the inference request must be a JSON object, got {json_type(obj)}")
        request_id = obj.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise _bad(f"'id' must be a string, got {json_type(request_id)}")
        parameters = obj.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise _bad(f"'parameters' must be an object, got {json_type(parameters)}")
        result = V2Request(inputs={}, id=request_id)
        result.sid, result.start, result.end = self._sequence(parameters, max_sid_length)
        timeout = parameters.get("timeout")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
                raise _bad(f"request parameter 'timeout' must be microseconds > 0, got {json.dumps(timeout)[:40]}")
            result.timeout = float(timeout) / 1e6
        result.outputs = self._requested(obj.get("outputs"), _flag(parameters, "binary_data_output"))
        with rtypes.Image.pixel_limit(max_image_pixels):
            result.inputs = self._inputs(obj.get("inputs"), raw_of, done)
        return result

    def _sequence(self, parameters: Mapping[str, Any], max_sid_length: int) -> tuple[str | None, bool, bool]:
        sequence_id = parameters.get("sequence_id", 0)
        if isinstance(sequence_id, bool) or not isinstance(sequence_id, (int, str)) or (
            isinstance(sequence_id, int) and sequence_id < 0
        ):
            raise _bad(f"request parameter 'sequence_id' must be an integer >= 0 or a string, got {json.dumps(sequence_id)[:40]}")
        named = parameters.get("sid")
        if named is not None and not isinstance(named, str):
            raise _bad(f"request parameter 'sid' must be a string, got {json_type(named)}")
        sid: str | None = str(sequence_id) if sequence_id not in (0, "") else None
        if named:
            if sid is not None and sid != named:
                raise _bad(f"request parameters 'sid' ({named!r}) and 'sequence_id' ({sid!r}) differ; give one")
            sid = named
        start, end = _flag(parameters, "sequence_start"), _flag(parameters, "sequence_end")
        if sid is None and (start or end):
            raise _bad("sequence_start or sequence_end needs a 'sequence_id' (or 'sid') that is not 0")
        if sid is not None and len(sid) > max_sid_length:
            raise _bad(
                f"the sid in field 'parameters.sequence_id' has {len(sid)} characters, more than the {max_sid_length} "
                "this server takes; use a shorter id (e.g. a hash of it), or raise the driver parameter max_sid_length"
            )
        return sid, start, end

    def _requested(self, outputs: Any, binary_default: bool) -> dict[str, bool]:
        if outputs is None:
            return {ref: binary_default for ref in self.outputs}
        if not isinstance(outputs, list):
            raise _bad(f"'outputs' must be a list of {{\"name\": ...}} objects, got {json_type(outputs)}")
        requested: dict[str, bool] = {}
        for i, item in enumerate(outputs):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise _bad(f"outputs[{i}] must be an object with a 'name' string")
            if name not in self.outputs:
                raise _bad(
                    f"model {self.name!r} has no output {name!r}; its outputs are: {', '.join(self.outputs) or '(none)'}"
                )
            params = item.get("parameters") or {}
            if not isinstance(params, dict):
                raise _bad(f"output {name!r}: 'parameters' must be an object")
            if "classification" in params:
                raise _bad(f"output {name!r}: the classification extension is not supported; request the output itself")
            requested[name] = _flag(params, "binary_data") if "binary_data" in params else binary_default
        return requested

    def _inputs(
        self,
        tensors: Any,
        raw_of: Callable[[int, str, Mapping[str, Any]], memoryview | None],
        done: Callable[[], None] | None,
    ) -> dict[str, Any]:
        if not isinstance(tensors, list):
            raise _bad(f"'inputs' must be a list of tensors, got {json_type(tensors)}")
        values: dict[str, Any] = {}
        for i, tensor in enumerate(tensors):
            name = tensor.get("name") if isinstance(tensor, dict) else None
            if not isinstance(name, str):
                raise _bad(f"inputs[{i}] must be a tensor object with a 'name' string")
            assert isinstance(tensor, dict)
            if name not in self.inputs:
                raise _bad(f"model {self.name!r} has no input {name!r}; its inputs are: {', '.join(self.inputs) or '(none)'}")
            if name in values:
                raise _bad(f"input {name!r} is given twice")
            where = f"input {name!r}"
            params = tensor.get("parameters") or {}
            if not isinstance(params, dict):
                raise _bad(f"{where}: 'parameters' must be an object")
            values[name] = self._value(name, tensor, raw_of(i, where, tensor))
        if done is not None:
            done()
        for ref, port in self.inputs.items():
            if ref not in values:
                if port.optional:
                    values[ref] = None
                    continue
                raise _bad(
                    f"missing input {ref!r} ({port.datatype} {port.shape}, {port.type_name}); "
                    f"the inputs are: {', '.join(self.inputs)}"
                )
        try:
            return self.pipeline.validate_inputs(values)
        except InputValidationError as exc:
            raise _bad(str(exc)) from exc

    def _value(self, name: str, tensor: dict[str, Any], raw: memoryview | None) -> Any:
        """One V2 tensor → the plain value of pipeline input ``name`` (typed by ``validate_inputs`` after)."""
        port = self.inputs[name]
        where = f"input {name!r}"
        datatype = tensor.get("datatype")
        shape = _shape(where, tensor)
        if not isinstance(datatype, str) or datatype == "BF16" or (datatype not in DATATYPES and datatype != "BYTES"):
            raise _bad(f"{where}: datatype {datatype!r} is not taken; use one of {', '.join([*DATATYPES, 'BYTES'])}")
        accepted = _ACCEPTS.get(port.kind)
        if port.kind == "tensor":
            accepted = {port.datatype} if port.dtype is not None else set(DATATYPES)
        if accepted is not None and datatype not in accepted:
            raise _bad(
                f"{where} ({port.type_name}) takes datatype {port.datatype}"
                + (f" (or {', '.join(sorted(accepted - {port.datatype}))})" if len(accepted) > 1 else "")
                + f", got {datatype}"
            )
        count = math.prod(shape)
        if datatype == "BYTES":
            items = _split_bytes(raw, where) if raw is not None else _flatten_strings(tensor["data"], where)
            if len(items) != count:
                raise _bad(f"{where}: shape {list(shape)} holds {count} elements, the data has {len(items)}")
            if count != 1:
                raise _bad(f"{where} ({port.type_name}) is one BYTES element (shape [1]), got shape {list(shape)}")
            return self._from_bytes(name, where, items[0])
        if raw is not None:
            dtype = DATATYPES[str(datatype)]
            if len(raw) != count * dtype.itemsize:
                raise _bad(
                    f"{where}: shape {list(shape)} of {datatype} is {count * dtype.itemsize} bytes, "
                    f"binary_data_size is {len(raw)}"
                )
            array = np.frombuffer(raw, dtype).copy()  # writable, as a value from any other route is
        else:
            array = _numeric_json(tensor["data"], str(datatype), where)
            if array.size != count:
                raise _bad(f"{where}: shape {list(shape)} holds {count} elements, the data has {array.size}")
        array = array.reshape(shape)
        if port.kind in ("integer", "float", "boolean"):
            if array.size != 1:
                raise _bad(f"{where} ({port.type_name}) is one value (shape [1]), got shape {list(shape)}")
            value = array.reshape(-1)[0].item()
            if port.kind == "integer" and not _INT64.min <= value <= _INT64.max:  # a UINT64 past INT64's range
                raise _bad(f"{where} ({port.type_name}) is an INT64; {value} is out of its range")
            return value
        if port.kind == "image":
            if array.ndim == 4 and len(array) == 1:  # a batch of one
                array = array[0]
            if array.ndim not in (2, 3):
                raise _bad(f"{where} (Image) has shape [H, W, C] (or [H, W]), got {list(shape)}")
            return array
        if port.kind == "json":  # complex Tensor types only reach here as BYTES
            raise _bad(f"{where} ({port.type_name}) is BYTES holding its JSON form")
        return array

    def _from_bytes(self, name: str, where: str, item: bytes) -> Any:
        port = self.inputs[name]
        if port.kind == "image":
            try:
                return rtypes.Image.from_bytes(item)
            except InputValidationError as exc:
                raise _bad(f"{where}: the BYTES element is not an image file: {exc}") from exc
            except Exception as exc:
                raise _bad(f"{where}: the BYTES element is not an image file: {type(exc).__name__}: {exc}") from exc
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(f"{where}: the BYTES element is not UTF-8 text: {exc}") from exc
        if port.kind == "string":
            return text
        try:
            obj = bounded_json(text)
        except (ValueError, RecursionError) as exc:
            raise _bad(f"{where} ({port.type_name}) is BYTES holding its JSON form; it is not JSON: {exc}") from exc
        spec = self.pipeline.inputs[name]
        try:
            return rtypes.from_json(spec.type, obj, like=spec.like)
        except InputValidationError as exc:
            path = name + (exc.field or "")
            raise _bad(f"input {path!r} ({port.type_name}): {exc.detail}") from exc
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise _bad(f"{where} ({port.type_name}): {type(exc).__name__}: {exc}") from exc

    # -- answers ---------------------------------------------------------------------------------

    def response(self, request: V2Request, outputs: Mapping[str, Any]) -> tuple[bytes, int | None]:
        """The answer's body, and the size of its JSON part when binary data follow (``None``: all JSON)."""
        tensors: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for ref, binary in request.outputs.items():
            value = outputs.get(ref)
            if value is None:
                continue
            tensor, raw = encode_output(ref, value, binary)
            tensors.append(tensor)
            if raw is not None:
                chunks.append(raw)
        answer: dict[str, Any] = {"model_name": self.name, "model_version": VERSION, "outputs": tensors}
        if request.id is not None:
            answer["id"] = request.id
        if request.sid is not None:
            answer["parameters"] = {"sequence_id": request.sid}
        head = tensor_json_bytes(answer)
        if not chunks:
            return head, None
        return b"".join([head, *chunks]), len(head)


def encode_output(ref: str, value: Any, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """One output value → its V2 tensor (and its binary data when ``binary``)."""
    item: Any
    if isinstance(value, np.ndarray) and datatype_of(value.dtype) is not None:
        array = np.asarray(value).view(np.ndarray)
        datatype = str(datatype_of(array.dtype))
        shape = list(array.shape)
        if binary:
            data = np.ascontiguousarray(array, DATATYPES[datatype]).tobytes()
            return {"name": ref, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(data)}}, data
        return {"name": ref, "datatype": datatype, "shape": shape, "data": array.reshape(-1).tolist()}, None
    if isinstance(value, rtypes.Boolean) or isinstance(value, (bool, np.bool_)):
        datatype, item = "BOOL", bool(value)
    elif isinstance(value, rtypes.Integer):
        datatype, item = "INT64", int(value)
    elif isinstance(value, rtypes.Float):
        datatype, item = "FP64", float(value)
    elif isinstance(value, rtypes.String):
        datatype, item = "BYTES", str(value)
    else:
        datatype, item = "BYTES", json.dumps(rtypes.to_json(value), separators=(",", ":"), allow_nan=False)
    if not binary:
        return {"name": ref, "datatype": datatype, "shape": [1], "data": [item]}, None
    if datatype == "BYTES":
        data = _join_bytes([str(item).encode("utf-8")])
    else:
        data = np.asarray([item], DATATYPES[datatype]).tobytes()
    return {"name": ref, "datatype": datatype, "shape": [1], "parameters": {"binary_data_size": len(data)}}, data


