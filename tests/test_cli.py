"""The rvai-sdk command line, run as a user runs it (a subprocess, real entry points)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import re
import textwrap
from pathlib import Path

import pytest

from tests._serving import start_serving
from tests._sync import eventually
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "rvai-sdk"

MODULE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from examples.quickstart import build_pipeline
    from rvai_sdk.pipeline import PipelineFactory

    pipeline = build_pipeline()
    factory = PipelineFactory(name="empty")
    not_a_pipeline = 42
    """
)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rvai_sdk.cli", *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "my_pipelines.py").write_text(MODULE.format(root=str(ROOT)))
    return tmp_path


def test_console_script_is_installed() -> None:
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "info" in result.stdout and "show" in result.stdout


def test_info_lists_inputs_outputs_cells_and_parameters(project: Path) -> None:
    result = run("info", "my_pipelines:pipeline", cwd=project)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pipeline 'Quickstart'" in out
    assert "  count: Integer  -> totals.count" in out
    assert "  mean: Float  <- mean.mean" in out
    assert "  totals: RunningTotal  [state Totals]" in out
    assert "parameter alarm_above: FloatRange = 4.0 (minimum 0.0)  Raise the alarm above this mean" in out


def test_info_json_is_the_full_description(project: Path) -> None:
    result = run("info", "my_pipelines:build_pipeline", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["name"] == "Quickstart"
    assert described["inputs"]["properties"]["count"]["type"] == "integer"


def test_show_writes_a_drawing_or_prints_dot(project: Path) -> None:
    from tests.conftest import require_extra

    require_extra("pygraphviz")
    result = run("show", "my_pipelines:pipeline", "-o", str(project / "graph.svg"), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "<svg" in (project / "graph.svg").read_text()
    dot = run("show", "my_pipelines:pipeline", cwd=project)
    assert dot.stdout.startswith('digraph "Quickstart"')


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("my_pipelines:factory", "pipeline 'empty' declares no output"),
        ("my_pipelines:not_a_pipeline", "'my_pipelines:not_a_pipeline' is a int, not a Pipeline"),
        ("my_pipelines:missing", "module 'my_pipelines' has no attribute 'missing'"),
        ("no_such_module:x", "cannot import module 'no_such_module'"),
        ("unregistered", "'unregistered' is neither module:attribute nor a registered pipeline"),
    ],
)
def test_bad_targets_fail_with_a_clear_message(project: Path, target: str, message: str) -> None:
    result = run("info", target, cwd=project)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_pipelines_registered_by_an_installed_package_are_found_by_name(project: Path) -> None:
    dist = project / "site" / "my_pipelines_pkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pipelines-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rvai_sdk.pipelines]\ncounting = my_pipelines:build_pipeline\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "site"), str(project)])}
    listing = run("list", cwd=project, env=env)
    assert "counting  (my_pipelines:build_pipeline)" in listing.stdout
    result = run("info", "counting", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert "pipeline 'Quickstart'" in result.stdout


# -- serve and stream: the real command against real servers on 127.0.0.1 ------------------------

COMPONENTS = textwrap.dedent(
    """
    import json
    from rvai_sdk.drivers import Sink
    from rvai_sdk.extensions.sources.dummy_source import DummySource


    def counter_source(url):
        # counter://N : N items, as fast as the stream takes them
        return DummySource(params={"count": int(url.split("//", 1)[1]), "rate": 0, "seed": 1})


    class LinesSink(Sink):
        def __init__(self, path):
            super().__init__()
            self.path = path

        @classmethod
        def from_url(cls, url):
            # lines:///path/to/file.jsonl
            return cls(url[len("lines://"):])

        def write(self, records):
            with open(self.path, "a") as f:
                for record in records:
                    f.write(json.dumps({"source": record.source, "index": record.index}) + "\\n")


    def broken_source(url):
        raise KeyError("no such camera")
    """
)


def _installed(project: Path, name: str, entry_points_txt: str) -> dict[str, str]:
    """A real .dist-info with entry points on PYTHONPATH: what an installed package looks like."""
    dist = project / "site" / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points_txt)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "site"), str(project)])}


def _finish(process: subprocess.Popen[str], lines: list[str]) -> str:
    out, _ = process.communicate(timeout=60)
    return "".join(lines) + out


@pytest.mark.timeout(120)
def test_serve_answers_http_until_sigterm_then_stops_cleanly(project: Path) -> None:
    httpx = pytest.importorskip("httpx")
    process, url, lines = start_serving(
        "my_pipelines:pipeline", "--runtime", "debug", "--port", "0", "--param", "mean.alarm_above=0.5", cwd=project
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(f"{url}/predict", json={"inputs": {"count": 3}, "sid": "cam-1"}, timeout=30)
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert outputs["mean"] == 3.0 and outputs["alarm"] == 1  # above the --param threshold, not the default 4.0
        metrics = httpx.get(f"{url}/metrics", timeout=30)
        assert metrics.status_code == 200
        assert "rvai_requests_total" in metrics.text
    finally:
        process.send_signal(signal.SIGTERM)
        out = _finish(process, lines)
    assert process.returncode == 0, out
    assert out.rstrip().endswith("stopped")
    assert "Traceback" not in out


@pytest.mark.timeout(120)
def test_serve_a_registered_name_on_the_local_runtime_for_a_duration_with_an_api_key(project: Path) -> None:
    httpx = pytest.importorskip("httpx")
    env = _installed(project, "my_pipelines_pkg", "[rvai_sdk.pipelines]\ncounting = my_pipelines:build_pipeline\n")
    env["RVAI_SDK_API_KEY"] = "s3cret"
    process, url, lines = start_serving("counting", "--runtime", "local", "--port", "0", "--duration", "5", cwd=project, env=env)
    try:
        assert httpx.post(f"{url}/predict", json={"inputs": {"count": 2}}, timeout=30).status_code == 401
        response = httpx.post(
            f"{url}/predict", json={"inputs": {"count": 2}, "sid": "a"}, headers={"Authorization": "Bearer s3cret"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["total"] == 2
    finally:
        out = _finish(process, lines)
    assert process.returncode == 0, out
    assert "pipeline 'Quickstart' on the local runtime" in out and out.rstrip().endswith("stopped")


@pytest.mark.timeout(120)
def test_stream_writes_every_frame_of_a_clip_into_sqlite_on_the_local_runtime_with_a_progress_line(project: Path) -> None:
    from tests.conftest import require_extra

    require_extra("av")
    require_extra("sqlalchemy")
    if shutil.which("ffmpeg") is None:
        if IN_CI:
            pytest.fail("ffmpeg is missing, but CI installs it")
        pytest.skip("ffmpeg is not installed")
    clip = project / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "1",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-y", str(clip)],
        check=True, timeout=60,
    )
    (project / "motion.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom examples.rtsp_to_database import build_pipeline\n")
    database = project / "frames.db"
    result = run(
        "stream", "motion:build_pipeline", "--runtime", "local", "--interval", "0.2",
        "--source", f"cam-1={clip}", "--source", f"file://{clip}", "--sink", f"sqlite:///{database}?table=frames",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert "frames/s" in result.stdout and "dropped" in result.stdout
    assert "cam-1: 25 processed, 0 failed, 0 dropped, 25 written (ended)" in result.stdout
    assert "source-2: 25 processed, 0 failed, 0 dropped, 25 written (ended)" in result.stdout
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT source, COUNT(*), MIN(\"index\"), MAX(\"index\"), MAX(frames) FROM frames GROUP BY source ORDER BY source").fetchall()
    assert rows == [("cam-1", 25, 0, 24, 25), ("source-2", 25, 0, 24, 25)]


@pytest.mark.timeout(120)
def test_third_party_packages_add_source_and_sink_schemes(project: Path) -> None:
    (project / "my_components.py").write_text(COMPONENTS)
    env = _installed(
        project,
        "my_components_pkg",
        "[rvai_sdk.sources]\ncounter = my_components:counter_source\nbroken = my_components:broken_source\n"
        "[rvai_sdk.sinks]\nlines = my_components:LinesSink.from_url\n",
    )
    output = project / "out.jsonl"
    result = run(
        "stream", "my_pipelines:pipeline", "--runtime", "debug", "--interval", "0.2",
        "--source", "a=counter://7", "--source", "b=counter://3", "--sink", f"lines://{output}",
        cwd=project, env=env,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted((r["source"], r["index"]) for r in records) == [("a", i) for i in range(7)] + [("b", i) for i in range(3)]
    broken = run("stream", "my_pipelines:pipeline", "--source", "broken://x", "--sink", "dummy:", cwd=project, env=env)
    assert broken.returncode == 2
    assert broken.stderr.strip() == (
        "rvai-sdk: UsageError: the source factory my_components:broken_source rejected 'broken://x': "
        "KeyError: 'no such camera'"
    )


@pytest.mark.timeout(120)
def test_stream_gives_exactly_frames_results_per_source_on_an_endless_source(project: Path) -> None:
    from tests.conftest import require_extra

    require_extra("sqlalchemy")
    database = project / "d.db"
    result = run(
        "stream", "my_pipelines:pipeline", "--runtime", "debug", "--interval", "0.1",
        "--source", "dummy:?rate=0", "--source", "live=dummy:?rate=0&live=true", "--sink", f"sqlite:///{database}", "--frames", "20",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert "source-1: 20 processed, 0 failed, 0 dropped, 20 written (ended)" in result.stdout
    assert any(line.startswith("live: 20 processed, 0 failed, ") and line.endswith("20 written (ended)") for line in result.stdout.splitlines())
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT source, COUNT(*) FROM results GROUP BY source ORDER BY source").fetchall() == [("live", 20), ("source-1", 20)]


@pytest.mark.timeout(180)
def test_a_stream_service_run_twice_writes_the_second_runs_rows_and_says_so(project: Path) -> None:
    from tests.conftest import require_extra

    require_extra("sqlalchemy")
    database = project / "d.db"
    lines = []
    for _ in range(2):
        result = run(
            "stream", "my_pipelines:pipeline", "--runtime", "local", "--interval", "0.2",
            "--source", "cam1=dummy:?rate=100", "--sink", f"sqlite:///{database}", "--frames", "30",
            cwd=project,
        )
        assert result.returncode == 0, result.stderr
        lines.append([line for line in result.stdout.splitlines() if line.startswith("cam1: ")][-1])
    assert lines == ["cam1: 30 processed, 0 failed, 0 dropped, 30 written (ended)"] * 2
    with sqlite3.connect(database) as db:
        assert db.execute('SELECT COUNT(*), MIN("index"), MAX("index") FROM results').fetchone() == (60, 0, 59)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "my_pipelines:pipeline", "--param", "alarm_above=1"], "--param 'alarm_above=1' is not ref.name=value"),
        (["serve", "my_pipelines:pipeline", "--param", "mean.nope=1"], "MeanParameters has no parameter 'nope'"),
        (["serve", "my_pipelines:pipeline", "--port", "70000"], "--port must be 0..65535"),
        (["serve", "my_pipelines:pipeline", "--stuck-after", "0"], "--stuck-after must be a number of seconds > 0"),
        (["serve", "my_pipelines:pipeline", "--stuck-after", "inf"], "--stuck-after must be a number of seconds > 0"),
        (["stream", "my_pipelines:pipeline", "--source", "kafka://x", "--sink", "dummy:"], "no source handles kafka: URLs"),
        (["stream", "my_pipelines:pipeline", "--source", "dummy:", "--sink", "ftp://x"], "no sink handles ftp: URLs"),
        (["stream", "my_pipelines:pipeline", "--source", "dummy:", "--sink", "dummy:", "--frames", "0"], "--frames must be at least 1"),
        (["stream", "my_pipelines:pipeline", "--source", "mqtt://broker", "--sink", "dummy:"], "names no topic"),
        (["stream", "my_pipelines:pipeline", "--source", "missing.mp4", "--sink", "dummy:"], "no such video file: 'missing.mp4'"),
    ],
)
def test_bad_serve_and_stream_arguments_fail_with_one_clear_line(project: Path, args: list[str], message: str) -> None:
    result = run(*args, "--runtime", "debug", cwd=project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.timeout(120)
def test_stream_serves_per_source_metrics_while_it_runs(project: Path) -> None:
    httpx = pytest.importorskip("httpx")
    parser = pytest.importorskip("prometheus_client.parser")
    process = subprocess.Popen(
        [sys.executable, "-m", "rvai_sdk.cli", "stream", "my_pipelines:pipeline", "--runtime", "debug",
         "--source", "cam=dummy:?rate=200", "--sink", "log=dummy:", "--interval", "0.1", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=project,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        url = None
        for _ in range(20):  # the metrics URL is on the second line
            lines.append(process.stdout.readline())
            if lines[-1].strip().startswith("metrics "):
                url = lines[-1].split()[1]
                break
        assert url is not None, "".join(lines)
        samples: dict[str, float] = {}
        for _ in range(300):  # until a scrape shows written results; bounded
            text = httpx.get(url, timeout=30).text
            samples = {
                f"{s.name}{sorted(s.labels.items())}": s.value
                for family in parser.text_string_to_metric_families(text)
                for s in family.samples
            }
            if samples.get("rvai_source_written_total[('pipeline', 'Quickstart'), ('source', 'cam')]", 0) >= 5:
                break
            process.stdout.readline()  # the next progress line: the next update
    finally:
        process.send_signal(signal.SIGTERM)
        out = _finish(process, lines)
    assert process.returncode == 0, out
    assert samples["rvai_source_written_total[('pipeline', 'Quickstart'), ('source', 'cam')]"] >= 5
    assert samples["rvai_source_dropped_total[('pipeline', 'Quickstart'), ('source', 'cam')]"] >= 0
    assert "rvai_source_frames_per_second[('pipeline', 'Quickstart'), ('source', 'cam')]" in samples
    assert samples["rvai_sink_written_total[('pipeline', 'Quickstart'), ('sink', 'log')]"] >= 5
    assert samples["rvai_source_state[('pipeline', 'Quickstart'), ('source', 'cam'), ('state', 'running')]"] == 1


@pytest.mark.timeout(120)
def _stream_until_written(
    project: Path, source: str, database: Path, *more: str
) -> tuple[subprocess.Popen[str], list[str]]:
    """``rvai-sdk stream`` of ``source`` into SQLite on the local runtime, read until a progress line shows written
    rows: the process and the lines read (stderr in stdout)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rvai_sdk.cli", "stream", "my_pipelines:pipeline", "--runtime", "local",
         "--source", source, "--sink", f"sqlite:///{database}", "--interval", "0.1", *more],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=project,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for _ in range(600):  # bounded
        lines.append(process.stdout.readline())
        if re.search(r"cam: [\d.]+ frames/s, \d+ dropped, [1-9]\d* written", lines[-1]) or not lines[-1]:
            break
    return process, lines


def test_ctrl_c_on_a_stream_writes_what_was_in_flight_and_the_summary_counts_every_row(project: Path) -> None:
    from tests.conftest import require_extra

    require_extra("sqlalchemy")
    database = project / "d.db"
    process, lines = _stream_until_written(project, "cam=dummy:?rate=200", database)
    process.send_signal(signal.SIGINT)
    out = _finish(process, lines)
    assert process.returncode == 0, out
    summary = [line for line in out.splitlines() if line.startswith("cam: ") and "processed" in line][-1]
    written = int(re.search(r"(\d+) written", summary).group(1))  # type: ignore[union-attr]
    assert ", 0 failed," in summary, summary
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT \"index\"), MIN(\"index\"), MAX(\"index\") FROM results").fetchone() == (
            written, written, 0, written - 1
        ), "the summary counts every row, and the rows have no gap"
        assert db.execute("SELECT COUNT(*) FROM results WHERE status != 'complete'").fetchone() == (0,)


def _children(pid: int) -> list[tuple[int, int, str]]:
    """The child processes of ``pid``: (start time in clock ticks, pid, command line), oldest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == pid:
            found.append((int(fields[19]), int(entry.name), cmdline))
    return sorted(found)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("supervised", [True, False])
def test_a_stream_whose_inference_process_is_killed_gets_it_back_and_writes_every_frame(project: Path, supervised: bool) -> None:
    """The command's inference process is SIGKILLed mid-stream (an out-of-memory kill): the command restarts it,
    or with --no-supervise exits saying so (it used to wait for ever, then exit 0 with most frames unwritten)."""
    from tests.conftest import require_extra

    require_extra("sqlalchemy")
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the inference process")
    database = project / "d.db"
    process, lines = _stream_until_written(
        project, "cam=dummy:?rate=100&count=400&seed=1", database, *([] if supervised else ["--no-supervise"])
    )
    try:
        spawned = [pid for _, pid, cmdline in _children(process.pid) if "spawn_main" in cmdline]
        assert spawned, "no inference process found:\n" + "".join(lines)
        os.kill(spawned[0], signal.SIGKILL)  # started first: the inference process (the driver's comes after it)
        out = _finish(process, lines)
    finally:
        if process.poll() is None:
            process.kill()
    if not supervised:
        assert process.returncode == 2, out
        assert "rvai-sdk: ProcessError: the inference process of pipeline 'Quickstart' stopped serving" in out, out
        return
    assert process.returncode == 0, out
    summary = [line for line in out.splitlines() if line.startswith("cam: ") and "processed" in line][-1]
    assert "400 written (ended)" in summary and ", 0 failed, 0 dropped," in summary, summary
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT \"index\"), MAX(\"index\") FROM results").fetchone() == (400, 400, 399)


SLOW_LOAD = textwrap.dedent(
    """
    import pathlib
    import time
    from dataclasses import dataclass

    from rvai_sdk.cell import Cell
    from rvai_sdk.context import InferenceContext
    from rvai_sdk.data import Inputs, Outputs, Parameters
    from rvai_sdk.pipeline import PipelineFactory
    from rvai_sdk.types import Integer


    @dataclass
    class In(Inputs):
        x: Integer = Inputs.field()


    @dataclass
    class Out(Outputs):
        y: Integer = Outputs.field()


    class SlowToLoad(Cell):
        @classmethod
        def load_model(cls, context, parameters, model_path):
            gate = pathlib.Path(model_path)
            pathlib.Path(model_path + ".entered").touch()
            deadline = time.monotonic() + 120  # a model that takes minutes to load
            while gate.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return "model"

        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
            return Out(y=inputs.x)


    pf = PipelineFactory(name="slow-load")
    cell = pf.add_cell(ref="c", cell=SlowToLoad())
    pf.declare_input(ref="x", input=cell.inputs.x)
    pf.declare_output(ref="y", output=cell.outputs.y)
    pipeline = pf.build()
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["serve", "stream"])
def test_ctrl_c_while_the_models_load_stops_the_command_at_once_with_status_130(project: Path, command: str) -> None:
    """It used to be ignored until loading ended (minutes with a real model), then the command served anyway."""
    (project / "slow_load.py").write_text(SLOW_LOAD)
    gate = project / "weights.bin"
    gate.touch()  # load_model waits while it exists
    extra = ["--port", "0"] if command == "serve" else ["--source", "cam=dummy:?count=5", "--sink", "dummy:"]
    process = subprocess.Popen(
        [sys.executable, "-m", "rvai_sdk.cli", command, "slow_load:pipeline", "--runtime", "local",
         "--model", f"c={gate}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=project,
    )
    try:
        eventually(lambda: (project / "weights.bin.entered").exists() or process.poll() is not None, "load_model to run", 90)
        assert process.poll() is None, process.communicate()[0]
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)  # the gate stays shut: only an interrupted start returns
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        gate.unlink(missing_ok=True)
    assert process.returncode == 130, out
    assert "rvai-sdk: interrupted" in out and "serving pipeline" not in out and "streaming" not in out


@pytest.mark.timeout(180)
def test_rows_a_stream_could_not_write_by_its_stop_are_counted_lost_and_the_status_is_1(project: Path) -> None:
    """The database stays locked from the 10th row until the command ends: the summary came from before the
    driver's stop, said nothing was lost and exited 0 while most results were never written."""
    from tests.conftest import require_extra

    require_extra("sqlalchemy")
    database = project / "d.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "rvai_sdk.cli", "stream", "my_pipelines:pipeline", "--runtime", "debug",
         "--source", "cam=dummy:?rate=50", "--sink", f"sqlite:///{database}", "--duration", "3", "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=project,
    )

    def rows() -> int:
        try:
            with sqlite3.connect(database) as db:
                return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        except sqlite3.Error:  # not created yet
            return 0

    try:
        eventually(lambda: rows() >= 10 or process.poll() is not None, "10 rows", 60)
        lock = sqlite3.connect(database, isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")  # the sink cannot write from here until the command has ended
        try:
            out, err = process.communicate(timeout=150)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, out + err
    summary = [line for line in out.splitlines() if line.startswith("cam: ") and "processed" in line][-1]
    written = int(re.search(r"(\d+) written", summary).group(1))  # type: ignore[union-attr]
    assert written == rows(), summary
    lost = int(re.search(r"sink sink-1: (\d+) lost", err).group(1))  # type: ignore[union-attr]
    processed = int(re.search(r"(\d+) processed", summary).group(1))  # type: ignore[union-attr]
    assert lost > 0 and written + lost == processed, (summary, err)
