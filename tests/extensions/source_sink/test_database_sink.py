"""DatabaseSink on SQLite (the default) and PostgreSQL, including a PostgreSQL outage mid-run."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rvai_sdk.drivers import Record, SinkContext
from rvai_sdk.exc import SinkError
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.runtime import Inference, Runtime
from rvai_sdk.types import FloatRange, Integer, List
from tests.conftest import IN_CI, Count, Remember, require_extra, single
from tests._servers import free_port
from tests.extensions.source_sink.conftest import rows
from tests.extensions.source_sink.support import wait_until

pytestmark = pytest.mark.timeout(120)


def counting(count: int | None, rate: float = 0.0) -> DummySource:
    return DummySource(params=DummySource.parameters(rate=FloatRange(rate), count=count, seed=3))


def record(index: int, y: int = 1, source: str = "cam") -> Record:
    return Record(source=source, sid=source, index=index, timestamp=1000.0 + index, outputs={"y": Integer(y), "seen": List[Integer]([y])})


def opened(sink: DatabaseSink) -> DatabaseSink:
    sink.open(SinkContext(ref="db", outputs=single(Remember).outputs))
    return sink


def test_rows_have_typed_columns_and_json_for_structured_outputs(runtime: Runtime, sqlite_url: str) -> None:
    with runtime.start_inference(Inference(pipeline=single(Remember))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"a": counting(12), "b": counting(7)}, sinks={"db": DatabaseSink(sqlite_url, table="frames")}
        )
        wait_until(lambda: len(rows(sqlite_url, "frames")) == 19, what="19 rows")
        handle.stop()
    table = rows(sqlite_url, "frames")
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite_url)
    types = {c["name"]: type(c["type"]).__name__ for c in sa.inspect(engine).get_columns("frames")}
    engine.dispose()
    assert types["y"] == "BIGINT" and types["seen"] == "JSON" and types["timestamp"] == "FLOAT"
    a = [r for r in table if r["source"] == "a"]
    assert [r["index"] for r in a] == list(range(12))
    assert json.loads(str(a[-1]["seen"])) == [r["y"] for r in a], "each sid's history, as JSON"
    assert {r["status"] for r in table} == {"complete"} and {r["sid"] for r in table} == {"a", "b"}


def test_sqlite_is_the_default_url() -> None:
    assert DatabaseSink().url == "sqlite:///rvai_results.db"


def test_writing_the_same_records_again_never_duplicates_rows(sqlite_url: str) -> None:
    sink = opened(DatabaseSink(sqlite_url))
    try:
        sink.write([record(0), record(1), record(2)])
        sink.write([record(1), record(2), record(3)])  # a retried, overlapping batch
    finally:
        sink.close()
    assert [r["index"] for r in rows(sqlite_url, "results")] == [0, 1, 2, 3]


def test_an_existing_table_without_the_pipeline_columns_is_a_clear_error(sqlite_url: str) -> None:
    opened(DatabaseSink(sqlite_url, table="t")).close()
    sink = DatabaseSink(sqlite_url, table="t")
    with pytest.raises(SinkError, match="lacks columns count.*table='t'|lacks columns count"):
        sink.open(SinkContext(ref="db", outputs=single(Count).outputs | {"count": single(Count).outputs["y"]}))


def test_an_unreachable_database_is_a_sink_error_naming_the_sink_without_the_password() -> None:
    sink = DatabaseSink("postgresql+psycopg://me:secret@127.0.0.1:1/nowhere", params={"connect_timeout": 1.0})
    with pytest.raises(SinkError, match=r"sink 'db' \(DatabaseSink postgresql\+psycopg://me:\*\*\*@127.0.0.1:1/nowhere") as info:
        opened(sink)
    assert "secret" not in str(info.value)


def test_postgres_rows_are_idempotent(pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    sink = opened(DatabaseSink(url, table=table))
    try:
        sink.write([record(0), record(1)])
        sink.write([record(0), record(1), record(2)])
    finally:
        sink.close()
    assert [r["index"] for r in rows(url, table)] == [0, 1, 2]


# -- PostgreSQL outage ------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL server of this test's own (initdb in a temporary folder, a free port), so that stopping it
    for an outage disturbs no other test: the shared server on 5432 stays up for everybody, tests run in
    parallel included."""

    def __init__(self, folder: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1])
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(folder, user="postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args], check=True, timeout=60, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)], timeout=30).returncode == 0


@pytest.fixture
def pg_outage() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server, running; stopped for good afterwards."""
    require_extra("sqlalchemy")
    require_extra("psycopg")
    if shutil.which("runuser") is None or os.geteuid() != 0 or not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        if IN_CI:
            pytest.fail("the PostgreSQL outage test needs PostgreSQL's server binaries and root (runuser), and CI must run it")
        pytest.skip("the PostgreSQL outage test needs PostgreSQL's server binaries and root (runuser)")
    server = PrivatePostgres(Path(tempfile.mkdtemp(prefix="rvai-pg-")))  # short: the socket path has a length limit
    server.start()
    try:
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


def test_postgres_outage_loses_and_duplicates_no_row(runtime: Runtime, pg_outage: PrivatePostgres) -> None:
    url, table = pg_outage.url, "frames"
    sink = DatabaseSink(url, table=table, params={"buffer": 20, "batch_size": 8, "retry_initial": 0.05, "retry_max": 0.5, "connect_timeout": 1.0})
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver("stream", SourceSinkDriver, sources={"cam": counting(150, rate=100)}, sinks={"db": sink})
        wait_until(lambda: len(rows(url, table)) >= 20, what="rows before the outage")
        pg_outage.stop()
        try:
            stats = wait_until(
                lambda: (s := handle.stats())["sinks"]["db"]["write_failures"] >= 2 and s["sinks"]["db"]["buffered"] == 20 and s,
                what="the sink to fail and fill its buffer",
            )
            assert stats["sources"]["cam"]["produced"] < 150
        finally:
            pg_outage.start()
        wait_until(lambda: len(rows(url, table)) == 150, timeout=60, what="all 150 rows after the outage")
        final = handle.stats()
        handle.stop()
    table_rows = rows(url, table)
    assert [r["index"] for r in table_rows] == list(range(150)), "every frame exactly once"
    assert [r["y"] for r in table_rows] == list(range(1, 151))
    assert final["sinks"]["db"]["lost"] == 0 and final["sources"]["cam"]["dropped"] == 0
    assert final["sources"]["cam"]["written"] == 150
