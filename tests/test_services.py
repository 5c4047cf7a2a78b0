"""Named background services, run as a user runs them: ``serve|stream --detach``, then ``ps``, ``logs``, ``stop``, ``rm``
from other processes; the stream's progress display on a terminal and off it.

Each test has a registry of its own (``RVAI_SDK_HOME`` in a temporary directory) and
stops what it started, by name, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

MODULE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from examples.quickstart import build_pipeline

    pipeline = build_pipeline()
    """
)

pytestmark = pytest.mark.timeout(180)


class Cli:
    """``rvai-sdk`` as subprocesses in one project directory, with one registry."""

    def __init__(self, cwd: Path, home: Path) -> None:
        self.cwd = cwd
        self.home = home
        self.env = {**os.environ, "RVAI_SDK_HOME": str(home)}
        self.env.pop("RVAI_SDK_SERVICE", None)

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rvai_sdk.cli", *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.cwd, env=self.env,
        )

    def ok(self, *args: str, timeout: float = 120) -> str:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"rvai-sdk {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def ps(self, *names: str) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in json.loads(self.ok("ps", "--json", *names))}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    (tmp_path / "my_pipelines.py").write_text(MODULE.format(root=str(ROOT)))
    runner = Cli(tmp_path, tmp_path / "home")
    try:
        yield runner
    finally:  # whatever a test left running (in-process: a CLI start costs a second)
        from rvai_sdk.services import LIVE, Registry, stop_service

        if runner.home.exists():
            registry = Registry(runner.home)
            for record in registry.all():
                if record.status in LIVE:
                    stop_service(record.name, timeout=5, registry=registry)


def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """``check()``'s first truthy answer, asked every 0.1 s for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last: {answer!r})")
        pause.wait(0.1)


def gone(pid: int) -> bool:
    """No process ``pid`` runs (none, or a zombie not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_detached_server_is_listed_scraped_stopped_and_removed_from_other_processes(cli: Cli) -> None:
    httpx = pytest.importorskip("httpx")
    parser = pytest.importorskip("prometheus_client.parser")
    out = cli.ok("serve", "my_pipelines:pipeline", "--runtime", "local", "--port", "0", "--detach", "--name", "web")
    assert "started service 'web'" in out, out

    record = cli.ps()["web"]
    assert record["status"] == "running" and record["kind"] == "serve" and record["runtime"] == "local"
    url = record["url"]
    assert url == f"http://127.0.0.1:{record['ports']['http']}" and url in out
    table = cli.ok("ps")
    assert re.search(rf"^web\s+running\s+{record['pid']}\s+http:{record['ports']['http']}\s+\d+s\s+serve", table, re.M), table

    for i in range(3):
        assert httpx.post(f"{url}/predict", json={"inputs": {"count": i}, "sid": "cam"}, timeout=30).status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text)
        for s in family.samples
    }
    predict = (("method", "POST"), ("pipeline", "Quickstart"), ("route", "/predict"))
    assert samples[("rvai_http_request_duration_seconds_count", predict)] == 3
    assert samples[("rvai_http_request_duration_seconds_bucket", tuple(sorted((*predict, ("le", "+Inf")))))] == 3
    assert samples[("rvai_http_request_duration_seconds_sum", predict)] > 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("process_open_fds", ())] > 0

    counters = until(lambda: cli.ps("web")["web"]["counters"].get("succeeded") == 3, "ps shows the 3 requests")
    assert counters
    assert "serving pipeline 'Quickstart' on the local runtime at " + url in cli.ok("logs", "web")

    stopped = cli.ok("stop", "web")
    assert re.match(r"web: stopped \(graceful, [\d.]+ s\)", stopped), stopped
    record = cli.ps()["web"]
    assert record["status"] == "stopped" and record["exit_code"] == 0, record
    assert "stopped by rvai-sdk stop" in record["reason"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=5)
    assert cli.ok("logs", "web", "-n", "1").strip() == "stopped"
    assert cli.ok("logs", "web", "-n", "0") == "", "-n 0 printed the whole log"

    assert cli.ok("rm", "web").strip() == "removed web"
    assert "no services" in cli.ok("ps")
    assert not Path(record["log"]).exists()


def test_a_service_killed_with_sigkill_shows_failed_with_the_signal_never_running(cli: Cli) -> None:
    cli.ok("serve", "my_pipelines:pipeline", "--runtime", "debug", "--port", "0", "--detach", "--name", "victim")
    pid = cli.ps()["victim"]["pid"]
    os.kill(pid, signal.SIGKILL)
    record = cli.ps()["victim"]  # at once: the row said running, the process is gone
    assert record["status"] == "failed", record
    assert record["reason"] == "killed by SIGKILL" and record["exit_code"] == -9, record
    assert re.search(r"^victim\s+failed\s+\d+\s+.*killed by SIGKILL$", cli.ok("ps"), re.M)
    assert "not running (failed: killed by SIGKILL)" in cli.ok("stop", "victim")
    cli.ok("rm", "victim")


def test_a_service_whose_supervisor_died_too_shows_failed_saying_no_status_was_recorded(cli: Cli) -> None:
    cli.ok("serve", "my_pipelines:pipeline", "--runtime", "debug", "--port", "0", "--detach", "--name", "orphan")
    record = cli.ps()["orphan"]
    os.kill(record["supervisor_pid"], signal.SIGKILL)
    os.kill(record["pid"], signal.SIGKILL)
    # the service process is not our child: wait until it is gone (reaped by init) before asking
    until(lambda: gone(record["pid"]), "the process is gone")
    after = cli.ps()["orphan"]
    assert after["status"] == "failed", after
    assert "no exit status was recorded" in after["reason"] and str(record["pid"]) in after["reason"], after


def test_a_service_that_fails_to_start_says_why_and_shows_failed(cli: Cli) -> None:
    result = cli("serve", "no_such_module:pipeline", "--runtime", "debug", "--detach", "--name", "broken")
    assert result.returncode == 1
    why = "exited with status 2: rvai-sdk: TargetError: cannot import module 'no_such_module'"
    assert f"rvai-sdk: service 'broken' failed while starting: {why}" in result.stderr, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    record = cli.ps()["broken"]
    assert record["status"] == "failed" and record["exit_code"] == 2 and record["reason"].startswith(why), record


def test_names_are_checked_a_running_service_is_not_removed_and_stop_forces_one_past_its_timeout(cli: Cli) -> None:
    result = cli("logs", "nope")
    assert result.returncode == 2
    assert "ServiceNotFoundError: no service named 'nope' (known: none); rvai-sdk ps lists them" in result.stderr
    bad = cli("serve", "my_pipelines:pipeline", "--detach", "--name", "no/slash")
    assert bad.returncode == 2 and "--name 'no/slash' cannot name a service" in bad.stderr

    cli.ok("serve", "my_pipelines:pipeline", "--runtime", "debug", "--port", "0", "--detach")
    name = "serve-my_pipelines-pipeline"  # the default: command and target
    assert cli.ps()[name]["status"] == "running"
    taken = cli("serve", "my_pipelines:pipeline", "--runtime", "debug", "--port", "0", "--detach", "--name", name)
    assert taken.returncode == 2 and f"a service named {name!r} already exists (running)" in taken.stderr
    refused = cli("rm", name)
    assert refused.returncode == 2 and f"stop them first (rvai-sdk stop {name})" in refused.stderr
    assert cli.ps()[name]["status"] == "running"

    out = cli.ok("stop", name, "--timeout", "0")  # no time for a graceful stop: SIGKILL
    assert f"{name}: stopped (forced with SIGKILL after the graceful stop timed out" in out, out
    record = cli.ps()[name]
    assert record["status"] == "stopped" and record["exit_code"] == -9, record
    assert cli.ok("rm", name).strip() == f"removed {name}"
    assert cli.ps() == {}


def test_a_detached_stream_reports_its_counters_and_logs_follow_it_to_its_end(cli: Cli) -> None:
    out = cli.ok(
        "stream", "my_pipelines:pipeline", "--runtime", "debug", "--source", "cam=dummy:?rate=100",
        "--sink", "log=dummy:", "--interval", "0.2", "--detach", "--name", "cams",
    )
    assert "started service 'cams'" in out, out
    until(lambda: cli.ps("cams")["cams"]["counters"].get("written", 0) >= 5, "ps shows written frames")
    follow = subprocess.Popen(
        [sys.executable, "-m", "rvai_sdk.cli", "logs", "cams", "-f"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cli.cwd, env=cli.env,
    )
    try:
        assert "cams: stopped (graceful" in cli.ok("stop", "cams")
        followed, _ = follow.communicate(timeout=60)  # -f ends by itself once the service ended
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0
    assert re.search(r"^\[\s*[\d.]+ s\] cam: [\d.]+ frames/s, \d+ dropped, \d+ written, \d+ processed", followed, re.M), followed
    summary = re.search(r"^cam: (\d+) processed, 0 failed, \d+ dropped, (\d+) written", followed, re.M)
    assert summary is not None, followed
    record = cli.ps()["cams"]
    assert record["status"] == "stopped" and record["counters"]["processed"] == int(summary.group(1)), record


def test_stream_progress_is_plain_lines_off_a_terminal(cli: Cli) -> None:
    result = cli(
        "stream", "my_pipelines:pipeline", "--runtime", "debug", "--source", "cam=dummy:?rate=200",
        "--sink", "log=dummy:", "--frames", "40", "--interval", "0.05",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert lines, result.stdout
    for line in lines:
        assert re.fullmatch(r"\[\s*[\d.]+ s\] cam: [\d.]+ frames/s, \d+ dropped, \d+ written, \d+ processed( \(\w+\))?", line), line
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert re.search(r"^cam: 40 processed, 0 failed, 0 dropped, 40 written", result.stdout, re.M), result.stdout


def test_stream_progress_on_a_terminal_is_a_live_table_per_source(cli: Cli) -> None:
    pytest.importorskip("rich")
    import pty

    main, replica = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "rvai_sdk.cli", "stream", "my_pipelines:pipeline", "--runtime", "debug",
         "--source", "cam=dummy:?rate=200", "--sink", "log=dummy:", "--frames", "40", "--interval", "0.05"],
        stdin=subprocess.DEVNULL, stdout=replica, stderr=replica, cwd=cli.cwd,
        env={**cli.env, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(replica)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the terminal closes (the command ended); bounded
        if not select.select([main], [], [], 1.0)[0]:
            continue
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert process.wait(timeout=60) == 0
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    for header in ("source", "frames/s", "processed", "dropped", "written", "dead-lettered", "state"):
        assert header in screen, screen
    assert re.search(r"cam\s*│\s*[\d.]+\s*│\s*40\s*│\s*0\s*│\s*40\s*│\s*0\s*│\s*ended", screen), screen


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_detached_server_on_the_ray_runtime_runs_and_stops(cli: Cli) -> None:
    from tests.conftest import require_extra

    require_extra("ray")
    httpx = pytest.importorskip("httpx")
    cli.ok("serve", "my_pipelines:pipeline", "--runtime", "ray", "--port", "0", "--detach", "--name", "on-ray", timeout=240)
    record = cli.ps()["on-ray"]
    assert record["status"] == "running" and record["runtime"] == "ray"
    assert httpx.post(f"{record['url']}/predict", json={"inputs": {"count": 1}}, timeout=60).status_code == 200
    assert "on-ray: stopped (graceful" in cli.ok("stop", "on-ray", "--timeout", "60", timeout=120)
    assert cli.ps()["on-ray"]["status"] == "stopped"
