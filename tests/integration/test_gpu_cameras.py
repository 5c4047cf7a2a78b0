"""bench_cameras.py checks itself: ``--cpu-smoke`` runs the whole many-camera benchmark on the CPU.

Real driver processes on the local runtime, real H.264 clips decoded by VideoSource,
a tiny model, rows read back from SQLite; its figures mean nothing, its self-check does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_extra

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.timeout(300)
def test_the_cpu_smoke_run_measures_every_camera_count_and_reports_every_decode_option() -> None:
    require_extra("torch")
    require_extra("av")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cameras.py"), "--cpu-smoke"],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "self-check: OK" in out
    assert "N=1: per stream" in out and "N=2: per stream" in out
    for option in ("PyAV, CPU (codec threads): works", "PyAV, CUDA hwaccel", "torchcodec", "PyNvVideoCodec", "VideoSource(decode='auto'): works"):
        assert option in out, option


def test_the_written_section_gives_every_row_the_largest_n_held_and_the_probe() -> None:
    from argparse import Namespace

    from bench_cameras import Row, render

    rows = [
        Row(16, 29.8, 30.0, 0, 41.0, 35.0, 12.0, 40.0, "cuda 16", True),
        Row(32, 24.1, 27.5, 120, 77.0, 99.0, 30.0, 900.0, "cuda 32", False),
    ]
    probe = [
        {"name": "PyAV, CPU (codec threads)", "ok": True, "why": "PyAV 18.1.0", "frames": 60, "cpu_ms": 14.0, "fps": 90.0},
        {"name": "PyNvVideoCodec", "ok": False, "why": "ModuleNotFoundError: No module named 'PyNvVideoCodec'"},
    ]
    args = Namespace(seconds=5.0, per_driver=4, decode="auto")
    text = render(rows, probe, 16, {"no CUDA"}, args, "NVML")
    assert "| 16 | 29.8 / 30.0 | 0 | 41% |" in text and "| 32 | 24.1 / 27.5 | 120 | 77% |" in text
    assert "Largest N held at 30 fps with no drop: **16**" in text
    assert "PyNvVideoCodec: fails; ModuleNotFoundError" in text and "14.0 CPU ms/frame" in text
