"""What the grpc extra brings in, and when: the core and the shared V2 codec import neither gRPC nor FastAPI;
the generated module lives beside tritonclient.grpc's in one process; the benchmark script runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_the_core_and_the_transport_neutral_v2_codec_import_no_grpc_and_no_fastapi() -> None:
    code = (
        "import sys\n"
        "import rvai_sdk, rvai_sdk.cli, rvai_sdk.extensions.drivers._v2\n"
        "heavy = [m for m in ('grpc', 'google.protobuf', 'fastapi', 'starlette', 'tritonclient') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_generated_module_and_tritonclients_load_into_one_process_in_either_order() -> None:
    for first, second in (("tritonclient.grpc", "rvai_sdk.extensions.drivers.grpc_driver"), ("rvai_sdk.extensions.drivers.grpc_driver", "tritonclient.grpc")):
        code = (
            f"import {first}, {second}\n"
            "from rvai_sdk.extensions.drivers.grpc.service import SERVICE\n"
            "from rvai_sdk.extensions.drivers.grpc.proto import rvai_sdk_inference_pb2 as pb\n"
            "assert SERVICE == 'inference.GRPCInferenceService'\n"
            "assert pb.ModelInferRequest.DESCRIPTOR.full_name == 'rvai_sdk.inference.ModelInferRequest'\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


def test_our_messages_are_the_protocols_on_the_wire() -> None:
    """Each message serialises to what Triton's own generated code reads, field for field."""
    from tritonclient.grpc import service_pb2 as triton

    from rvai_sdk.extensions.drivers.grpc.proto import rvai_sdk_inference_pb2 as ours

    request = triton.ModelInferRequest(model_name="m", model_version="1", id="7", raw_input_contents=[b"\x01\x02"])
    request.parameters["sequence_id"].int64_param = 5
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.5, 2.5])
    request.outputs.add(name="y").parameters["classification"].int64_param = 2
    mine = ours.ModelInferRequest.FromString(request.SerializeToString())
    assert mine.SerializeToString(deterministic=True) == request.SerializeToString(deterministic=True)
    assert mine.parameters["sequence_id"].int64_param == 5 and list(mine.inputs[0].contents.fp32_contents) == [1.5, 2.5]
    answer = ours.ModelInferResponse(model_name="m", id="7", raw_output_contents=[b"abc"])
    answer.outputs.add(name="y", datatype="BYTES", shape=[1])
    theirs = triton.ModelInferResponse.FromString(answer.SerializeToString())
    assert theirs.outputs[0].name == "y" and theirs.raw_output_contents == [b"abc"]
    config = ours.ModelConfigResponse(config=ours.ModelConfig(name="m", max_batch_size=0, backend="rvai_sdk"))
    config.config.input.add(name="x", data_type=ours.TYPE_STRING, dims=[1])
    from tritonclient.grpc import model_config_pb2  # noqa: F401  (ModelConfig's module)

    read = triton.ModelConfigResponse.FromString(config.SerializeToString())
    assert read.config.backend == "rvai_sdk" and read.config.input[0].data_type == model_config_pb2.TYPE_STRING


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_oip_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_oip.py"), "--quick", "--write", str(out)],
        capture_output=True, text=True, timeout=230,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "<!-- bench:oip -->" in text and "| V2 gRPC raw contents |" in text and "| V2 HTTP binary data |" in text
