"""The demo's HTTP endpoint answers for as long as the demo says it is up, and the demo says when it closes it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_extra

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
def test_the_demo_keeps_its_endpoint_up_until_it_says_it_closes_it() -> None:
    for module in ("sqlalchemy", "fastapi", "httpx"):
        require_extra(module)
    import httpx

    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--runtime", "debug", "--serve-seconds", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    url = ""
    try:
        for _ in range(400):  # bounded; pytest-timeout bounds a hang
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("HTTP endpoint: "):
                url = line.split()[2]
            if line.startswith("serving at "):
                break
        assert url and lines[-1].startswith(f"serving at {url} until"), "".join(lines)
        # everything the demo printed after the URL happened while the endpoint was up, and it still is
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        assert not any(line.startswith("closing the HTTP endpoint") for line in lines)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(lines) + out
    assert f"closing the HTTP endpoint at {url}" in out
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=5)
