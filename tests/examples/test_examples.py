"""Examples and the README quickstart run as users would run them."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_readme_quickstart_code_runs() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python block"
    module = types.ModuleType("readme_quickstart")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_as_a_script(example: Path) -> None:
    first = example.read_text().splitlines()[0]
    if first.startswith("# requires:"):
        for module in first.split(":", 1)[1].split(","):
            from tests.conftest import require_extra

            require_extra(module.strip())
    result = subprocess.run(
        [sys.executable, str(example), "--runtime", "debug"], capture_output=True, text=True, timeout=100, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the example printed nothing"


def test_quickstart_prints_per_stream_state() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "camera-1: count=6 total=18 mean=4.50 alarm=1" in lines
    assert "camera-2: count=1 total=4 mean=1.00 alarm=0" in lines
    assert "camera-2 after lowering the threshold to 1.0: mean=1.20 alarm=1" in lines
