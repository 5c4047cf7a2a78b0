"""`make demo` installs only the `demo` extra: the demo must run with nothing else of the other extras."""

from __future__ import annotations

import configparser
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import require_extra

ROOT = Path(__file__).resolve().parents[2]

# Top-level modules of the other extras (and of uvicorn[standard]), which .venv-demo does not have.
NOT_IN_DEMO = ("PIL", "pygraphviz", "paho", "psycopg", "ray", "torch", "uvloop", "httptools", "websockets", "watchfiles")

RUN_WITHOUT = textwrap.dedent(
    """
    import runpy
    import sys

    BLOCKED = set(sys.argv[1].split(","))


    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not in the demo extra")
            return None


    sys.meta_path.insert(0, Block())
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def test_the_demo_extra_lists_what_the_demo_imports_and_nothing_heavy() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    demo = {line.split(">")[0].split("[")[0].strip() for line in config["options.extras_require"]["demo"].split("\n") if line}
    assert {"fastapi", "uvicorn", "httpx", "av", "sqlalchemy"} <= demo
    assert not demo & {"torch", "ray", "mypy", "pytest", "mkdocs", "pygraphviz", "psycopg"}
    first = (ROOT / "examples" / "demo.py").read_text().splitlines()[0]
    assert first.startswith("# requires:")
    assert {m.strip() for m in first.split(":", 1)[1].split(",")} <= demo


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_demo_runs_without_the_other_extras() -> None:
    for module in ("fastapi", "av", "sqlalchemy"):
        require_extra(module)
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT, ",".join(NOT_IN_DEMO), str(ROOT / "examples" / "demo.py"), "--runtime", "debug"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "streaming a generated clip as two cameras" in result.stdout, result.stdout  # PyAV, not the fallback
    assert "0 failed" in result.stdout and "done" in result.stdout.splitlines()[-1]
