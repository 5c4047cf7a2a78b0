"""Choosing each cell's device from its CellResources."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rvai_sdk.exc import ProcessError
from rvai_sdk.resources import CellResources


def visible_gpu_count() -> int:
    """How many CUDA GPUs this process sees (0 without torch)."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class GpuDevice:
    """One GPU, or one MIG instance of a GPU, as the driver lists it.

    Attributes:
        id: what ``CUDA_VISIBLE_DEVICES`` takes to select it: ``GPU-<uuid>``, or ``MIG-<uuid>``
            for a MIG instance (a MIG instance can be selected only by its UUID).
        pci_bus_id: the PCI address of the (parent) GPU, ``0000:3b:00.0`` (its ``nvidia-smi`` index when
            only ``nvidia-smi -L`` was there to ask).
        name: the product name.
    """

    id: str
    pci_bus_id: str
    name: str

    @property
    def mig(self) -> bool:
        """Whether this is a MIG instance of a partitioned GPU."""
        return self.id.startswith("MIG-")


class CudaDriverProbe(Protocol):
    """What discovery asks the driver; :func:`discover_gpus` takes a fake in tests."""

    def devices(self) -> list[dict[str, str]]:
        """Every CUDA device: ``pci_bus_id``, ``name``, ``uuid`` (the GPU's) and ``uuid_v2`` (the MIG instance's)."""

    def mig_uuids(self, pci_bus_id: str) -> list[str] | None:
        """The ``MIG-...`` UUIDs of the GPU at ``pci_bus_id`` in MIG mode; ``None`` when it is not, or unknown."""


def discover_gpus(probe: CudaDriverProbe) -> list[GpuDevice]:
    """The GPUs (and MIG instances) ``probe`` reports, in PCI bus order (``nvidia-smi``'s numbering).

    CUDA numbers devices fastest-first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; sorting by
    PCI address here and selecting by UUID makes the choice independent of that setting.
    A GPU in MIG mode yields its MIG instances (by UUID), never its whole-GPU index.
    """
    found: list[GpuDevice] = []
    seen: set[str] = set()
    for device in sorted(probe.devices(), key=lambda d: d["pci_bus_id"].lower()):
        bus = device["pci_bus_id"].lower()
        if bus in seen:
            continue  # a second MIG instance CUDA listed for a GPU whose instances are already in
        instances = probe.mig_uuids(device["pci_bus_id"])
        if instances is None and device.get("uuid_v2") and device["uuid_v2"] != device["uuid"]:
            instances = [f"MIG-{device['uuid_v2']}"]  # MIG, as CUDA saw it (no NVML to list the rest)
        if instances is not None:
            seen.add(bus)
            found.extend(GpuDevice(uuid, bus, device["name"]) for uuid in instances)
        else:
            found.append(GpuDevice(f"GPU-{device['uuid']}", bus, device["name"]))
    return found


def gpu_ids() -> list[str]:
    """The GPUs this machine offers (``CUDA_VISIBLE_DEVICES`` values), without a CUDA context in this process.

    ``CUDA_VISIBLE_DEVICES`` when set, else what the CUDA driver lists (asked through
    ``libcuda`` in a short child process, so this process never initialises CUDA; no
    ``nvidia-smi`` needed), else what ``nvidia-smi -L`` lists, else none. Driver-listed
    GPUs come in PCI bus order, as UUIDs; MIG instances as ``MIG-`` UUIDs.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    return [gpu.id for gpu in machine_gpus()]


@functools.lru_cache(maxsize=1)
def machine_gpus() -> tuple[GpuDevice, ...]:
    """Every GPU and MIG instance of this machine, in PCI bus order (asked once per process)."""
    found = _driver_gpus()
    return tuple(found if found is not None else _smi_gpus())


def _driver_gpus() -> list[GpuDevice] | None:
    """Ask ``libcuda`` in a child process; ``None`` when there is no driver to ask."""
    if ctypes.util.find_library("cuda") is None and not _loadable("libcuda.so.1"):
        return None
    env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    here = str(Path(__file__).resolve().parents[2])  # the child imports this module from where it is
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    code = "import json, rvai_sdk.runtime._devices as d; print(json.dumps(d._probe_json()))"
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, env=env
        )
        listed = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    if not isinstance(listed, list):
        return None
    return [GpuDevice(**item) for item in listed]


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def _probe_json() -> list[dict[str, str]] | None:
    """In the child: the driver's GPUs as JSON-ready dicts, or ``None`` without a working driver."""
    try:
        probe = _CtypesProbe()
    except OSError:
        return None
    return [{"id": g.id, "pci_bus_id": g.pci_bus_id, "name": g.name} for g in discover_gpus(probe)]


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class _CtypesProbe:
    """:class:`CudaDriverProbe` through ``libcuda`` (CUDA driver API) and, for MIG, ``libnvidia-ml``."""

    def __init__(self) -> None:
        self._cuda = ctypes.CDLL("libcuda.so.1")
        self._check(self._cuda.cuInit(0), "cuInit")
        try:
            self._nvml: Any = ctypes.CDLL("libnvidia-ml.so.1")
            self._nvml_ok = self._nvml.nvmlInit_v2() == 0
        except (OSError, AttributeError):
            self._nvml_ok = False

    @staticmethod
    def _check(rc: int, call: str) -> None:
        if rc != 0:
            raise OSError(f"{call} failed with CUDA driver error {rc}")

    def devices(self) -> list[dict[str, str]]:
        cuda = self._cuda
        count = ctypes.c_int(0)
        self._check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        out = []
        for ordinal in range(count.value):
            device = ctypes.c_int(0)
            self._check(cuda.cuDeviceGet(ctypes.byref(device), ordinal), "cuDeviceGet")
            name = ctypes.create_string_buffer(256)
            self._check(cuda.cuDeviceGetName(name, 256, device), "cuDeviceGetName")
            bus = ctypes.create_string_buffer(32)
            self._check(cuda.cuDeviceGetPCIBusId(bus, 32, device), "cuDeviceGetPCIBusId")
            uuid = ctypes.create_string_buffer(16)
            self._check(cuda.cuDeviceGetUuid(uuid, device), "cuDeviceGetUuid")
            uuid_v2 = ctypes.create_string_buffer(16)
            has_v2 = hasattr(cuda, "cuDeviceGetUuid_v2") and cuda.cuDeviceGetUuid_v2(uuid_v2, device) == 0
            out.append(
                {
                    "pci_bus_id": bus.value.decode(),
                    "name": name.value.decode(),
                    "uuid": _uuid_text(uuid.raw),
                    "uuid_v2": _uuid_text(uuid_v2.raw) if has_v2 else "",
                }
            )
        return out

    def mig_uuids(self, pci_bus_id: str) -> list[str] | None:
        if not self._nvml_ok:
            return None
        nvml = self._nvml
        handle = ctypes.c_void_p()
        if nvml.nvmlDeviceGetHandleByPciBusId_v2(pci_bus_id.encode(), ctypes.byref(handle)) != 0:
            return None
        current, pending = ctypes.c_uint(0), ctypes.c_uint(0)
        if nvml.nvmlDeviceGetMigMode(handle, ctypes.byref(current), ctypes.byref(pending)) != 0 or current.value != 1:
            return None
        most = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetMaxMigDeviceCount(handle, ctypes.byref(most)) != 0:
            return None
        uuids = []
        for index in range(most.value):
            mig = ctypes.c_void_p()
            if nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index, ctypes.byref(mig)) != 0:
                continue  # an empty slot
            text = ctypes.create_string_buffer(96)
            if nvml.nvmlDeviceGetUUID(mig, text, 96) == 0:
                uuids.append(text.value.decode())
        return uuids


def _smi_gpus() -> list[GpuDevice]:
    """What ``nvidia-smi -L`` lists: GPU UUIDs, or the MIG UUIDs under a partitioned GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_smi_list(out)


def parse_smi_list(text: str) -> list[GpuDevice]:
    """GPUs from ``nvidia-smi -L`` output (PCI order); a GPU with MIG lines yields those instead.

    Example:
        >>> listing = "GPU 0: NVIDIA H100 (UUID: GPU-a1)\\n  MIG 3g.40gb Device 0: (UUID: MIG-b2)\\n"
        >>> [g.id for g in parse_smi_list(listing)]
        ['MIG-b2']
    """
    found: list[GpuDevice] = []
    gpu: GpuDevice | None = None
    migs: list[GpuDevice] = []

    def flush() -> None:
        if gpu is not None:
            found.extend(migs or [gpu])

    for line in text.splitlines():
        match = re.match(r"\s*(GPU|MIG) .*?:\s*(.*?)\s*\(UUID: ((?:GPU|MIG)-[^)]+)\)", line)
        if not match:
            continue
        kind, name, uuid = match.groups()
        if kind == "GPU":
            flush()
            gpu, migs = GpuDevice(uuid, str(len(found)), name), []
        elif gpu is not None:
            migs.append(GpuDevice(uuid, gpu.pci_bus_id, gpu.name))
    flush()
    return found


def gpu_need(resources: Mapping[str, CellResources]) -> float:
    """The GPUs one inference process needs: the largest share any of its cells asks for."""
    return max((r.gpus for r in resources.values()), default=0.0)


def resolve_devices(
    order: tuple[str, ...], resources: Mapping[str, CellResources], count: int | None = None
) -> dict[str, str]:
    """Cell ref → ``"cuda:0"`` for cells asking for a GPU, ``"cpu"`` otherwise.

    Args:
        order: the cell refs.
        resources: cell ref to its resources.
        count: GPUs visible (by default, asked of torch in this process).

    Raises:
        ProcessError: a cell asks for a GPU, none is visible and it did not set ``allow_cpu``.
    """
    devices = {ref: "cpu" for ref in order}
    wanting = [ref for ref in order if ref in resources and resources[ref].gpus > 0]
    if not wanting:
        return devices
    if count is None:
        count = visible_gpu_count()
    for ref in wanting:
        if count:
            devices[ref] = "cuda:0"
        elif not resources[ref].allow_cpu:
            raise ProcessError(
                f"cell {ref!r} asks for {resources[ref].gpus:g} GPU but no CUDA GPU is visible; run on a machine "
                f"with one, or pass CellResources(gpus=..., allow_cpu=True) to fall back to the CPU"
            )
    return devices
