"""Page-locking with real CUDA (run by ``make gpu-check``): return codes, slot reuse under driver churn, frames intact.

Marked ``gpu``: skipped where torch has no CUDA GPU. The same bookkeeping is checked on
every machine with a CUDA shim in ``tests/unit/transport/test_shm_pinning.py``.
"""

from __future__ import annotations

import dataclasses
import gc
import mmap
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.drivers import DriverParameters, PipelineDriver
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.resources import CellResources
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Image, Integer
from tests.integration.test_drivers import wait_until

ALREADY_REGISTERED = 712  # cudaErrorHostMemoryAlreadyRegistered


def _cuda() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch with a CUDA GPU")
    return torch


class Recording:
    """The real CUDA calls, with every return code kept."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.codes: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()

    def host_register(self, address: int, size: int) -> int:
        rc = self.api.host_register(address, size)
        with self.lock:
            self.codes.append(("register", address, rc))
        return int(rc)

    def host_unregister(self, address: int) -> int:
        rc = self.api.host_unregister(address)
        with self.lock:
            self.codes.append(("unregister", address, rc))
        return int(rc)

    def clear_error(self) -> None:
        self.api.clear_error()


@pytest.fixture
def real_api() -> Iterator[Recording]:
    torch = _cuda()
    from rvai_sdk.transport.shm import _TorchCudaHostApi

    torch.cuda.init()
    yield Recording(_TorchCudaHostApi(torch.cuda.cudart(), torch))


@pytest.mark.gpu
@pytest.mark.timeout(120)
def test_cuda_reports_a_second_registration_and_the_registry_checks_it_and_clears_the_error(real_api: Recording) -> None:
    import ctypes

    torch = _cuda()
    from rvai_sdk.transport.shm import HostRegistry

    fd = os.memfd_create("probe", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 << 20)
    mapped = mmap.mmap(fd, 1 << 20)
    os.close(fd)
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))

    assert real_api.host_register(address, 1 << 20) == 0
    assert real_api.host_register(address, 1 << 20) == ALREADY_REGISTERED  # the code the old path ignored
    real_api.clear_error()
    assert torch.ones(4, device="cuda").sum().item() == 4  # no stale CUDA error surfaces in torch

    registry = HostRegistry(real_api)
    assert not registry.register(address, 1 << 20)  # registered behind its back: CUDA refuses, the slot goes unpinned
    assert registry.failures == 1
    assert torch.ones(3, device="cuda").sum().item() == 3  # the registry reset CUDA's last error
    assert real_api.host_unregister(address) == 0

    assert registry.register(address, 1 << 20)
    assert registry.register(address, 1 << 20)  # a new mapping at a reused address: released first, registered again
    registry.unregister(address)
    assert registry.pinned() == {}
    assert [rc for _, _, rc in real_api.codes[-4:]] == [0, 0, 0, 0]
    del mapped


@pytest.mark.gpu
@pytest.mark.timeout(180)
def test_real_registrations_succeed_and_are_all_released_while_drivers_come_and_go(real_api: Recording) -> None:
    from rvai_sdk.transport.shm import HostRegistry, SlotMaps, SlotPool, use_host_registry

    use_host_registry(HostRegistry(real_api))
    try:
        rng = np.random.default_rng(0)
        torch = _cuda()
        for round_ in range(6):
            pool, maps, released = SlotPool(), SlotMaps(), []
            frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(6)]
            views = []
            for frame in frames:
                slot = pool.lease(frame, "peer")
                assert slot is not None
                maps.add(pool.id, slot.id, os.dup(slot.fd), slot.size)
                views.append(maps.view(pool.id, slot.id, frame.dtype.str, frame.shape, lambda: released.append(1)))
            on_device = [torch.from_numpy(v).to("cuda", non_blocking=True) for v in views]
            assert all(torch.from_numpy(v).is_pinned() for v in views)
            torch.cuda.synchronize()
            assert all(np.array_equal(d.cpu().numpy(), f) for d, f in zip(on_device, frames))
            del views, on_device
            maps.clear()
            pool.close()
            del pool, maps
            gc.collect()
    finally:
        use_host_registry(None)
    registers = [(a, rc) for call, a, rc in real_api.codes if call == "register"]
    unregisters = [(a, rc) for call, a, rc in real_api.codes if call == "unregister"]
    assert [rc for _, rc in registers] == [0] * 36, registers
    assert [rc for _, rc in unregisters] == [0] * 36, unregisters
    assert len({a for a, _ in registers}) < 36  # addresses were reused: the churn tested what it should


@dataclasses.dataclass
class FrameIn(Inputs):
    frame: Image = Inputs.field()


@dataclasses.dataclass
class ChecksumOut(Outputs):
    checksum: Integer = Outputs.field(description="sum of the frame's bytes, computed on the GPU")
    pinned: Integer = Outputs.field(description="1 if the frame arrived in page-locked memory")
    held: Integer = Outputs.field(description="page-locked slots held in the inference process now")
    failures: Integer = Outputs.field(description="failed registrations so far")


class Checksum(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameIn) -> ChecksumOut:
        import torch

        from rvai_sdk.transport.shm import host_registry

        source = torch.from_numpy(np.asarray(inputs.frame))
        on_device = source.to(context.device, non_blocking=True)
        total = int(on_device.sum(dtype=torch.int64).item())  # waits for the copy before the frame is let go
        gc.collect()
        registry = host_registry()
        return ChecksumOut(
            checksum=Integer(total),
            pinned=Integer(int(source.is_pinned())),
            held=Integer(len(registry.pinned()) if registry else -1),
            failures=Integer(registry.failures if registry else -1),
        )


@dataclasses.dataclass
class FramesParameters(DriverParameters):
    seed: Integer = DriverParameters.field(default=Integer(0))
    count: Integer = DriverParameters.field(default=Integer(32))


class FramesDriver(PipelineDriver):
    parameters_class = FramesParameters

    def __init__(self, parameters: Any = None) -> None:
        super().__init__(parameters)
        self._report: dict[str, Any] = {"done": False}

    def run(self, inference: Any, resources: Any) -> None:
        p = self.get_parameters()
        assert isinstance(p, FramesParameters)
        rng = np.random.default_rng(int(p.seed))
        frames = [Image(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(int(p.count))]
        futures = [inference.predict({"frame": f}, sid=f"s{i % 8}") for i, f in enumerate(frames)]
        outs = [future.result(timeout=120) for future in futures]
        self._report = {
            "done": True,
            "wrong": sum(int(o["checksum"]) != int(f.sum(dtype=np.int64)) for o, f in zip(outs, frames)),
            "unpinned": sum(1 - int(o["pinned"]) for o in outs),
            "failures": max(int(o["failures"]) for o in outs),
        }
        self.wait_stopped()

    def stats(self) -> dict[str, Any]:
        return self._report


@pytest.mark.gpu
@pytest.mark.timeout(300)
def test_frames_from_driver_processes_arrive_intact_and_pinned_on_the_gpu_as_drivers_come_and_go() -> None:
    _cuda()
    pf = PipelineFactory(name="checksum")
    c = pf.add_cell(ref="c0", cell=Checksum())
    pf.declare_input(ref="frame", input=c.inputs.frame)
    for port in ("checksum", "pinned", "held", "failures"):
        pf.declare_output(ref=port, output=getattr(c.outputs, port))
    inference = Inference(pipeline=pf.build(), resources={"c0": CellResources(gpus=1)})
    with init("local") as rt, rt.start_inference(inference) as proc:
        for round_ in range(4):
            handle = proc.add_driver(f"frames-{round_}", FramesDriver, parameters={"seed": round_, "count": 32})
            wait_until(lambda: handle.stats().get("done", False), timeout=120, what=f"driver {round_} to finish")
            report = handle.stats()
            proc.remove_driver(handle.pid)
            assert report == {"done": True, "wrong": 0, "unpinned": 0, "failures": 0}, report
        small = Image(np.ones((4, 4, 3), dtype=np.uint8))  # inline, not in a slot
        wait_until(
            lambda: proc.predict({"frame": small}).result(timeout=60)["held"] == 0,
            timeout=60,
            what="every slot of the departed drivers to be unregistered",
        )
