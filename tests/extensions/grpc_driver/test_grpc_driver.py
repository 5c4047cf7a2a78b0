"""The Open Inference Protocol over gRPC (GrpcDriver): Triton's own gRPC client against a real server.

One server on the local runtime (a real inference process and a driver process) serves
the module, with the pipeline of the HTTP suite (an ``Image``, a ``Tensor``, an ``Integer``,
a ``String`` and a ``BoundingBox`` in); ``tritonclient.grpc`` drives it as it would drive
Triton, and Triton's own generated stub pins what its client does not send (typed
``contents``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.exc import ParameterError
from rvai_sdk.extensions.drivers.grpc_driver import GrpcDriver
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Detections, Integer

from tests._sync import eventually
from tests.extensions.fast_api_driver.test_oip import BOX, MODEL, oip_pipeline, quickstart_pipeline
from tests.extensions._sequences import check_quickstart_sequences, check_sequences

pytestmark = pytest.mark.timeout(120)


def serving(handle: Any, timeout: float = 60.0) -> str:
    """``host:port`` of a GrpcDriver, once it accepts calls.

    A fresh channel per try, each given 2 s: a channel's first connection can land in the
    backlog of a server that is shutting down (a restart) and then waits out gRPC's 20 s
    connect timeout and its backoff.
    """
    import time

    url = f"127.0.0.1:{handle.get_service('grpc')['port']}"
    deadline = time.monotonic() + timeout
    for _ in range(1000):  # bounded by the deadline long before
        channel = grpc.insecure_channel(url)
        try:
            grpc.channel_ready_future(channel).result(timeout=2)
            return url
        except grpc.FutureTimeoutError:
            if time.monotonic() > deadline:
                raise
        finally:
            channel.close()
    raise AssertionError("unreachable")


def restarted(handle: Any, count: int, timeout: float = 60.0) -> None:
    """Wait until the driver's server has restarted ``count`` times in all (after parameter changes)."""
    import time

    deadline = time.monotonic() + timeout
    pause = __import__("threading").Event()
    while handle.stats().get("restarts", 0) < count:  # bounded by the deadline
        assert time.monotonic() < deadline, handle.stats()
        pause.wait(0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``host:port`` of a GrpcDriver on the local runtime, ready."""
    with init("local") as rt, rt.start_inference(Inference(pipeline=oip_pipeline())) as proc:
        yield serving(proc.add_driver("grpc", GrpcDriver))


@pytest.fixture
def triton(server: str) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(url=server)
    yield client
    client.close()


def frame_inputs(image: np.ndarray, x: int) -> list[Any]:
    features = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensors = []
    for name, datatype, value in (
        ("image", "UINT8", image),
        ("features", "FP32", features),
        ("x", "INT64", np.array([x], np.int64)),
        ("label", "BYTES", np.array([b"cat"], np.object_)),
        ("box", "BYTES", np.array([json.dumps(BOX.to_json()).encode()], np.object_)),
    ):
        tensor = grpcclient.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)  # raw_input_contents, as tritonclient.grpc always sends
        tensors.append(tensor)
    return tensors


def test_liveness_readiness_metadata_and_config_described_from_the_pipeline_types(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, model_version="1")
    assert not triton.is_model_ready("another-model") and not triton.is_model_ready(MODEL, model_version="2")
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "rvai_sdk" and "sequence" in server["extensions"]
    meta = triton.get_model_metadata(MODEL, as_json=True)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    inputs = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]}
    assert inputs == {  # exactly what the HTTP /v2 route answers (one codec)
        "image": ("UINT8", [-1, -1, -1]),
        "features": ("FP32", [-1, 4]),
        "x": ("INT64", [1]),
        "label": ("BYTES", [1]),
        "box": ("BYTES", [1]),
    }
    outputs = {t["name"]: t["datatype"] for t in meta["outputs"]}
    assert outputs["count"] == "INT64" and outputs["mean"] == "FP64" and outputs["found"] == "BYTES"
    config = triton.get_model_config(MODEL, as_json=True)["config"]
    assert config["name"] == MODEL and [i["name"] for i in config["input"]] == list(inputs)
    assert config["input"][0]["data_type"] == "TYPE_UINT8" and config["input"][3]["data_type"] == "TYPE_STRING"
    with pytest.raises(InferenceServerException, match="no model 'another-model'") as caught:
        triton.get_model_metadata("another-model")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_infer_with_raw_contents_answers_every_type(triton: Any) -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("flipped", "doubled", "count", "mean", "shout", "info", "found")]
    result = triton.infer(MODEL, frame_inputs(image, 3), outputs=outputs, request_id="r-1")
    response = result.get_response()
    assert response.id == "r-1" and response.model_name == MODEL and response.model_version == "1"
    assert len(response.raw_output_contents) == 7  # arrays and scalars alike come back raw, as from Triton
    np.testing.assert_array_equal(result.as_numpy("flipped"), image[:, ::-1])
    assert result.as_numpy("doubled").dtype == np.float32
    np.testing.assert_array_equal(result.as_numpy("doubled"), np.arange(8, dtype=np.float32).reshape(2, 4) * 2)
    assert result.as_numpy("count").tolist() == [1]  # a one-off request: fresh state
    assert result.as_numpy("mean")[0] == pytest.approx(image.mean())
    assert result.as_numpy("shout")[0] == b"CAT"
    assert json.loads(result.as_numpy("info")[0]) == {"height": 4, "width": 5}
    found = Detections.from_json(json.loads(result.as_numpy("found")[0]))
    assert found.xyxy.tolist() == [[1.0, 2.0, 30.0, 40.0]]
    assert result.as_numpy("total") is None  # not requested
    compressed = triton.infer(MODEL, frame_inputs(image, 3), outputs=outputs[:1], compression_algorithm="gzip")
    np.testing.assert_array_equal(compressed.as_numpy("flipped"), image[:, ::-1])  # gRPC's own compression


def test_a_1080p_frame_travels_raw_both_ways(triton: Any) -> None:
    frame = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    result = triton.infer(MODEL, frame_inputs(frame, 1))  # no outputs named: all of them
    flipped = result.as_numpy("flipped")
    assert flipped.shape == (1080, 1920, 3) and flipped.dtype == np.uint8
    np.testing.assert_array_equal(flipped, frame[:, ::-1])
    assert result.as_numpy("mean")[0] == pytest.approx(frame.mean())


def test_typed_contents_decode_as_raw_contents_do(server: str) -> None:
    """What tritonclient never sends but the protocol allows: each input in its typed ``contents`` field."""
    request = service_pb2.ModelInferRequest(model_name=MODEL, id="typed")
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    for name, datatype, shape, field, values in (
        ("image", "UINT8", [2, 2, 3], "uint_contents", image.reshape(-1).tolist()),
        ("features", "FP32", [1, 4], "fp32_contents", [0.5, 1, 2, 3]),
        ("x", "INT32", [1], "int_contents", [6]),
        ("label", "BYTES", [1], "bytes_contents", [b"dog"]),
        ("box", "BYTES", [1], "bytes_contents", [json.dumps(BOX.to_json()).encode()]),
    ):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(tensor.contents, field).extend(values)
    for name in ("flipped", "total", "shout", "doubled"):
        request.outputs.add(name=name)
    request.parameters["sequence_id"].string_param = "typed-1"
    request.parameters["sequence_start"].bool_param = True
    with grpc.insecure_channel(server) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=60)
        assert response.id == "typed" and response.parameters["sequence_id"].string_param == "typed-1"
        assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
            ("flipped", "UINT8", [2, 2, 3]), ("total", "INT64", [1]), ("shout", "BYTES", [1]), ("doubled", "FP32", [1, 4]),
        ]
        flipped, total, shout, doubled = response.raw_output_contents
        assert flipped == image[:, ::-1].tobytes() and np.frombuffer(total, np.int64).tolist() == [6]
        assert shout == b"\x03\x00\x00\x00DOG" and np.frombuffer(doubled, np.float32).tolist() == [1, 2, 4, 6]

        del request.inputs[2].contents.int_contents[:]
        request.inputs[2].contents.int_contents.append(2**31 - 1)
        request.inputs[2].datatype = "INT8"  # a value that does not fit the datatype it claims
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=60)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'x'" in caught.value.details() and "INT8" in caught.value.details()

        both = service_pb2.ModelInferRequest()
        both.CopyFrom(request)
        both.raw_input_contents.append(b"\x00")
        with pytest.raises(grpc.RpcError, match="raw_input_contents has 1 entries for 5 inputs"):
            stub.ModelInfer(both, timeout=60)


def test_sequences_keep_per_stream_state_and_sequence_end_drops_it(triton: Any) -> None:
    image = np.zeros((2, 2, 3), np.uint8)

    def infer(x: int, **sequence: Any) -> tuple[int, int]:
        outputs = [grpcclient.InferRequestedOutput(n) for n in ("count", "total")]
        result = triton.infer(MODEL, frame_inputs(image, x), outputs=outputs, **sequence)
        return int(result.as_numpy("count")[0]), int(result.as_numpy("total")[0])

    check_sequences(infer)


def test_a_stream_of_requests_answers_in_order_with_the_sequences_state(triton: Any) -> None:
    """``ModelStreamInfer`` (tritonclient's start_stream / async_stream_infer): one sequence over one stream."""
    answers: list[Any] = []
    done = __import__("threading").Event()

    def callback(result: Any, error: Any) -> None:
        answers.append(error if error is not None else int(result.as_numpy("total")[0]))
        if len(answers) == 4:
            done.set()

    image = np.zeros((2, 2, 3), np.uint8)
    triton.start_stream(callback=callback)
    try:
        for i, x in enumerate((1, 2, 3)):
            triton.async_stream_infer(
                MODEL, frame_inputs(image, x), outputs=[grpcclient.InferRequestedOutput("total")],
                sequence_id=9001, sequence_start=i == 0, sequence_end=i == 2,
            )
        triton.async_stream_infer(MODEL, frame_inputs(image, -1))  # the cell fails: an error on the stream, which goes on
        assert done.wait(60), answers
    finally:
        triton.stop_stream()
    assert answers[:3] == [1, 3, 6]
    assert isinstance(answers[3], InferenceServerException) and "cell 'frame'" in str(answers[3])


def test_a_message_that_is_not_protobuf_is_invalid_argument_not_internal(server: str) -> None:
    with grpc.insecure_channel(server) as channel:
        for method, data in (("ModelInfer", b"\x0a\x02\xff\xfe"), ("ModelMetadata", b"\xff\xff\xff")):  # a non-UTF-8 name; garbage
            raw = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")  # bytes in, bytes out
            with pytest.raises(grpc.RpcError) as caught:
                raw(data, timeout=30)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert "is not a valid Model" in caught.value.details()
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
        # in a stream, the bad message answers its error and the stream goes on
        metadata = service_pb2.ModelMetadataRequest(name=MODEL)
        good = stub.ModelMetadata(metadata, timeout=30)
        assert good.name == MODEL
        raw_stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        garbage = b"\xff\xff\xff"
        answers = [service_pb2.ModelStreamInferResponse.FromString(a) for a in raw_stream(iter([garbage]), timeout=30)]
        assert len(answers) == 1 and "is not a valid ModelInferRequest" in answers[0].error_message


def test_bad_input_is_answered_with_a_status_code_naming_it(triton: Any) -> None:
    image = grpcclient.InferInput("image", [2, 2, 3], "FP32")
    image.set_data_from_numpy(np.zeros((2, 2, 3), np.float32))
    inputs = frame_inputs(np.zeros((2, 2, 3), np.uint8), 1)
    with pytest.raises(InferenceServerException, match="input 'image' \\(Image\\) takes datatype UINT8") as caught:
        triton.infer(MODEL, [image, *inputs[1:]])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="missing input 'label'"):
        triton.infer(MODEL, [t for t in inputs if t.name() != "label"])
    with pytest.raises(InferenceServerException, match="no output 'nope'"):
        triton.infer(MODEL, inputs, outputs=[grpcclient.InferRequestedOutput("nope")])
    with pytest.raises(InferenceServerException, match="no model 'other'") as caught:
        triton.infer("other", inputs)
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="cell 'frame' .*failed.*ValueError: negative x -1") as caught:
        triton.infer(MODEL, frame_inputs(np.zeros((2, 2, 3), np.uint8), -1))
    assert caught.value.status() == "StatusCode.INTERNAL"
    assert triton.infer(MODEL, inputs).as_numpy("count").tolist() == [1]  # and it goes on serving


# -- deadlines, a stop and a restart, parameters, the API key (the debug runtime: quick to start) ---------


@dataclass
class WaitIn(Inputs):
    seconds: Integer = Inputs.field(name="Seconds", description="how long the cell holds the request")


@dataclass
class WaitOut(Outputs):
    seconds: Integer = Outputs.field(name="Seconds")


RELEASE_HOLDS = threading.Event()


class Hold(Cell):
    """Holds a request ``seconds``, or until the test sets ``RELEASE_HOLDS`` (the debug runtime calls it in the
    test's own process): a slow model for the deadline tests, released once they have seen the deadline pass."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: WaitIn) -> WaitOut:
        RELEASE_HOLDS.wait(int(inputs.seconds))
        return WaitOut(seconds=inputs.seconds)


def hold_pipeline() -> Pipeline:
    pf = PipelineFactory(name="Hold")
    hold = pf.add_cell(ref="hold", cell=Hold())
    pf.declare_input(ref="seconds", input=hold.inputs.seconds)
    pf.declare_output(ref="seconds", output=hold.outputs.seconds)
    return pf.build()


def seconds(value: int) -> list[Any]:
    tensor = grpcclient.InferInput("seconds", [1], "INT64")
    tensor.set_data_from_numpy(np.array([value], np.int64))
    return [tensor]


def test_the_grpc_deadline_and_the_timeout_parameter_bound_a_request() -> None:
    RELEASE_HOLDS.clear()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=hold_pipeline())) as proc:
        handle = proc.add_driver("grpc", GrpcDriver)
        client = grpcclient.InferenceServerClient(url=serving(handle))
        try:
            with pytest.raises(InferenceServerException, match="hold") as caught:
                client.infer("Hold", seconds(30), timeout=300_000)  # the protocol's timeout parameter: 0.3 s
            assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
            with pytest.raises(InferenceServerException) as caught:
                client.infer("Hold", seconds(30), client_timeout=0.3)  # the call's own gRPC deadline
            assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
            # The server gives the request up at the same deadline, not only the client (which may see it first).
            eventually(lambda: proc.stats()["requests"]["deadline_exceeded"] >= 2, "the server gave both requests up")
            RELEASE_HOLDS.set()  # the abandoned calls end; the cell serves the next request
            assert client.infer("Hold", seconds(0), client_timeout=60).as_numpy("seconds").tolist() == [0]
        finally:
            RELEASE_HOLDS.set()
            client.close()
        stats = proc.stats()
        assert stats["requests"]["deadline_exceeded"] >= 2, stats["requests"]  # the server gave both up, not only the client


def test_idle_streams_never_take_the_threads_liveness_and_single_requests_need() -> None:
    """Each open ModelStreamInfer holds a server thread: max_workers idle streams used to wedge the whole server
    (ServerLive included, so a liveness probe restarted a healthy one). Now at most half are open at once."""
    import queue

    def request(x: int) -> service_pb2.ModelInferRequest:
        message = service_pb2.ModelInferRequest(model_name="MyPipeline")
        message.inputs.add(name="input", datatype="INT64", shape=[1])
        message.raw_input_contents.append(np.array([x], np.int64).tobytes())
        return message

    with init("debug") as rt, rt.start_inference(Inference(pipeline=quickstart_pipeline())) as proc:
        handle = proc.add_driver("grpc", GrpcDriver, {"max_workers": 4})
        with grpc.insecure_channel(serving(handle)) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            outboxes: list[queue.Queue[Any]] = [queue.Queue() for _ in range(4)]
            calls = [stub.ModelStreamInfer(iter(box.get, None), timeout=60) for box in outboxes]  # open, send nothing
            try:
                eventually(lambda: sum(call.done() for call in calls) == 2, "two of the four streams refused")
                refused = [call for call in calls if call.done()]
                assert {call.code() for call in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
                assert "2 ModelStreamInfer streams are open" in refused[0].details()
                assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
                assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
                answer = stub.ModelInfer(request(1), timeout=10)
                assert np.frombuffer(answer.raw_output_contents[0], np.int64).tolist() == [2]
                open_ = [(box, call) for box, call in zip(outboxes, calls) if not call.done()]
                box, call = open_[0]
                box.put(request(5))  # an open stream serves
                assert next(call).infer_response.model_name == "MyPipeline"
                box.put(None)  # closed: its thread is free for a new stream
                assert list(call) == []
                again_box: queue.Queue[Any] = queue.Queue()
                again = stub.ModelStreamInfer(iter(again_box.get, None), timeout=60)
                again_box.put(request(7))
                assert np.frombuffer(next(again).infer_response.raw_output_contents[0], np.int64).tolist() == [8]
                again_box.put(None)
                assert list(again) == []
            finally:
                for box in outboxes:
                    box.put(None)
        assert handle.stats()["streams_refused"] == 2


def test_a_driver_stopped_and_added_again_serves_and_a_parameter_change_restarts_its_server() -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=quickstart_pipeline())) as proc:

        def infer(url: str, x: int, **kw: Any) -> int:
            client = grpcclient.InferenceServerClient(url=url)
            try:
                value = grpcclient.InferInput("input", [1], "INT64")
                value.set_data_from_numpy(np.array([x], np.int64))
                return int(client.infer("MyPipeline", [value], **kw).as_numpy("output")[0])
            finally:
                client.close()

        handle = proc.add_driver("grpc", GrpcDriver)
        url = serving(handle)
        assert infer(url, 1, sequence_id=3) == 2
        proc.remove_driver(handle.pid)
        channel = grpc.insecure_channel(url)
        with pytest.raises(grpc.FutureTimeoutError):  # nothing listens there any more
            grpc.channel_ready_future(channel).result(timeout=2)
        channel.close()

        handle = proc.add_driver("grpc", GrpcDriver, {"max_workers": 2})
        url = serving(handle)
        assert infer(url, 1, sequence_id=3) == 3  # the state lives in the inference process, not in the driver
        handle.set_parameters({"max_workers": 4, "api_key": "s3cret"})  # a restart of its server, same port
        restarted(handle, 1)
        assert serving(handle) == url
        with pytest.raises(InferenceServerException, match="Bearer") as caught:
            infer(url, 1)
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        assert infer(url, 1, sequence_id=3, headers={"authorization": "Bearer s3cret"}) == 4
        client = grpcclient.InferenceServerClient(url=url)
        assert client.is_server_live()  # a probe needs no token
        client.close()
        with pytest.raises(ParameterError, match="max_workers"):
            handle.set_parameters({"max_workers": 0})
        handle.set_parameters({"max_message_bytes": 4096, "api_key": None})
        restarted(handle, 2)
        assert serving(handle) == url
        client = grpcclient.InferenceServerClient(url=url)
        big = grpcclient.InferInput("input", [1000], "INT64")  # 8 kB of data: past the limit
        big.set_data_from_numpy(np.zeros(1000, np.int64))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("MyPipeline", [big])
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        client.close()

        import socket

        with socket.socket() as taken:  # another server holds this port: the restart is refused, nothing is lost
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            handle.set_parameters({"listen_port": port})
            deadline = __import__("time").monotonic() + 60
            while handle.stats().get("restarts_refused", 0) < 1:  # bounded by the deadline
                assert __import__("time").monotonic() < deadline, handle.stats()
                __import__("threading").Event().wait(0.05)
        assert int(handle.get_parameters().listen_port) == 0  # back as they were
        assert f"GrpcDriver cannot listen on 127.0.0.1:{port}" in handle.stats()["last_error"]
        assert serving(handle) == url and infer(url, 1, sequence_id=3) == 5
        stats = handle.stats()
        assert stats["infer"] >= 2 and stats["grpc_unauthenticated"] == 1 and stats["restarts"] == 2


@pytest.mark.parametrize("name", ["debug", pytest.param("ray", marks=pytest.mark.ray)])
def test_sequences_behave_on_debug_and_ray_as_on_the_local_runtime(name: str, request: pytest.FixtureRequest) -> None:
    """The module's server covers the local runtime; here the same sequences on the other two."""
    if name == "ray":
        request.getfixturevalue("ray_instance")  # the session's Ray instance
    with init(name) as runtime, runtime.start_inference(Inference(pipeline=quickstart_pipeline())) as proc:
        client = grpcclient.InferenceServerClient(url=serving(proc.add_driver("grpc", GrpcDriver)))
        try:

            def infer(x: int, **sequence: Any) -> int:
                value = grpcclient.InferInput("input", [1], "INT64")
                value.set_data_from_numpy(np.array([x], np.int64))
                return int(client.infer("MyPipeline", [value], **sequence).as_numpy("output")[0])

            check_quickstart_sequences(client.is_model_ready("MyPipeline"), infer)
            with pytest.raises(InferenceServerException, match="input 'input'"):
                bad = grpcclient.InferInput("input", [1], "FP32")
                bad.set_data_from_numpy(np.array([1], np.float32))
                client.infer("MyPipeline", [bad])
        finally:
            client.close()


SCRIPT = textwrap.dedent(
    """
    from dataclasses import dataclass

    import numpy as np
    import tritonclient.grpc as grpcclient
    import grpc

    from rvai_sdk.cell import Cell
    from rvai_sdk.data import Inputs, Outputs, Parameters, State
    from rvai_sdk.cell import cell
    from rvai_sdk.extensions.drivers.grpc_driver import GrpcDriver
    from rvai_sdk.pipeline import PipelineFactory
    from rvai_sdk.runtime import Inference, init
    from rvai_sdk.types import Integer


    @dataclass
    class In(Inputs):
        x: Integer = Inputs.field()


    @dataclass
    class Out(Outputs):
        y: Integer = Outputs.field()


    @dataclass
    class Seen(State):
        n: Integer = State.field(default=Integer(0))


    @cell(state=Seen)
    class Count(Cell):
        @classmethod
        def call(cls, context, parameters: Parameters, inputs: In) -> Out:
            context.state.n = Integer(context.state.n + 1)
            return Out(y=inputs.x * 100 + context.state.n)


    if __name__ == "__main__":
        pf = PipelineFactory(name="Main")
        c = pf.add_cell(ref="count", cell=Count())
        pf.declare_input(ref="x", input=c.inputs.x)
        pf.declare_output(ref="y", output=c.outputs.y)
        with init("local") as rt, rt.start_inference(Inference(pipeline=pf.build())) as proc:
            url = f"127.0.0.1:{proc.add_driver('grpc', GrpcDriver).get_service('grpc')['port']}"
            grpc.channel_ready_future(grpc.insecure_channel(url)).result(timeout=60)
            client = grpcclient.InferenceServerClient(url=url)
            value = grpcclient.InferInput("x", [1], "INT64")
            value.set_data_from_numpy(np.array([7], np.int64))
            print([int(client.infer("Main", [value], sequence_id=1).as_numpy("y")[0]) for _ in range(2)])
            client.close()
    """
)


@pytest.mark.slow
def test_a_pipeline_defined_in_main_is_served_over_grpc_on_the_local_runtime(tmp_path: Path) -> None:
    script = tmp_path / "serve_main.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[701, 702]"


def test_an_unreachable_inference_process_is_unavailable_and_the_driver_recovers(tmp_path: Path) -> None:
    import threading
    import time

    from rvai_sdk.runtime.status import ProcessStatus

    from tests.extensions.fast_api_driver._pipelines import gated_pipeline

    gate = tmp_path / "open"
    gate.touch()
    with init("local") as rt, rt.start_inference(Inference(pipeline=gated_pipeline(), models={"gated": str(tmp_path)})) as proc:
        client = grpcclient.InferenceServerClient(url=serving(proc.add_driver("grpc", GrpcDriver)))

        def infer(x: int) -> int:
            value = grpcclient.InferInput("x", [1], "INT64")
            value.set_data_from_numpy(np.array([x], np.int64))
            return int(client.infer("gated", [value], client_timeout=60).as_numpy("y")[0])

        try:
            assert infer(1) == 2
            gate.unlink()  # the restarted process waits in load_model until the gate is back
            restarting = threading.Thread(target=proc.restart, daemon=True)
            restarting.start()
            try:
                deadline = time.monotonic() + 30
                down: InferenceServerException | None = None
                while down is None and time.monotonic() < deadline:  # bounded: until the restart takes the process away
                    try:
                        infer(1)
                    except InferenceServerException as exc:
                        down = exc
                assert down is not None and down.status() == "StatusCode.UNAVAILABLE", down
                assert "pipeline 'gated' cannot be reached" in str(down) and "ServerReady" in str(down)
                assert client.is_server_live() and not client.is_server_ready() and not client.is_model_ready("gated")
            finally:
                gate.touch()
                restarting.join(60)
            assert not restarting.is_alive() and proc.status is ProcessStatus.RUNNING
            deadline = time.monotonic() + 30
            while True:  # the driver may see the new process a moment after the restart returns (bounded)
                try:
                    assert infer(2) == 3
                    break
                except InferenceServerException as exc:
                    if exc.status() != "StatusCode.UNAVAILABLE" or time.monotonic() > deadline:
                        raise
            assert client.is_server_ready()
        finally:
            client.close()
