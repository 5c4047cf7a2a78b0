"""bench_gpu.py measures what it claims: one common window, replies counted inside it, counters differenced over it.

The window's arithmetic is checked alone; ``--cpu-smoke`` runs the whole benchmark on
the CPU with tiny frames (real driver processes, the local runtime) and its self-check.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_extra

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402
from bench_gpu import batch_delta, check_window, mean_batch, parse_streams, streams_label  # noqa: E402


def _report(**changes: Any) -> dict[str, Any]:
    report = {
        "done": True,
        "errors": [],
        "warm_at": 9.0,
        "window": [10.0, 20.0],
        "frames": 500,
        "replies_before": 40,
        "replies_after": 16,
        "running_at_close": 16,
        "streams": 16,
    }
    report.update(changes)
    return report


@pytest.mark.timeout(30)
def test_batch_statistics_are_the_calls_made_between_the_windows_two_snapshots() -> None:
    before = {1: 3, 4: 10}  # warm-up: small batches
    after = {1: 3, 4: 12, 64: 20, 37: 1}
    delta = batch_delta(before, after)
    assert delta == {4: 2, 37: 1, 64: 20}
    assert mean_batch(delta) == pytest.approx((8 + 37 + 1280) / 23)
    assert mean_batch(batch_delta(after, after)) == 0.0


@pytest.mark.timeout(30)
def test_streams_are_given_as_counts_with_an_optional_depth_of_frames_in_flight() -> None:
    assert parse_streams("64,128,64x4") == [(64, 1), (128, 1), (64, 4)]
    assert streams_label(64, 1) == "64 streams"
    assert streams_label(64, 4) == "64 streams x 4 in flight"
    for bad in ("64x", "x4", "sixty", "64x0", "0"):
        with pytest.raises(SystemExit, match="--streams"):
            parse_streams(bad)


@pytest.mark.timeout(30)
def test_a_window_all_drivers_shared_and_ran_through_passes_the_self_check() -> None:
    assert check_window([_report(), _report()], 10.0, 20.0) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"window": [11.4, 21.4]}, "not the common window"),
        ({"warm_at": 10.5}, "was not warm when the window opened"),
        ({"running_at_close": 12}, "12 of 16 streams ran until the window closed"),
        ({"replies_after": 0}, "did not cover the run"),
        ({"frames": 0}, "no reply inside the window"),
        ({"errors": ["CellError('classify')"]}, "requests failed"),
    ],
)
def test_a_window_a_driver_did_not_share_or_cover_fails_the_self_check(change: dict[str, Any], problem: str) -> None:
    problems = check_window([_report(), _report(**change)], 10.0, 20.0)
    assert len(problems) == 1 and problems[0].startswith("driver 1") and problem in problems[0]


@pytest.mark.timeout(30)
def test_writing_the_figures_replaces_the_marked_gpu_section_of_the_performance_page(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "performance.md").read_text()
    assert page.count("<!-- bench:gpu -->") == 1 and page.count("<!-- /bench:gpu -->") == 1
    copy = tmp_path / "performance.md"
    copy.write_text(page)
    write_section(copy, "gpu", "### GPU\n\nfirst figures")
    write_section(copy, "gpu", "### GPU\n\nsecond figures")
    text = copy.read_text()
    assert "second figures" in text and "first figures" not in text and text.count("<!-- bench:gpu -->") == 1
    assert text.index("<!-- bench:gpu -->") == page.index("<!-- bench:gpu -->")  # in place, not appended


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_cpu_smoke_run_measures_every_configuration_in_one_common_window_each() -> None:
    require_extra("torch")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--cpu-smoke"],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "self-check: OK" in out
    for concurrency in (1, 2):
        assert f"4 streams from 2 driver processes, concurrency {concurrency}" in out
    assert "of (a)" in out and "of (b)" in out  # ratios against both raw references


@pytest.mark.timeout(30)
def test_the_written_section_names_the_gpu_gives_both_ratios_and_quotes_the_examples_summary() -> None:
    import argparse

    from bench_gpu import Figure, render_section

    figures = [
        Figure("raw model, batch 64 already on the device", 8000.0, note="reference (a)"),
        Figure("raw model, batch 64 copied from page-locked host memory", 6400.0, note="reference (b)"),
        Figure("raw model, batch 1 on the device", 900.0),
        Figure("SDK on local, 64 streams from 4 driver processes, concurrency 1", 4000.0, 15.0, 30.0, "classify: mean batch 60.0"),
        Figure("SDK on local, 128 streams from 4 driver processes, concurrency 2", 6800.0, 18.0, 35.0, "classify: mean batch 64.0"),
    ]
    example = "camera-0: frames=20 label=class-3 score=0.0100\n2560 frames in 1.20 s (2133.3 frames/s) on local\n" \
        "preprocess: 40 calls, mean batch 64.0, max batch 64\nclassify: 40 calls, mean batch 64.0, max batch 64\n"
    args = argparse.Namespace(side=224, batch=64, seconds=8.0)
    text = render_section(figures, gpu_name="NVIDIA H100 80GB HBM3 (torch 2.11.0, CUDA 13.0)", args=args, example=example)
    assert "**NVIDIA H100 80GB HBM3 (torch 2.11.0, CUDA 13.0)**" in text
    assert "| SDK on local, 128 streams from 4 driver processes, concurrency 2 | 6,800 | 85% | 106% | 18.0 / 35.0 ms |" in text
    assert "Goal (the SDK's best row >= 80% of (a)): MET (85.0%)." in text
    assert "2560 frames in 1.20 s" in text and "classify: 40 calls" in text and "camera-0" not in text
