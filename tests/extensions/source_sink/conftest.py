"""Fixtures for the source/sink tests: real servers on 127.0.0.1 (PostgreSQL, Mosquitto, a GStreamer RTSP server).

CI (``RVAI_CI`` set) must have them all: a missing one fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._servers import free_port
from tests.conftest import IN_CI, require_extra

PG_URL = os.environ.get("RVAI_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("RVAI_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("RVAI_TEST_MQTT_PORT", "1883"))
SYSTEM_PYTHON = os.environ.get("RVAI_TEST_GI_PYTHON", "/usr/bin/python3")
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")

collect_ignore = ["rtsp_server.py"]  # runs under the system Python (it imports gi), never collected


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is not available, but CI must provide it")
    pytest.skip(f"{what} is not available")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    require_extra("sqlalchemy")
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def pg_table() -> Iterator[tuple[str, str]]:
    """(PostgreSQL URL, a fresh table name); the table and its dead-letter table are dropped afterwards."""
    require_extra("sqlalchemy")
    require_extra("psycopg")
    if not _port_open("127.0.0.1", 5432):
        _unavailable("PostgreSQL on 127.0.0.1:5432")
    table = f"t_{uuid.uuid4().hex[:12]}"
    yield PG_URL, table
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}", "{table}_dead_letter"'))
    except sa.exc.OperationalError:
        pass
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_table(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(URL, table) of a fresh table on each backend the database sink is tested on: SQLite in this test's
    folder (table ``results``), and PostgreSQL (``pg_table``)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url"), "results"
    table: tuple[str, str] = request.getfixturevalue("pg_table")
    return table


def rows(url: str, table: str, order: str = '"source", "index"') -> list[dict[str, object]]:
    """Every row of the table (none when it does not exist yet, or the database is down)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return []
            result = conn.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY {order}'))
            return [dict(r._mapping) for r in result]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    require_extra("paho.mqtt.client")
    if not _port_open(MQTT_HOST, MQTT_PORT):
        _unavailable(f"an MQTT broker on {MQTT_HOST}:{MQTT_PORT}")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 320x240 H.264 clip of 200 frames at 25 fps (8 s) with a moving test pattern."""
    if shutil.which("ffmpeg") is None:
        _unavailable("ffmpeg")
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "8",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-y", str(path)],
        check=True, timeout=60,
    )
    return path


class RtspServer:
    """The GStreamer RTSP server script, run with the system Python; killable and restartable on one port."""

    def __init__(self, clip: Path, port: int) -> None:
        self.clip = clip
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(self.port), "--clip", str(self.clip)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the script prints "ready" once it listens, or exits
        if line.strip() != "ready":
            self.process.wait(10)
            raise AssertionError(f"the RTSP server did not start: {line!r} {self.process.stderr.read() if self.process.stderr else ''}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
            self.process = None


@pytest.fixture
def rtsp_server(clip: Path) -> Iterator[RtspServer]:
    require_extra("av")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"],
        capture_output=True, timeout=30,
    ) if os.path.exists(SYSTEM_PYTHON) else None
    if probe is None or probe.returncode != 0:
        _unavailable(f"GStreamer's RTSP server for {SYSTEM_PYTHON} (gir1.2-gst-rtsp-server-1.0, python3-gi)")
    server = RtspServer(clip, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def jsonl(tmp_path: Path) -> Callable[[str], str]:
    """A path for a JSON-lines result file."""
    return lambda name: str(tmp_path / f"{name}.jsonl")

