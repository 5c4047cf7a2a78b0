"""The rvai-sdk command line, run as a user runs it (a subprocess, real entry points)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "rvai-sdk"

MODULE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from examples.quickstart import build_pipeline
    from rvai_sdk.pipeline import PipelineFactory

    pipeline = build_pipeline()
    factory = PipelineFactory(name="empty")
    not_a_pipeline = 42
    """
)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rvai_sdk.cli", *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "my_pipelines.py").write_text(MODULE.format(root=str(ROOT)))
    return tmp_path


def test_console_script_is_installed() -> None:
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "info" in result.stdout and "show" in result.stdout


def test_info_lists_inputs_outputs_cells_and_parameters(project: Path) -> None:
    result = run("info", "my_pipelines:pipeline", cwd=project)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pipeline 'Quickstart'" in out
    assert "  count: Integer  -> totals.count" in out
    assert "  mean: Float  <- mean.mean" in out
    assert "  totals: RunningTotal  [state Totals]" in out
    assert "parameter alarm_above: FloatRange = 4.0 (minimum 0.0)  Raise the alarm above this mean" in out


def test_info_json_is_the_full_description(project: Path) -> None:
    result = run("info", "my_pipelines:build_pipeline", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["name"] == "Quickstart"
    assert described["inputs"]["properties"]["count"]["type"] == "integer"


def test_show_writes_a_drawing_or_prints_dot(project: Path) -> None:
    from tests.conftest import require_extra

    require_extra("pygraphviz")
    result = run("show", "my_pipelines:pipeline", "-o", str(project / "graph.svg"), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "<svg" in (project / "graph.svg").read_text()
    dot = run("show", "my_pipelines:pipeline", cwd=project)
    assert dot.stdout.startswith('digraph "Quickstart"')


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("my_pipelines:factory", "pipeline 'empty' declares no output"),
        ("my_pipelines:not_a_pipeline", "'my_pipelines:not_a_pipeline' is a int, not a Pipeline"),
        ("my_pipelines:missing", "module 'my_pipelines' has no attribute 'missing'"),
        ("no_such_module:x", "cannot import module 'no_such_module'"),
        ("unregistered", "'unregistered' is neither module:attribute nor a registered pipeline"),
    ],
)
def test_bad_targets_fail_with_a_clear_message(project: Path, target: str, message: str) -> None:
    result = run("info", target, cwd=project)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_pipelines_registered_by_an_installed_package_are_found_by_name(project: Path) -> None:
    dist = project / "site" / "my_pipelines_pkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pipelines-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rvai_sdk.pipelines]\ncounting = my_pipelines:build_pipeline\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "site"), str(project)])}
    listing = run("list", cwd=project, env=env)
    assert "counting  (my_pipelines:build_pipeline)" in listing.stdout
    result = run("info", "counting", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert "pipeline 'Quickstart'" in result.stdout
