"""`make gpu-check` refuses loudly instead of passing vacuously: no GPU listed, or a GPU that torch cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _check(*args: str, listed: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GPU_PYTHON": sys.executable,
        "GPU_LIST_CMD": f"echo {listed!r}" if listed else "true",
        "CUDA_VISIBLE_DEVICES": "",  # whatever this torch is, it sees no GPU
    }
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=100, cwd=ROOT, env=env)


@pytest.mark.timeout(120)
def test_gpu_check_fails_loudly_when_a_gpu_is_listed_but_torch_cannot_use_it() -> None:
    result = _check(listed="GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)")
    assert result.returncode == 1
    assert "a GPU is listed but" in result.stderr and "torch cannot use it" in result.stderr
    assert "GPU_PYTHON=" in result.stderr  # says what to do


@pytest.mark.timeout(120)
def test_gpu_check_refuses_where_no_gpu_is_listed() -> None:
    result = _check(listed="")
    assert result.returncode == 1
    assert "no NVIDIA GPU is listed" in result.stderr


@pytest.mark.timeout(120)
def test_making_the_virtualenv_checks_torch_only_where_a_gpu_is_listed() -> None:
    assert _check("--torch-only", listed="").returncode == 0
    listed = _check("--torch-only", listed="GPU 0: NVIDIA H200 (UUID: GPU-0)")
    assert listed.returncode == 1 and "torch cannot use it" in listed.stderr
