"""``rvai-sdk serve`` started as a real subprocess, for the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start_serving(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str, list[str]]:
    """``python -m rvai_sdk serve ARGS``: the process, the URL of its banner, the lines read so far (stderr in stdout)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rvai_sdk", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for _ in range(200):  # the banner comes after a few lines (log records may come first); pytest-timeout bounds a hang
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("serving pipeline"):
            return process, line.split(" at ", 1)[1].split()[0], lines
    process.kill()
    process.wait(timeout=30)
    raise AssertionError("rvai-sdk serve printed no URL:\n" + "".join(lines))
