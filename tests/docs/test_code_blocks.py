"""Every Python block of the documentation runs as written (or says why it cannot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs._docs_code import DOCS, ROOT, blocks, pages

PAGES = [str(page.relative_to(ROOT)) for page in pages()]


def test_every_block_left_out_says_why() -> None:
    unexplained = [
        f"{block.page}:{block.line}" for page in pages() for block in blocks(page) if block.skip_reason == ""
    ]
    assert unexplained == [], f"<!-- not-runnable: ... --> needs a reason: {unexplained}"


def test_the_docs_have_python_to_run() -> None:
    assert len(PAGES) >= 10 and (DOCS / "guides" / "serve_http.md").relative_to(ROOT).as_posix() in PAGES


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_of_the_page_runs(page: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    script = f"from tests.docs._docs_code import run_page; run_page({page!r})"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=280, env=env
    )
    assert result.returncode == 0, (result.stdout[-3000:] + "\n" + result.stderr[-6000:])
