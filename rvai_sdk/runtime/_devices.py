"""Choosing each cell's device from its CellResources."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from rvai_sdk.exc import ProcessError
from rvai_sdk.resources import CellResources


def visible_gpu_count() -> int:
    """How many CUDA GPUs this process sees (0 without torch)."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_devices(order: tuple[str, ...], resources: Mapping[str, CellResources]) -> dict[str, str]:
    """Cell ref → ``"cuda:0"`` for cells asking for a GPU, ``"cpu"`` otherwise.

    Raises:
        ProcessError: a cell asks for a GPU, none is visible and it did not set ``allow_cpu``.
    """
    devices = {ref: "cpu" for ref in order}
    wanting = [ref for ref in order if ref in resources and resources[ref].gpus > 0]
    if not wanting:
        return devices
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
