"""A user's ``mypy --strict`` sees the installed rvai_sdk, extensions included (``pip install -e .`` as ``make test`` does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "typed_project"

WRONG = """
from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.types import Integer

count: str = Integer(1)
source: int = DummySource.from_url("dummy:")

from dataclasses import dataclass
from rvai_sdk.data import Outputs

@dataclass
class Out(Outputs):
    n: Integer = Outputs.field()

Out(n="3")  # a typed field takes the plain type it wraps (int), not anything
"""


def _mypy(project: Path, *files: str) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` in ``project``, away from the repository: rvai_sdk comes only from the installed package."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MYPYPATH")}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", os.devnull, "--cache-dir", str(project.parent / "cache"), *files],
        cwd=project, capture_output=True, text=True, timeout=540, env=env,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mypy_strict_passes_on_a_typed_user_project_against_the_installed_package(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__init__.py", "conftest.py", "__pycache__"))
    (project / "wrong.py").write_text(WRONG)
    clean = _mypy(project, "typed_app.py")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Success: no issues found in 1 source file" in clean.stdout
    # The same run on wrong code fails on the types themselves, not on a missing module:
    # rvai_sdk's annotations reach the user, they are not Any.
    wrong = _mypy(project, "wrong.py")
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "import-not-found" not in wrong.stdout and "import-untyped" not in wrong.stdout, wrong.stdout
    assert 'wrong.py:5: error: Incompatible types in assignment (expression has type "Integer", variable has type "str")' in wrong.stdout
    assert 'wrong.py:6: error: Incompatible types in assignment (expression has type "DummySource", variable has type "int")' in wrong.stdout
    assert 'wrong.py:15: error: Argument "n" to "Out" has incompatible type "str"; expected "int"' in wrong.stdout
