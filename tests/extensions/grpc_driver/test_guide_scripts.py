"""The done-when of the Open Inference Protocol: the guide's Triton client scripts, HTTP and gRPC, run unchanged
but for their URL against a real ``rvai-sdk serve --grpc-port`` (a subprocess, the local runtime)."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from tests._serving import start_serving

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "guides" / "open_inference_protocol.md"


def guide_script(marker: str) -> str:
    """The ```python block right after ``<!-- marker -->`` in the guide."""
    text = GUIDE.read_text()
    head = f"<!-- {marker} -->\n```python\n"
    start = text.index(head) + len(head)
    return text[start : text.index("```", start)]


def code_lines(script: str) -> list[str]:
    return [line.split("  #", 1)[0].rstrip() for line in script.splitlines() if not line.lstrip().startswith("#")]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_guides_triton_scripts_run_against_rvai_sdk_serve_with_only_their_url_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http_script, grpc_script = guide_script("triton-client-script"), guide_script("triton-grpc-client-script")
    assert 'url="localhost:8000"' in http_script and "tritonclient.http" in http_script
    assert 'url="localhost:8001"' in grpc_script and "tritonclient.grpc" in grpc_script
    # the same client, but for its module, its URL and the metadata as JSON (code lines; the comments differ)
    as_http = grpc_script.replace("grpcclient", "httpclient").replace("tritonclient.grpc", "tritonclient.http")
    as_http = as_http.replace("8001", "8000").replace(", as_json=True", "")
    assert code_lines(as_http) == code_lines(http_script)
    (tmp_path / "guide_pipeline.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from tests.docs.fixtures import counter_pipeline

            pipeline = counter_pipeline()  # the README's quickstart: MyPipeline, input -> output
            """
        )
    )
    process, url, lines = start_serving(
        "guide_pipeline:pipeline", "--runtime", "local", "--port", "0", "--grpc-port", "0", cwd=tmp_path
    )
    try:
        assert process.stdout is not None
        for _ in range(50):  # the gRPC line follows the banner
            line = process.stdout.readline()
            lines.append(line)
            if not line or "gRPC" in line:
                break
        assert "gRPC" in lines[-1], "".join(lines)
        grpc_address = lines[-1].rsplit(" at ", 1)[1].strip()
        http_address = url.removeprefix("http://")
        for name, script in (("http", http_script), ("grpc", grpc_script)):
            code = script.replace("localhost:8000", http_address).replace("localhost:8001", grpc_address)
            exec(compile(code, f"{GUIDE}:{name}", "exec"), {"__name__": f"guide_{name}"})
            assert "'datatype': 'INT64'" in capsys.readouterr().out
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=90)
    out = "".join(lines) + out
    assert process.returncode == 0, out
    assert out.rstrip().endswith("stopped") and "Traceback" not in out


@pytest.mark.timeout(120)
def test_serve_refuses_a_grpc_port_another_server_holds(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    (tmp_path / "guide_pipeline.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom tests.docs.fixtures import counter_pipeline\npipeline = counter_pipeline()\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "rvai_sdk", "serve", "guide_pipeline:pipeline", "--runtime", "debug", "--port", "0",
             "--grpc-port", str(port)],
            capture_output=True, text=True, timeout=100, cwd=tmp_path,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"UsageError: --grpc-port {port} cannot be used on 127.0.0.1" in done.stderr
    assert "gRPC (Open Inference Protocol" not in done.stdout  # no address of another server announced as ours
