"""``ModelInferRequest`` ↔ the pipeline's typed inputs and outputs, through the transport-neutral V2 codec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rvai_sdk.extensions.drivers._v2 import VERSION, V2Codec, V2Error, V2Request, _join_bytes, _numeric_json, encode_output

if TYPE_CHECKING:
    from .proto import rvai_sdk_inference_pb2 as pb

__all__ = ["decode_request", "encode_response", "parameter_value", "check_model"]

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The ``InferTensorContents`` field that holds each datatype's typed contents (FP16 has none: raw only)."""


def parameter_value(parameter: Any) -> Any:
    """An ``InferParameter``'s value (``None`` when none of its choices is set)."""
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def _parameters(entries: Mapping[str, Any]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in entries.items()}


def check_model(codec: V2Codec, name: str, version: str) -> None:
    """Refuse another model or version.

    Raises:
        V2Error: 404 naming the model or version, and the one served.
    """
    if name != codec.name:
        raise V2Error(404, f"no model {name!r}; this server serves the model {codec.name!r}")
    if version not in ("", VERSION):
        raise V2Error(404, f"model {codec.name!r} has no version {version!r}; its one version is {VERSION!r}")


def decode_request(
    codec: V2Codec, request: pb.ModelInferRequest, *, max_sid_length: int, max_image_pixels: int | None
) -> V2Request:
    """A ``ModelInferRequest`` → its typed inputs, sid and deadline, as the HTTP route decodes its JSON.

    Raises:
        V2Error: 404 for another model or version; 400 naming the offending input, output or parameter.
    """
    check_model(codec, request.model_name, request.model_version)
    raws = request.raw_input_contents
    if raws and len(raws) != len(request.inputs):
        raise V2Error(
            400,
            f"raw_input_contents has {len(raws)} entries for {len(request.inputs)} inputs; send one per input, "
            "in the order of the inputs (or none, and each input's contents)",
        )
    obj: dict[str, Any] = {
        "parameters": _parameters(request.parameters),
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "parameters": _parameters(t.parameters)}
            for t in request.inputs
        ],
    }
    if request.id:
        obj["id"] = request.id
    if request.outputs:
        obj["outputs"] = [{"name": o.name, "parameters": _parameters(o.parameters)} for o in request.outputs]

    def raw_of(i: int, where: str, tensor: Mapping[str, Any]) -> memoryview | None:
        message = request.inputs[i]
        has_contents = message.HasField("contents")
        if raws:
            if has_contents:
                raise V2Error(400, f"{where}: give its data in 'contents' or in raw_input_contents, not both")
            return memoryview(raws[i])
        field = _CONTENTS.get(message.datatype)
        if field is None:  # the codec names the datatype it does not take
            return memoryview(b"")
        if not has_contents:
            raise V2Error(400, f"{where}: the tensor has no data; send it in raw_input_contents or in 'contents'")
        values = list(getattr(message.contents, field))
        if message.datatype == "BYTES":
            return memoryview(_join_bytes(values))
        return memoryview(_numeric_json(values, message.datatype, where).tobytes())

    return codec.decode(obj, raw_of, max_sid_length=max_sid_length, max_image_pixels=max_image_pixels)


def encode_response(codec: V2Codec, request: V2Request, outputs: Mapping[str, Any], pb: Any) -> Any:
    """The ``ModelInferResponse`` for ``request``: each requested output (an output that is ``None`` left out)
    in ``raw_output_contents``, as Triton answers.

    Args:
        codec: the model.
        request: the decoded request (its outputs, id and sid).
        outputs: output ref → value, as the pipeline answered.
        pb: the generated ``rvai_sdk_inference_pb2`` module.
    """
    response = pb.ModelInferResponse(model_name=codec.name, model_version=VERSION, id=request.id or "")
    if request.sid is not None:
        response.parameters["sequence_id"].string_param = request.sid
    for ref in request.outputs:
        value = outputs.get(ref)
        if value is None:
            continue
        tensor, raw = encode_output(ref, value, True)
        response.outputs.add(name=ref, datatype=tensor["datatype"], shape=tensor["shape"])
        response.raw_output_contents.append(raw or b"")
    return response
