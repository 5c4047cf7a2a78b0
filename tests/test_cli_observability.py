"""The rvai-sdk command line tells the truth: its logs (text and JSON), the port it got, its version, --model.

Every test runs the CLI as a user does (a subprocess) and reads back what it printed.
"""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rvai_sdk
from tests._serving import start_serving

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]

MODULE = textwrap.dedent(
    """
    import logging
    from dataclasses import dataclass

    from rvai_sdk.cell import Cell, cell
    from rvai_sdk.context import InferenceContext, ModelContext
    from rvai_sdk.data import Inputs, Outputs, Parameters, State
    from rvai_sdk.pipeline import PipelineFactory
    from rvai_sdk.types import Integer, String


    @dataclass
    class In(Inputs):
        x: Integer = Inputs.field()


    @dataclass
    class Out(Outputs):
        y: Integer = Outputs.field()
        model: String = Outputs.field()


    @dataclass
    class Count(State):
        n: Integer = State.field(default=Integer(0))


    @cell(state=Count)
    class Picky(Cell):
        @classmethod
        def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> str:
            return str(model_path)

        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
            context.state.n = Integer(context.state.n + 1)
            logging.getLogger("my_cells").info("picky saw x=%d", inputs.x)
            if inputs.x == -12345 or context.state.n % 2 == 0 and context.sid and context.sid.startswith("source"):
                raise ValueError(f"picky refuses x={inputs.x}")
            return Out(y=inputs.x, model=String(context.model))


    pf = PipelineFactory(name="picky")
    picky = pf.add_cell(ref="picky", cell=Picky())
    pf.declare_input(ref="x", input=picky.inputs.x)
    pf.declare_output(ref="y", output=picky.outputs.y)
    pf.declare_output(ref="model", output=picky.outputs.model)
    pipeline = pf.build()
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "picky_pipelines.py").write_text(MODULE)
    return tmp_path


def cli(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rvai_sdk", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def json_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_version_and_python_dash_m(project: Path) -> None:
    result = cli("--version", cwd=project)
    assert result.returncode == 0 and result.stdout.strip() == f"rvai-sdk {rvai_sdk.__version__}"
    helped = cli("serve", "--help", cwd=project)
    assert helped.returncode == 0 and "--model REF=PATH" in helped.stdout and "--log-format" in helped.stdout


def test_serve_logs_json_access_lines_failures_with_traceback_and_the_inference_processs_records(project: Path) -> None:
    httpx = pytest.importorskip("httpx")
    weights = project / "weights.bin"
    weights.write_bytes(b"w")
    process, url, lines = start_serving(
        "picky_pipelines:pipeline", "--runtime", "local", "--port", "0", "--log-format", "json",
        "--model", "picky=weights.bin", cwd=project,
    )
    try:
        ok = httpx.post(f"{url}/predict", json={"inputs": {"x": 3}, "sid": "cam-1"}, headers={"X-Request-ID": "req-ok-1"}, timeout=30)
        assert ok.status_code == 200, ok.text
        assert ok.json()["outputs"] == {"y": 3, "model": str(weights)}  # --model reached load_model, made absolute
        assert ok.headers["x-request-id"] == "req-ok-1"
        bad = httpx.post(f"{url}/predict", json={"inputs": {"x": -12345}, "sid": "cam-2"}, timeout=30)
        assert bad.status_code == 500 and bad.json()["error"]["cell"] == "picky"
        bad_id = bad.headers["x-request-id"]
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    records = json_records("".join(lines) + out)

    access = [r for r in records if r["logger"] == "rvai_sdk.http.access" and r.get("route") == "/predict"]
    assert [(r["method"], r["status"], r["sid"], r["request_id"]) for r in access] == [
        ("POST", 200, "cam-1", "req-ok-1"),
        ("POST", 500, "cam-2", bad_id),
    ]
    assert all(r["level"] == "INFO" and r["process"] == "driver[http]" and r["duration_ms"] >= 0 for r in access)

    failures = [r for r in records if r["logger"] == "rvai_sdk.http.errors"]
    assert len(failures) == 1, failures  # one record per failed request
    failure = failures[0]
    assert failure["level"] == "ERROR" and failure["request_id"] == bad_id and failure["sid"] == "cam-2"
    assert failure["cell"] == "picky" and failure["status"] == 500
    assert "ValueError: picky refuses x=-12345" in failure["exception"] and "in call" in failure["exception"]

    seen = [r for r in records if r["logger"] == "my_cells"]
    assert [r["message"] for r in seen] == ["picky saw x=3", "picky saw x=-12345"]
    assert {r["process"] for r in seen} == {"inference[picky]"}


def test_stream_to_the_dummy_sink_prints_every_result_and_each_failed_frame_with_its_traceback(project: Path) -> None:
    result = cli(
        "stream", "picky_pipelines:pipeline", "--source", "dummy:?rate=0", "--sink", "dummy:", "--frames", "4",
        "--interval", "0.2", "--model", "picky=any-name", "--log-level", "INFO", cwd=project,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    written = [line for line in lines if "driver[stream] rvai_sdk.sinks.dummy:" in line]
    assert len(written) == 4, result.stderr  # every result, failed ones included
    assert sum(" complete: " in line for line in written) == 2 and sum(" failed: " in line for line in written) == 2
    assert '"model": "any-name"' in result.stderr  # a --model value that is no file is passed on as given
    failed = [i for i, line in enumerate(lines) if "ERROR" in line and "rvai_sdk.extensions.source_sink" in line]
    assert len(failed) == 2, result.stderr  # one record per failed frame
    for i in failed:
        assert "in cell 'picky'" in lines[i] and "(sid 'source-1')" in lines[i]
        traceback = "\n".join(lines[i + 1 : i + 12])
        assert "Traceback (most recent call last)" in traceback and "ValueError: picky refuses" in traceback


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Another server on the port: answers every GET with 200, as a ready server would."""

    def do_GET(self) -> None:
        body = b'{"status": "ready"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_serve_on_a_port_another_server_holds_says_so_and_how_to_fix_it(project: Path, impostor: int) -> None:
    result = cli("serve", "picky_pipelines:pipeline", "--runtime", "debug", "--port", str(impostor), "--duration", "30", cwd=project)
    assert result.returncode == 2
    assert "serving pipeline" not in result.stdout  # never claims the other server's port
    assert result.stderr.strip().splitlines()[-1] == (
        f"rvai-sdk: UsageError: port {impostor} is in use; pick another with --port, or --port 0 for any free port"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope=x"], "pipeline 'picky' has no cell 'nope'; its cells are: picky"),
        (["--model", "picky"], "--model 'picky' is not REF=PATH"),
        (["--log-level", "loud"], "invalid choice: 'loud'"),
    ],
)
def test_bad_model_and_log_options_fail_with_one_clear_line(project: Path, args: list[str], message: str) -> None:
    result = cli("serve", "picky_pipelines:pipeline", "--runtime", "debug", "--duration", "1", *args, cwd=project)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_serve_on_ray_forwards_the_replicas_records_and_stops_cleanly_on_sigterm(project: Path) -> None:
    from tests.conftest import require_extra

    require_extra("ray")
    httpx = pytest.importorskip("httpx")
    process, url, lines = start_serving("picky_pipelines:pipeline", "--runtime", "ray", "--port", "0", cwd=project)
    try:
        ok = httpx.post(f"{url}/predict", json={"inputs": {"x": 5}, "sid": "cam-1"}, timeout=60)
        assert ok.status_code == 200, ok.text
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    text = "".join(lines) + out
    assert process.returncode == 0, text  # Ray's own SIGTERM handler used to abort the process here
    assert text.rstrip().endswith("stopped")
    assert "INFO    inference[picky] my_cells: picky saw x=5" in text  # from the replica actor, once
    assert text.count("picky saw x=5") == 1
    assert "INFO    driver[http] rvai_sdk.http.access: POST /predict 200" in text
