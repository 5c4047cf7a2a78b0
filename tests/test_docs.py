"""The documentation site builds with --strict: every page, link and API docstring resolves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_extra

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    require_extra("mkdocs")
    require_extra("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "runtime" / "index.html").is_file()
    assert "Inference" in (tmp_path / "site" / "reference" / "runtime" / "index.html").read_text()
