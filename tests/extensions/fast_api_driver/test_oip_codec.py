"""The Open Inference Protocol's type mapping, alone (no server): each row of the guide's table, both ways."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.extensions.drivers.http.errors import HTTPError
from rvai_sdk.extensions.drivers.http.oip import V2Codec, V2Request
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Boolean, Classes, Float, FloatRange, Image, Integer, List, String, Tensor


@dataclass
class AllIn(Inputs):
    anything: Tensor = Inputs.field()
    complex_: Tensor[np.complex64] = Inputs.field()
    image: Image = Inputs.field()
    flag: Boolean = Inputs.field()
    names: List[String] = Inputs.field()
    classes: Classes = Inputs.field()
    ratio: FloatRange = Inputs.field(default=FloatRange(0.5, min=0.0, max=1.0))
    maybe: Integer | None = Inputs.field(default=None)


@dataclass
class AllOut(Outputs):
    height: Integer = Outputs.field()
    ratio: Float = Outputs.field()


class Everything(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: AllIn) -> AllOut:
        return AllOut(height=Integer(inputs.image.shape[0]), ratio=Float(inputs.ratio))


def pipeline() -> Pipeline:
    pf = PipelineFactory(name="every-type")
    cell = pf.add_cell(ref="c", cell=Everything())
    for port in ("anything", "complex_", "image", "flag", "ratio", "names", "classes", "maybe"):
        pf.declare_input(ref=port, input=getattr(cell.inputs, port))
    for port in ("height", "ratio"):
        pf.declare_output(ref=port, output=getattr(cell.outputs, port))
    return pf.build()


CODEC = V2Codec(pipeline())
PNG = Image(np.full((3, 2, 3), 7, np.uint8)).to_png()


def tensors(**override: dict[str, Any] | None) -> list[dict[str, Any]]:
    base: dict[str, dict[str, Any] | None] = {
        "anything": {"datatype": "INT16", "shape": [2, 2], "data": [1, 2, 3, 4]},
        "complex_": {"datatype": "BYTES", "shape": [1], "data": [json.dumps({"dtype": "complex64", "shape": [1], "data": "AACAPwAAAEA="})]},
        "image": {"datatype": "UINT8", "shape": [1, 2, 2, 1], "data": [1, 2, 3, 4]},
        "flag": {"datatype": "BOOL", "shape": [1], "data": [True]},
        "ratio": {"datatype": "FP32", "shape": [1], "data": [0.25]},
        "names": {"datatype": "BYTES", "shape": [1], "data": ['["a", "b"]']},
        "classes": {"datatype": "BYTES", "shape": [1], "data": ['[{"id": 3, "name": "cat"}]']},
    }
    base.update(override)
    return [{"name": name, **t} for name, t in base.items() if t is not None]


def decode(inputs: list[dict[str, Any]], binary: bytes = b"", **request: Any) -> V2Request:
    head = json.dumps({"inputs": inputs, **request}).encode()
    return CODEC.request(head + binary, str(len(head)) if binary else None, max_sid_length=64, max_image_pixels=None)


def error(inputs: list[dict[str, Any]], binary: bytes = b"", **request: Any) -> str:
    with pytest.raises(HTTPError) as caught:
        decode(inputs, binary, **request)
    assert caught.value.status == 400
    return str(caught.value)


def test_metadata_describes_each_type_as_the_guides_table_says() -> None:
    meta = {t["name"]: (t["datatype"], t["shape"]) for t in CODEC.model_metadata()["inputs"]}
    assert meta == {
        "anything": ("FP32", [-1]),
        "complex_": ("BYTES", [1]),
        "image": ("UINT8", [-1, -1, -1]),
        "flag": ("BOOL", [1]),
        "ratio": ("FP64", [1]),
        "names": ("BYTES", [1]),
        "classes": ("BYTES", [1]),
        "maybe": ("INT64", [1]),
    }
    maybe = CODEC.model_metadata()["inputs"][-1]["parameters"]
    assert maybe == {"rvai_type": "Integer | None", "optional": True}


def test_every_kind_of_input_decodes_to_its_typed_value_and_an_optional_one_may_be_left_out() -> None:
    inputs = decode(tensors()).inputs
    assert type(inputs["anything"]) is Tensor and inputs["anything"].dtype == np.int16
    assert inputs["anything"].tolist() == [[1, 2], [3, 4]]
    assert inputs["complex_"].tolist() == [1 + 2j]
    assert isinstance(inputs["image"], Image) and inputs["image"].shape == (2, 2, 1)  # the batch of one dropped
    assert inputs["flag"] is not None and bool(inputs["flag"]) and isinstance(inputs["flag"], Boolean)
    assert isinstance(inputs["ratio"], FloatRange) and inputs["ratio"] == 0.25
    assert inputs["names"] == ["a", "b"] and inputs["classes"][0].name == "cat"
    assert inputs["maybe"] is None


def test_binary_data_inputs_and_bytes_elements_split_by_their_lengths() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    png = struct.pack("<I", len(PNG)) + PNG
    request = decode(
        tensors(image={"datatype": "UINT8", "shape": [2, 2, 3], "parameters": {"binary_data_size": 12}}), image.tobytes()
    )
    np.testing.assert_array_equal(request.inputs["image"], image)
    assert "is 12 bytes, binary_data_size is 11" in error(
        tensors(image={"datatype": "UINT8", "shape": [2, 2, 3], "parameters": {"binary_data_size": 11}}), image.tobytes()[:11]
    )
    as_file = decode(tensors(image={"datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(png)}}), png)
    assert as_file.inputs["image"].shape == (3, 2, 3)
    assert "runs past the tensor's end" in error(
        tensors(image={"datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 8}}), png[:8]
    )
    assert "no input's binary_data_size claims" in error(tensors(), b"\0\0")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"flag": {"datatype": "INT64", "shape": [1], "data": [1]}}, "input 'flag' (Boolean) takes datatype BOOL, got INT64"),
        ({"ratio": {"datatype": "FP64", "shape": [1], "data": [2.0]}}, "input 'ratio'"),
        ({"ratio": {"datatype": "FP64", "shape": [2], "data": [0.1, 0.2]}}, "input 'ratio' (FloatRange) is one value"),
        ({"image": {"datatype": "UINT8", "shape": [4], "data": [1, 2, 3, 4]}}, "input 'image' (Image) has shape [H, W, C]"),
        ({"image": {"datatype": "BF16", "shape": [1], "data": [1]}}, "datatype 'BF16' is not taken"),
        ({"names": {"datatype": "BYTES", "shape": [1], "data": ["not json"]}}, "input 'names' (List[String]) is BYTES holding its JSON form"),
        ({"names": {"datatype": "BYTES", "shape": [1], "data": ["[1]"]}}, "input 'names[0]'"),
        ({"classes": None}, "missing input 'classes'"),
        ({"anything": {"datatype": "INT8", "shape": [1], "data": [300]}}, "input 'anything': a value does not fit INT8"),
        ({"anything": {"datatype": "INT8", "shape": [1]}}, "input 'anything': the tensor has neither 'data'"),
        # each of these was a 500
        ({"flag": {"datatype": [], "shape": [1], "data": [True]}}, "input 'flag': datatype [] is not taken"),
        ({"names": {"datatype": "BYTES", "shape": [1], "data": ["\ud800"]}}, "input 'names': a BYTES string is not valid Unicode"),
        ({"maybe": {"datatype": "UINT64", "shape": [1], "data": [2**64 - 1]}}, "is an INT64; 18446744073709551615 is out of its range"),
    ],
)
def test_a_bad_input_is_a_400_naming_it(override: dict[str, Any], message: str) -> None:
    assert message in error(tensors(**override))


def test_a_bad_header_length_or_an_endless_timeout_is_a_400() -> None:
    head = json.dumps({"inputs": tensors()}).encode()
    with pytest.raises(HTTPError, match="Inference-Header-Content-Length") as caught:
        CODEC.request(head, "\u00b2", max_sid_length=64, max_image_pixels=None)  # '²' is a digit to str.isdigit
    assert caught.value.status == 400
    assert "'timeout' must be microseconds > 0, got Infinity" in error(tensors(), parameters={"timeout": float("inf")})


def test_sequence_parameters_become_the_sid_and_its_start_and_end() -> None:
    request = decode(tensors(), parameters={"sequence_id": 12, "sequence_start": True, "timeout": 2_000_000})
    assert (request.sid, request.start, request.end, request.timeout) == ("12", True, False, 2.0)
    assert decode(tensors(), parameters={"sid": "cam-1", "sequence_end": True}).sid == "cam-1"
    assert decode(tensors(), parameters={"sequence_id": 0}).sid is None
    assert "needs a 'sequence_id'" in error(tensors(), parameters={"sequence_end": True})
    assert "differ" in error(tensors(), parameters={"sequence_id": 1, "sid": "2"})
    assert "more than the 64" in error(tensors(), parameters={"sequence_id": "x" * 65})


def test_outputs_answer_as_json_or_binary_data_as_requested() -> None:
    outputs = {"height": Integer(3), "ratio": Float(0.5)}
    body, head = CODEC.response(V2Request(inputs={}, outputs={"height": False, "ratio": True}), outputs)
    assert head is not None
    answer = json.loads(body[:head])
    assert answer["outputs"] == [
        {"name": "height", "datatype": "INT64", "shape": [1], "data": [3]},
        {"name": "ratio", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}},
    ]
    assert np.frombuffer(body[head:], "<f8").tolist() == [0.5]
    body, head = CODEC.response(V2Request(inputs={}, outputs={"height": False}, id="a"), outputs)
    assert head is None and json.loads(body)["id"] == "a" and len(json.loads(body)["outputs"]) == 1
