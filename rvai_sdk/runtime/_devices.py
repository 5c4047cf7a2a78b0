"""Choosing each cell's device from its CellResources."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Mapping

from rvai_sdk.exc import ProcessError
from rvai_sdk.resources import CellResources


def visible_gpu_count() -> int:
    """How many CUDA GPUs this process sees (0 without torch)."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def gpu_ids() -> list[str]:
    """The GPUs this machine offers, without initialising CUDA in this process.

    ``CUDA_VISIBLE_DEVICES`` when set, else what ``nvidia-smi -L`` lists (indices),
    else none.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


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
