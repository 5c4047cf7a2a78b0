"""Benchmark scripts keep running (their figures are checked by people, not by tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_benchmark(script: str, *args: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("script", "goals", "section", "row"),
    [
        ("bench_executor.py", "goals: latency ratio", "executor", "| 3-cell chain, 64 streams in flight (closed loop) |"),
        ("bench_transport.py", "goals: small round trip", "transport", "8 driver processes x 64 in flight"),
    ],
)
def test_overhead_benchmarks_run_and_report_their_goals(
    tmp_path: Path, script: str, goals: str, section: str, row: str
) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark(script, "--quick", "--write", str(out), timeout=230)
    assert result.returncode == 0, result.stderr
    assert goals in result.stdout
    text = out.read_text()
    assert f"<!-- bench:{section} -->" in text and row in text


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_own_answer_probe_gets_its_answers_and_reports_all_three_paths() -> None:
    result = _run_benchmark("bench_transport.py", "--own-answer", "--quick")
    assert result.returncode == 0, result.stderr  # the probe asserts every answer it reads is a success
    line = result.stdout.strip().splitlines()[-1]
    assert "predict().result()" in line and "own answer (probe)" in line and "Pipe echo" in line


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_batching_benchmark_runs_and_reports_its_goals() -> None:
    result = _run_benchmark("bench_batching.py", "--quick", "--runtimes", "debug")
    assert result.returncode == 0, result.stderr
    assert "goals (" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_stream_benchmark_runs_and_reports_its_goal(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark("bench_stream.py", "--quick", "--write", str(out))
    assert result.returncode == 0, result.stderr
    assert "<!-- bench:stream -->" in out.read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_stream_positions_benchmark_runs_and_reports_its_ratios(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark("bench_stream_positions.py", "--quick", "--runtime", "debug", "--write", str(out))
    assert result.returncode == 0, result.stderr
    assert "ratios: none 1.00, sqlite " in result.stdout
    assert "<!-- bench:stream_positions -->" in out.read_text()


@pytest.mark.timeout(120)
def test_gpu_benchmark_refuses_to_run_without_cuda_and_says_why() -> None:
    from rvai_sdk.runtime._devices import gpu_ids

    if gpu_ids():
        pytest.skip("a GPU is present: the benchmark would run for real")
    result = _run_benchmark("bench_gpu.py", timeout=100)
    assert result.returncode == 2
    assert "--cpu-smoke" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_simulated_gpu_benchmark_passes_its_window_self_check_and_reports_the_goal() -> None:
    result = _run_benchmark("bench_gpu_host.py", "--quick", timeout=230)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout
    assert "self-check: OK" in result.stdout
    assert "| this tree | 2 | 8 |" in result.stdout and "of the simulated raw rate" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_streams_benchmark_runs_and_reports_its_goals(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark("bench_streams.py", "--quick", "--write", str(out))
    assert result.returncode == 0, result.stderr
    assert "goals (issue 21):" in result.stdout
    assert "memory per kept idle state:" in result.stdout
    text = out.read_text()
    assert "<!-- bench:streams -->" in text and "| local | batched | 256 |" in text


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_streams_benchmark_runs_another_checkout_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark(
        "bench_streams.py", "--quick", "--before", str(ROOT), "--rounds", "1", "--write", str(out), timeout=230
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("goals (issue 21):") == 2  # one child process per side
    text = out.read_text()
    assert "<!-- bench:streams-before-after -->" in text
    assert "| runtime | cell | streams | req/s before | req/s after |" in text
    assert "| local | batched | 256 |" in text


@pytest.mark.timeout(120)
def test_the_json_depth_benchmark_runs_and_reports_its_goals(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark("bench_json_depth.py", "--quick", "--write", str(out), timeout=100)
    assert result.returncode == 0, result.stderr
    assert "goals: nested lists checked/plain" in result.stdout and "| small /predict body |" in result.stdout
    assert "<!-- bench:json_depth -->" in out.read_text()


@pytest.mark.timeout(120)
def test_access_log_benchmark_runs_and_reports_the_cost_per_request() -> None:
    result = _run_benchmark("bench_logging.py", "--quick", timeout=100)
    assert result.returncode == 0, result.stderr
    assert "log off" in result.stdout and "us/request" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_state_store_benchmark_runs_and_reports_ratios_against_memory(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark("bench_state_store.py", "--quick", "--write", str(out), timeout=100)
    assert result.returncode == 0, result.stderr
    assert "| sqlite |" in result.stdout and "| redis |" in result.stdout and "vs memory" in result.stdout
    assert "<!-- bench:state_store -->" in out.read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_model_swap_benchmark_runs_and_reports_ratios_against_steady_state(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark("bench_model_swap.py", "--quick", "--write", str(out), timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rate vs steady" in result.stdout and "Failed requests: 0; sids whose counter skipped or repeated: 0" in result.stdout
    assert "<!-- bench:model_swap_debug -->" in out.read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_tracing_benchmark_runs_and_reports_on_over_off() -> None:
    result = _run_benchmark("bench_tracing.py", "--requests", "100", "--rounds", "1", timeout=220)
    assert result.returncode == 0, result.stderr
    assert "on/off" in result.stdout and "local, 3-cell chain" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_rescale_benchmark_runs_on_ray_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    result = _run_benchmark("bench_rescale.py", "--quick", "--write", str(out), timeout=220)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    text = out.read_text()
    assert "<!-- bench:rescale -->" in text
    for state in ("memory", "SQLite"):  # both state stores, each 1 -> 3 -> 1 with and without idle sids
        row = next((line for line in text.splitlines() if line.startswith(f"| {state} |")), None)
        assert row is not None and row.count("hand-over") == 4, row
