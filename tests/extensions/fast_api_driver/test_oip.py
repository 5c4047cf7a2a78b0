"""The Open Inference Protocol (KServe V2) on FastAPIDriver: Triton's own HTTP client against a real server.

One server on the local runtime (a real inference process and driver process) serves
the module; ``tritonclient.http`` drives it as it would drive Triton, and plain httpx
requests pin the wire format.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import BoundingBox, Detections, Dict, Float, Image, Integer, String, Tensor

from tests.conftest import IN_CI
from tests.extensions._sequences import check_quickstart_sequences, check_sequences

try:  # the test extra; CI installs it, and a missing one fails there
    import tritonclient.http as tritonclient_http
    from tritonclient.utils import InferenceServerException
except ImportError:
    if IN_CI:
        raise
    pytest.skip("tritonclient[http] is not installed (the test extra)", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)

MODEL = "oip-test"


@dataclass
class FrameIn(Inputs):
    image: Image = Inputs.field(name="Image", description="a camera frame")
    features: Tensor[np.float32, (None, 4)] = Inputs.field(name="Features", description="one row of 4 per object")
    x: Integer = Inputs.field(name="X", description="a number; negative makes the cell fail")
    label: String = Inputs.field(name="Label")
    box: BoundingBox = Inputs.field(name="Box")


@dataclass
class FrameOut(Outputs):
    flipped: Image = Outputs.field(name="Flipped", description="the frame, mirrored left to right")
    doubled: Tensor[np.float32, (None, 4)] = Outputs.field(name="Doubled")
    count: Integer = Outputs.field(name="Count", description="requests this sid has sent")
    total: Integer = Outputs.field(name="Total", description="sum of x over this sid's requests")
    mean: Float = Outputs.field(name="Mean", description="mean pixel value")
    shout: String = Outputs.field(name="Shout")
    info: Dict[String, Integer] = Outputs.field(name="Info")
    found: Detections = Outputs.field(name="Found", description="the box as one detection")


@dataclass
class Tally(State):
    count: Integer = State.field(default=Integer(0))
    total: Integer = State.field(default=Integer(0))


@cell(state=Tally)
class Frame(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameIn) -> FrameOut:
        if inputs.x < 0:
            raise ValueError(f"negative x {inputs.x}")
        context.state.count = Integer(context.state.count + 1)
        context.state.total = Integer(context.state.total + inputs.x)
        image = np.asarray(inputs.image)
        box = inputs.box
        return FrameOut(
            flipped=Image(np.ascontiguousarray(image[:, ::-1])),
            doubled=np.asarray(inputs.features) * 2,
            count=context.state.count,
            total=context.state.total,
            mean=Float(float(image.mean())),
            shout=String(inputs.label.upper()),
            info=Dict[String, Integer]({"height": image.shape[0], "width": image.shape[1]}),
            found=Detections(
                xyxy=np.array([[box.xmin, box.ymin, box.xmax, box.ymax]], np.float32),
                scores=np.array([1.0], np.float32),
                class_ids=np.array([0], np.int64),
            ),
        )


def oip_pipeline() -> Pipeline:
    pf = PipelineFactory(name=MODEL)
    frame = pf.add_cell(ref="frame", cell=Frame())
    for port in ("image", "features", "x", "label", "box"):
        pf.declare_input(ref=port, input=getattr(frame.inputs, port))
    for port in ("flipped", "doubled", "count", "total", "mean", "shout", "info", "found"):
        pf.declare_output(ref=port, output=getattr(frame.outputs, port))
    return pf.build()


BOX = BoundingBox(1.0, 2.0, 30.0, 40.0)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``host:port`` of a FastAPIDriver on the local runtime, ready."""
    with init("local") as rt, rt.start_inference(Inference(pipeline=oip_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=60)
            yield client.base_url.removeprefix("http://")


@pytest.fixture
def triton(server: str) -> Iterator[Any]:
    client = tritonclient_http.InferenceServerClient(url=server, network_timeout=60.0)
    yield client
    client.close()


def frame_inputs(image: np.ndarray, x: int, *, binary: bool) -> list[Any]:
    features = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensors = []
    for name, datatype, value in (
        ("image", "UINT8", image),
        ("features", "FP32", features),
        ("x", "INT64", np.array([x], np.int64)),
        ("label", "BYTES", np.array([b"cat"], np.object_)),
        ("box", "BYTES", np.array([json.dumps(BOX.to_json()).encode()], np.object_)),
    ):
        tensor = tritonclient_http.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value, binary_data=binary)
        tensors.append(tensor)
    return tensors


def test_triton_client_reads_liveness_readiness_and_metadata_described_from_the_pipeline_types(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, model_version="1")
    assert not triton.is_model_ready("another-model")
    server = triton.get_server_metadata()
    assert server["name"] == "rvai_sdk" and "binary_tensor_data" in server["extensions"]
    meta = triton.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {
        "image": ("UINT8", [-1, -1, -1]),
        "features": ("FP32", [-1, 4]),
        "x": ("INT64", [1]),
        "label": ("BYTES", [1]),
        "box": ("BYTES", [1]),
    }
    outputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]}
    assert outputs["count"] == ("INT64", [1]) and outputs["mean"] == ("FP64", [1]) and outputs["found"] == ("BYTES", [1])
    found = next(t for t in meta["outputs"] if t["name"] == "found")
    assert found["parameters"] == {"rvai_type": "Detections", "content_type": "application/json"}
    config = triton.get_model_config(MODEL)
    assert config["name"] == MODEL and [i["name"] for i in config["input"]] == list(inputs)
    with pytest.raises(InferenceServerException, match="no model 'another-model'"):
        triton.get_model_metadata("another-model")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_triton_client_infers_with_json_tensors_and_with_binary_data(triton: Any, binary: bool) -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    outputs = [
        tritonclient_http.InferRequestedOutput(name, binary_data=binary)
        for name in ("flipped", "doubled", "count", "mean", "shout", "info", "found")
    ]
    result = triton.infer(MODEL, frame_inputs(image, 3, binary=binary), outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1" and result.get_response()["model_name"] == MODEL
    np.testing.assert_array_equal(result.as_numpy("flipped"), image[:, ::-1])
    np.testing.assert_array_equal(result.as_numpy("doubled"), np.arange(8, dtype=np.float32).reshape(2, 4) * 2)
    assert result.as_numpy("doubled").dtype == np.float32
    assert result.as_numpy("count").tolist() == [1]  # a one-off request: fresh state
    assert result.as_numpy("mean")[0] == pytest.approx(image.mean())
    assert result.as_numpy("shout")[0] in (b"CAT", "CAT")
    info = result.as_numpy("info")[0]
    assert json.loads(info) == {"height": 4, "width": 5}
    found = Detections.from_json(json.loads(result.as_numpy("found")[0]))
    assert found.xyxy.tolist() == [[1.0, 2.0, 30.0, 40.0]]
    assert result.as_numpy("total") is None  # not requested


def test_nan_and_infinity_in_json_tensors_travel_both_ways_as_triton_writes_them(triton: Any, server: str) -> None:
    """JSON has no number for NaN or ±Infinity: the answer writes the tokens Triton writes (never a 500)."""
    tensors = frame_inputs(np.zeros((2, 2, 3), np.uint8), 1, binary=False)
    features = np.array([[np.nan, np.inf, -np.inf, 1.5]], np.float32)
    tensors[1] = tritonclient_http.InferInput("features", [1, 4], "FP32")
    tensors[1].set_data_from_numpy(features, binary_data=False)
    result = triton.infer(MODEL, tensors, outputs=[tritonclient_http.InferRequestedOutput("doubled", binary_data=False)])
    np.testing.assert_array_equal(result.as_numpy("doubled"), features * 2)  # NaN compares equal here

    body = (
        b'{"inputs":[{"name":"image","datatype":"UINT8","shape":[1,1,1],"data":[7]},'
        b'{"name":"features","datatype":"FP32","shape":[1,4],"data":[NaN,Infinity,-Infinity,2]},'
        b'{"name":"x","datatype":"INT64","shape":[1],"data":[1]},{"name":"label","datatype":"BYTES","shape":[1],"data":["a"]},'
        b'{"name":"box","datatype":"BYTES","shape":[1],"data":[' + json.dumps(json.dumps(BOX.to_json())).encode() + b"]}],"
        b'"outputs":[{"name":"doubled"}]}'
    )
    answer = httpx.post(f"http://{server}/v2/models/{MODEL}/infer", content=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert b'"data":[NaN,Infinity,-Infinity,4.0]' in answer.content


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_from_the_triton_client_are_inflated(triton: Any, algorithm: str) -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    result = triton.infer(MODEL, frame_inputs(image, 1, binary=True), request_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("flipped"), image[:, ::-1])


def test_a_1080p_frame_travels_as_binary_data_both_ways(triton: Any) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    result = triton.infer(MODEL, frame_inputs(frame, 1, binary=True))  # no outputs named: all, binary
    flipped = result.as_numpy("flipped")
    assert flipped.shape == (1080, 1920, 3) and flipped.dtype == np.uint8
    np.testing.assert_array_equal(flipped, frame[:, ::-1])
    assert result.as_numpy("mean")[0] == pytest.approx(frame.mean())


def test_sequence_ids_keep_per_stream_state_and_sequence_end_drops_it(triton: Any) -> None:
    image = np.zeros((2, 2, 3), np.uint8)

    def infer(x: int, **sequence: Any) -> tuple[int, int]:
        outputs = [tritonclient_http.InferRequestedOutput(n) for n in ("count", "total")]
        result = triton.infer(MODEL, frame_inputs(image, x, binary=True), outputs=outputs, **sequence)
        return int(result.as_numpy("count")[0]), int(result.as_numpy("total")[0])

    check_sequences(infer)


def test_bad_input_is_answered_with_a_protocol_error_naming_it(triton: Any) -> None:
    image = tritonclient_http.InferInput("image", [2, 2, 3], "FP32")
    image.set_data_from_numpy(np.zeros((2, 2, 3), np.float32))
    inputs = frame_inputs(np.zeros((2, 2, 3), np.uint8), 1, binary=True)
    with pytest.raises(InferenceServerException, match="input 'image' \\(Image\\) takes datatype UINT8") as caught:
        triton.infer(MODEL, [image, *inputs[1:]])
    assert caught.value.status() == "400"
    with pytest.raises(InferenceServerException, match="missing input 'label'"):
        triton.infer(MODEL, [t for t in inputs if t.name() != "label"])
    with pytest.raises(InferenceServerException, match="cell 'frame' .*failed.*ValueError: negative x -1") as caught:
        triton.infer(MODEL, frame_inputs(np.zeros((2, 2, 3), np.uint8), -1, binary=True))
    assert caught.value.status() == "500"


# -- the wire format, with plain HTTP -------------------------------------------------------------


def test_the_json_wire_format_of_infer_and_errors(server: str) -> None:
    url = f"http://{server}/v2/models/{MODEL}/versions/1/infer"
    request = {
        "id": "42",
        "parameters": {"sequence_id": "wire-1", "sequence_start": True},
        "inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [1, 2, 1], "data": [[[0], [200]]]},
            {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 1, 2, 3]},
            {"name": "x", "datatype": "INT32", "shape": [1], "data": [6]},
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["dog"]},
            {"name": "box", "datatype": "BYTES", "shape": [1], "data": [json.dumps(BOX.to_json())]},
        ],
        "outputs": [{"name": "flipped"}, {"name": "total"}, {"name": "shout"}, {"name": "doubled"}],
    }
    response = httpx.post(url, json=request, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "model_name": MODEL,
        "model_version": "1",
        "id": "42",
        "parameters": {"sequence_id": "wire-1"},
        "outputs": [
            {"name": "flipped", "datatype": "UINT8", "shape": [1, 2, 1], "data": [200, 0]},
            {"name": "total", "datatype": "INT64", "shape": [1], "data": [6]},
            {"name": "shout", "datatype": "BYTES", "shape": [1], "data": ["DOG"]},
            {"name": "doubled", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 4.0, 6.0]},
        ],
    }

    def error(body: Any, path: str = f"/v2/models/{MODEL}/infer", status: int = 400) -> str:
        answer = httpx.post(f"http://{server}{path}", json=body, timeout=30)
        assert answer.status_code == status, answer.text
        assert list(answer.json()) == ["error"]
        return str(answer.json()["error"])

    inputs = request["inputs"]
    assert "no input 'size'" in error({"inputs": [*inputs, {"name": "size", "datatype": "INT64", "shape": [1], "data": [1]}]})
    wrong_count = [{**inputs[1], "shape": [2, 4]}, *inputs[:1], *inputs[2:]]
    assert "input 'features': shape [2, 4] holds 8 elements, the data has 4" in error({"inputs": wrong_count})
    floats_for_int = [*inputs[:2], {**inputs[2], "data": [1.5]}, *inputs[3:]]
    assert "input 'x': INT32 data are integers" in error({"inputs": floats_for_int})
    bad_box = [*inputs[:4], {**inputs[4], "data": ['{"xmin": 1}']}]
    assert "input 'box'" in error({"inputs": bad_box})
    assert "no output 'nope'" in error({"inputs": inputs, "outputs": [{"name": "nope"}]})
    assert "no model 'other'" in error({"inputs": inputs}, "/v2/models/other/infer", 404)
    assert "no version '2'" in error({"inputs": inputs}, f"/v2/models/{MODEL}/versions/2/infer", 404)
    assert "no route" in error({}, "/v2/repository/index", 404)
    unknown = httpx.post(url, content=b"{}", headers={"Content-Encoding": "br"})
    assert unknown.status_code == 415 and "Content-Encoding 'br'" in unknown.json()["error"]

    # /metrics counts them under their route templates, not under each model name
    metrics = httpx.get(f"http://{server}/metrics", timeout=30).text
    assert 'route="/v2/models/{name}/versions/{version}/infer",status="200"' in metrics
    assert 'route="/v2/models/{name}/infer",status="400"' in metrics


def test_the_binary_data_extension_on_the_wire(server: str) -> None:
    image = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    features = np.ones((1, 4), np.float32)
    label = b"owl"
    box = json.dumps(BOX.to_json()).encode()
    binaries = [image.tobytes(), features.tobytes(), np.int64(2).tobytes(), struct.pack("<I", 3) + label,
                struct.pack("<I", len(box)) + box]
    header = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
            for (n, d, s), b in zip(
                [("image", "UINT8", [1, 2, 3]), ("features", "FP32", [1, 4]), ("x", "INT64", [1]),
                 ("label", "BYTES", [1]), ("box", "BYTES", [1])],
                binaries,
            )
        ],
        "outputs": [{"name": "flipped", "parameters": {"binary_data": True}}, {"name": "shout", "parameters": {"binary_data": True}}, {"name": "count"}],
    }
    head = json.dumps(header).encode()
    response = httpx.post(
        f"http://{server}/v2/models/{MODEL}/infer",
        content=head + b"".join(binaries),
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:size])
    flipped, shout, count = answer["outputs"]
    assert flipped == {"name": "flipped", "datatype": "UINT8", "shape": [1, 2, 3], "parameters": {"binary_data_size": 6}}
    assert shout == {"name": "shout", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}}
    assert count == {"name": "count", "datatype": "INT64", "shape": [1], "data": [1]}
    rest = response.content[size:]
    assert rest[:6] == image[:, ::-1].tobytes() and rest[6:] == struct.pack("<I", 3) + b"OWL"

    short = httpx.post(
        f"http://{server}/v2/models/{MODEL}/infer",
        content=head + b"".join(binaries)[:-5],
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=30,
    )
    assert short.status_code == 400 and "input 'box'" in short.json()["error"]


def test_health_routes_and_the_catch_all_answer_in_the_protocol_form(server: str) -> None:
    assert httpx.get(f"http://{server}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"http://{server}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"http://{server}/v2/models/{MODEL}/ready").status_code == 200
    missing = httpx.get(f"http://{server}/v2/models/other/ready")
    assert missing.status_code == 404 and "no model 'other'" in missing.json()["error"]


# -- the guide's Triton client script, and the debug runtime -----------------------------------------


@dataclass
class MyInputs(Inputs):
    integer: Integer = Inputs.field(name="Dummy input")


@dataclass
class MyOutputs(Outputs):
    integer: Integer = Outputs.field(name="Dummy output", description="input plus this stream's count")


@dataclass
class MyState(State):
    counter: Integer = State.field(default=Integer(0))


@cell(state=MyState)
class MyCell(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: MyInputs) -> MyOutputs:
        context.state.counter = Integer(context.state.counter + 1)
        return MyOutputs(integer=inputs.integer + context.state.counter)


def quickstart_pipeline() -> Pipeline:
    """The README's quickstart pipeline."""
    pf = PipelineFactory(name="MyPipeline")
    my_cell = MyCell()
    pf.add_cell(ref="my-cell", cell=my_cell)
    pf.declare_input(ref="input", input=my_cell.inputs.integer)
    pf.declare_output(ref="output", output=my_cell.outputs.integer)
    return pf.build()


GUIDE = Path(__file__).parents[3] / "docs" / "guides" / "open_inference_protocol.md"


def guide_script() -> str:
    text = GUIDE.read_text()
    start = text.index("<!-- triton-client-script -->\n```python\n") + len("<!-- triton-client-script -->\n```python\n")
    return text[start : text.index("```", start)]


def test_the_guides_triton_client_script_runs_unchanged_but_for_its_url_on_the_debug_runtime(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = guide_script()
    assert 'url="localhost:8000"' in script
    with init("debug") as rt, rt.start_inference(Inference(pipeline=quickstart_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=30)
            url = client.base_url.removeprefix("http://")
        exec(compile(script.replace("localhost:8000", url), str(GUIDE), "exec"), {"__name__": "guide"})
        assert "'datatype': 'INT64'" in capsys.readouterr().out

        # the protocol can be turned off while the driver runs
        handle.set_parameters({"open_inference_protocol": False})
        off = httpx.get(f"http://{url}/v2/models/MyPipeline")
        assert off.status_code == 404 and "open_inference_protocol" in off.json()["error"]


def test_with_an_api_key_only_liveness_is_open_and_triton_clients_send_the_bearer_token() -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=quickstart_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver, {"api_key": "s3cret"})
        with FastAPIClient(process=handle, api_key="s3cret") as client:
            client.wait(timeout=30)
            url = client.base_url.removeprefix("http://")
        triton = tritonclient_http.InferenceServerClient(url=url)
        try:
            assert triton.is_server_live()  # a probe needs no token
            assert not triton.is_server_ready()  # 401: not without the token
            with pytest.raises(InferenceServerException, match="Bearer"):
                triton.get_model_metadata("MyPipeline")
            token = {"Authorization": "Bearer s3cret"}
            assert triton.is_server_ready(headers=token)
            value = tritonclient_http.InferInput("input", [1], "INT64")
            value.set_data_from_numpy(np.array([5], np.int64))
            assert triton.infer("MyPipeline", [value], headers=token).as_numpy("output").tolist() == [6]
        finally:
            triton.close()


@pytest.mark.parametrize("name", ["debug", pytest.param("ray", marks=pytest.mark.ray)])
def test_sequences_behave_on_debug_and_ray_as_on_the_local_runtime(name: str, request: pytest.FixtureRequest) -> None:
    """The module's server covers the local runtime; here the same sequences on the other two."""
    if name == "ray":
        request.getfixturevalue("ray_instance")  # the session's Ray instance
    with init(name) as runtime, runtime.start_inference(Inference(pipeline=quickstart_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=60)
            url = client.base_url.removeprefix("http://")
        triton = tritonclient_http.InferenceServerClient(url=url, network_timeout=60.0)
        try:

            def infer(x: int, **sequence: Any) -> int:
                value = tritonclient_http.InferInput("input", [1], "INT64")
                value.set_data_from_numpy(np.array([x], np.int64))
                return int(triton.infer("MyPipeline", [value], **sequence).as_numpy("output")[0])

            check_quickstart_sequences(triton.is_model_ready("MyPipeline"), infer)
        finally:
            triton.close()
