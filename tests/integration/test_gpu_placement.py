"""One rule for the GPU need of an inference process, on every runtime: the largest share any cell asks for.

Two cells asking for one GPU each share one GPU in one process; they do not need two.
No GPU is needed to check it: the local runtime is given two GPU ids through
``CUDA_VISIBLE_DEVICES`` and a Ray instance is started declaring two GPUs; the cells
fall back to the CPU (``allow_cpu=True``) and report the GPUs their process was given.
Each runtime runs in its own Python process (one process joins one Ray instance).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.resources import CellResources
from rvai_sdk.runtime import Inference, init
from rvai_sdk.runtime._devices import GpuDevice, discover_gpus, gpu_need
from rvai_sdk.types import String
from tests.conftest import XIn, require_extra

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SeenOut(Outputs):
    seen: String = Outputs.field(description="CUDA_VISIBLE_DEVICES and the device of this cell")


class VisibleGpus(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> SeenOut:
        return SeenOut(seen=String(f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}|{context.device}"))


def two_gpu_cells() -> Pipeline:
    pf = PipelineFactory(name="two-gpu-cells")
    a = pf.add_cell(ref="a", cell=VisibleGpus())
    b = pf.add_cell(ref="b", cell=VisibleGpus())
    pf.declare_input(ref="x", input=a.inputs.x)
    pf.declare_input(ref="x2", input=b.inputs.x)
    pf.declare_output(ref="a", output=a.outputs.seen)
    pf.declare_output(ref="b", output=b.outputs.seen)
    return pf.build()


def _serve(runtime: str) -> dict[str, Any]:
    """In a fresh process: start the two-cell pipeline with a 2-GPU offer and report what each cell saw."""
    options: dict[str, Any] = {}
    if runtime == "ray":
        options = {"num_cpus": 2, "num_gpus": 2, "include_dashboard": False, "log_to_driver": False}
    resources = {ref: CellResources(gpus=1, cpus=0, allow_cpu=True) for ref in ("a", "b")}
    with init(runtime, **options) as rt, rt.start_inference(Inference(pipeline=two_gpu_cells(), resources=resources)) as proc:
        out = proc.predict({"x": 1, "x2": 2}, sid="s").result(timeout=60)
    return {ref: str(value) for ref, value in out.items()}


def _run(runtime: str) -> dict[str, Any]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_gpu_placement", runtime],
        capture_output=True, text=True, timeout=150, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("runtime", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_two_cells_asking_one_gpu_each_share_one_gpu_in_their_process(runtime: str) -> None:
    if runtime == "ray":
        require_extra("ray")
    seen = _run(runtime)
    gpus = {ref: value.split("|")[0].split(",") for ref, value in seen.items()}
    assert gpus["a"] == gpus["b"], seen  # one process, one GPU for both cells
    assert len(gpus["a"]) == 1 and gpus["a"][0] in {"0", "1"}, f"the process was given {gpus['a']}, not one GPU"
    devices = {value.split("|")[1] for value in seen.values()}
    assert devices in ({"cpu"}, {"cuda:0"}), seen  # both cells on the process's one GPU (or the CPU where there is none)


@pytest.mark.timeout(60)
def test_the_debug_runtime_places_every_gpu_cell_of_the_process_on_one_device() -> None:
    resources = {ref: CellResources(gpus=1, allow_cpu=True) for ref in ("a", "b")}
    with init("debug") as rt, rt.start_inference(Inference(pipeline=two_gpu_cells(), resources=resources)) as proc:
        out = proc.predict({"x": 1, "x2": 2}, sid="s").result(timeout=30)
    assert str(out["a"]).split("|")[1] == str(out["b"]).split("|")[1]


@pytest.mark.timeout(30)
def test_the_gpu_need_of_a_process_is_the_largest_share_of_its_cells() -> None:
    assert gpu_need({"a": CellResources(gpus=1), "b": CellResources(gpus=1)}) == 1
    assert gpu_need({"a": CellResources(gpus=0.5), "b": CellResources(gpus=2), "c": CellResources()}) == 2
    assert gpu_need({}) == 0


class FakeDriver:
    """What the CUDA driver and NVML report on a machine with three GPUs, the fastest last on the bus, one in MIG mode."""

    def devices(self) -> list[dict[str, str]]:
        # CUDA's default order is fastest first: not the PCI order nvidia-smi uses
        return [
            {"pci_bus_id": "0000:C1:00.0", "name": "NVIDIA H100", "uuid": "cccc", "uuid_v2": "cccc"},
            {"pci_bus_id": "0000:41:00.0", "name": "NVIDIA A100", "uuid": "bbbb", "uuid_v2": "b-mig-0"},
            {"pci_bus_id": "0000:01:00.0", "name": "NVIDIA T4", "uuid": "aaaa", "uuid_v2": "aaaa"},
        ]

    def mig_uuids(self, pci_bus_id: str) -> list[str] | None:
        return ["MIG-b-mig-0", "MIG-b-mig-1"] if pci_bus_id.lower() == "0000:41:00.0" else None


class FakeDriverWithoutNvml(FakeDriver):
    def mig_uuids(self, pci_bus_id: str) -> list[str] | None:
        return None


@pytest.mark.timeout(30)
def test_gpus_are_listed_in_pci_bus_order_by_uuid_and_mig_instances_by_their_own_uuid() -> None:
    assert discover_gpus(FakeDriver()) == [
        GpuDevice("GPU-aaaa", "0000:01:00.0", "NVIDIA T4"),
        GpuDevice("MIG-b-mig-0", "0000:41:00.0", "NVIDIA A100"),
        GpuDevice("MIG-b-mig-1", "0000:41:00.0", "NVIDIA A100"),
        GpuDevice("GPU-cccc", "0000:c1:00.0", "NVIDIA H100"),
    ]
    # without NVML to list a partitioned GPU's instances, the one CUDA sees is still taken by its MIG UUID
    assert [g.id for g in discover_gpus(FakeDriverWithoutNvml())] == ["GPU-aaaa", "MIG-b-mig-0", "GPU-cccc"]


@pytest.mark.timeout(60)
def test_without_nvidia_smi_on_the_path_gpus_are_still_found_by_asking_the_driver() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = "/nonexistent"
    code = (
        "import json; from rvai_sdk.runtime._devices import gpu_ids, _driver_gpus; "
        "print(json.dumps([gpu_ids(), [g.id for g in _driver_gpus() or []]]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    listed, from_driver = json.loads(result.stdout.strip().splitlines()[-1])
    assert listed == from_driver  # here: no driver, no GPU, no error; on a GPU machine: the driver's list


def _fake_driver(tmp_path: Path, *libraries: str) -> dict[str, str]:
    """Build stand-ins for the driver's libraries from tests/integration/fake_driver; the environment to load them."""
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        if os.environ.get("RVAI_CI"):
            pytest.fail("no C compiler: the fake CUDA driver cannot be built")
        pytest.skip("no C compiler to build the fake CUDA driver")
    for library in libraries:
        source = ROOT / "tests" / "integration" / "fake_driver" / f"{library}.c"
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(tmp_path / f"{library}.so.1"), str(source)], check=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(LD_LIBRARY_PATH=str(tmp_path), PATH="/usr/bin:/bin")  # no nvidia-smi
    return env


def _listed(env: dict[str, str]) -> list[str]:
    code = "import json; from rvai_sdk.runtime._devices import gpu_ids; print(json.dumps(gpu_ids()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    listed: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return listed


@pytest.mark.timeout(120)
def test_the_cuda_driver_is_asked_through_its_c_interface_and_nvml_lists_the_mig_instances(tmp_path: Path) -> None:
    env = _fake_driver(tmp_path, "libcuda", "libnvidia-ml")
    assert _listed(env) == [
        "GPU-20212223-2425-2627-2829-2a2b2c2d2e2f",  # bus 01: first in PCI order, though CUDA lists it last
        "MIG-100-uuid",
        "MIG-101-uuid",
        "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f",  # bus c1
    ]


@pytest.mark.timeout(120)
def test_without_nvml_a_mig_instance_is_taken_by_the_uuid_cuda_gives_it(tmp_path: Path) -> None:
    env = _fake_driver(tmp_path, "libcuda")
    assert _listed(env) == [
        "GPU-20212223-2425-2627-2829-2a2b2c2d2e2f",
        "MIG-90919293-9495-9697-9899-9a9b9c9d9e9f",
        "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f",
    ]


if __name__ == "__main__":
    print(json.dumps(_serve(sys.argv[1])))
