"""DatabaseSink's exactly-once promise against hostile setups, on real SQLite and PostgreSQL: a source re-added
while its old stream is in flight, a stop during an inference outage, a table from an earlier pipeline, a NaN,
one key twice in a batch, a connection killed mid-transaction, and the password of its URL."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Outputs, Parameters
from rvai_sdk.drivers import Record, RecordError, Source, SinkContext, SourceItem
from rvai_sdk.exc import SinkError
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
from rvai_sdk.pipeline.graph import OutputSpec
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Boolean, Float, Integer
from tests.conftest import XIn, YOut, single
from tests.extensions.source_sink.conftest import rows
from tests.extensions.source_sink.support import wait_until

pytestmark = pytest.mark.timeout(120)


@cell(concurrency=8)
class Gated(Cell):
    """Echo x; items 3 <= x < 1000 wait while the file $HUNT2_GATE exists (a slow model)."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        gate = os.environ.get("HUNT2_GATE", "")
        while 3 <= int(inputs.x) < 1000 and gate and os.path.exists(gate):
            time.sleep(0.01)
        return YOut(y=inputs.x)


class Numbers(Source):
    """A live-like (not replayable) source: x = start, start+1, ... under indexes 0, 1, ..."""

    def __init__(self, start: int, count: int | None = None) -> None:
        super().__init__({"max_in_flight": 4})
        self.start = start
        self.count = count

    @property
    def replayable(self) -> bool:
        return False

    def items(self) -> Iterator[SourceItem]:
        i = 0
        while self.count is None or i < self.count:
            if self.context.stopped.is_set():
                return
            yield SourceItem(inputs={"x": Integer(self.start + i)}, index=i, timestamp=time.time())
            i += 1


def test_a_source_re_added_while_its_old_stream_is_in_flight_loses_no_result(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide: 'a source re-added under a ref a database sink already holds rows for continues after them'."""
    gate = tmp_path / "gate"
    gate.touch()
    monkeypatch.setenv("HUNT2_GATE", str(gate))
    with init("local") as rt, rt.start_inference(Inference(pipeline=single(Gated, name="gated"))) as proc:
        handle = proc.add_driver("stream", SourceSinkDriver, sources={"cam": Numbers(0)}, sinks={"db": DatabaseSink(sqlite_url)})
        wait_until(lambda: len(rows(sqlite_url, "results")) == 3, what="x 0..2 written, 3..6 held in flight")
        wait_until(lambda: handle.stats()["sources"]["cam"]["in_flight"] == 4, what="four in flight")
        SourceSinkDriver.remove_source_from(handle, "cam")  # its requests in flight still reach the sinks
        SourceSinkDriver.add_source_to(handle, ref="cam", source=Numbers(1000, count=4), sid="cam-2")
        wait_until(lambda: len(rows(sqlite_url, "results")) >= 7, what="the new stream's rows")
        gate.unlink()  # the old stream's in-flight results arrive now
        wait_until(lambda: handle.stats()["sinks"]["db"]["buffered"] == 0 and sum(
            handle.stats()["sinks"]["db"][k] for k in ("written", "present", "dead_lettered")) == 11, what="all 11 results handled")
        stats = handle.stats()["sinks"]["db"]
        handle.stop()
    ys = sorted(int(r["y"]) for r in rows(sqlite_url, "results"))
    assert ys == [0, 1, 2, 3, 4, 5, 6, 1000, 1001, 1002, 1003], f"every result stored once; sink stats {stats}"


@cell(concurrency=8)
class HoldThree(Cell):
    """Echo x; x == 3 waits while the file $HUNT2_HOLD exists; every other x leaves a file '$HUNT2_HOLD.done.<x>'."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        gate = os.environ["HUNT2_HOLD"]
        while int(inputs.x) == 3 and os.path.exists(gate):
            time.sleep(0.01)
        Path(f"{gate}.done.{int(inputs.x)}").touch()
        return YOut(y=inputs.x)


class FileLike(Numbers):
    """A replayable source (a file): x = i under index i, ``count`` items, each with its own sid (like
    ``ListSource`` in support.py) so they may run in parallel."""

    @property
    def replayable(self) -> bool:
        return True

    def items(self) -> Iterator[SourceItem]:
        for item in super().items():
            yield SourceItem(inputs=item.inputs, index=item.index, timestamp=item.timestamp, sid=f"item-{item.index}")


def test_a_stop_during_an_inference_outage_leaves_no_gap_that_the_next_run_skips(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame 3 is cut off (the inference process died under it) while 4..6 had already succeeded; the driver is
    stopped during the outage. The guide: items cut off by a stop are 'unfinished' (never written); a file then
    'resumes after the last row its sinks hold' -- which must not skip frame 3."""
    import signal

    from rvai_sdk.runtime.status import ProcessStatus

    gate = tmp_path / "hold"
    gate.touch()
    monkeypatch.setenv("HUNT2_HOLD", str(gate))
    with init("local") as rt, rt.start_inference(Inference(pipeline=single(HoldThree, name="hold"))) as proc:
        first = proc.add_driver("d", SourceSinkDriver, sources={"file": FileLike(0, count=10)}, sinks={"db": DatabaseSink(sqlite_url)})
        wait_until(lambda: len(rows(sqlite_url, "results")) == 3, what="frames 0..2 written")
        wait_until(lambda: all(Path(f"{gate}.done.{x}").exists() for x in (4, 5, 6)), what="frames 4..6 inferred, 3 held")
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        wait_until(lambda: first.stats()["sources"]["file"]["state"] == "waiting", what="the stream waiting for the process")
        first.stop()
        held = sorted(int(r["index"]) for r in rows(sqlite_url, "results"))
        wait_until(lambda: proc.status is ProcessStatus.FAILED, what="FAILED")
        proc.restart()
        gate.unlink()
        again = proc.add_driver("d", SourceSinkDriver, sources={"file": FileLike(0, count=10)}, sinks={"db": DatabaseSink(sqlite_url)})
        final = SourceSinkDriver.wait(again, timeout=60)["sources"]["file"]
    table = sorted(int(r["index"]) for r in rows(sqlite_url, "results"))
    assert table == list(range(10)), f"every frame of the file once; after the first run the table held {held}; second run {final}"


# -- the sink alone, on real databases ----------------------------------------------------------


def ctx(**types: Any) -> SinkContext:
    return SinkContext(ref="db", outputs={k: OutputSpec(k, t, "c", k) for k, t in types.items()})


def rec(index: int, **outputs: Any) -> Record:
    return Record(source="cam", sid="cam", index=index, timestamp=1000.0 + index, outputs=outputs)


def test_postgres_a_column_whose_type_changed_since_an_earlier_pipeline_is_refused_not_rounded(pg_table: tuple[str, str]) -> None:
    """Pipeline v1 had 'score: Integer'; v2 has 'score: Float'. The guide: the table 'is checked when present'."""
    url, table = pg_table
    v1 = DatabaseSink(url, table=table)
    v1.open(ctx(score=Integer))
    v1.close()
    v2 = DatabaseSink(url, table=table)
    with pytest.raises(SinkError, match=r"column 'score' of the existing table .* holds integers .* writes numbers"):
        v2.open(ctx(score=Float))  # not opened: written, PostgreSQL would round the scores into the BIGINT column


def test_an_existing_table_without_the_source_index_key_is_refused_at_open_not_retried_forever(
    db_table: tuple[str, str]
) -> None:
    url, table = db_table
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:  # made by hand (or by another tool): every column, but no primary key
        conn.execute(sa.text(f'CREATE TABLE "{table}" (source TEXT, "index" BIGINT, sid TEXT, timestamp FLOAT, '
                             'status VARCHAR(16), error TEXT, y BIGINT)'))
    engine.dispose()
    sink = DatabaseSink(url, table=table)
    # Opened, every write would fail the same way as a transient error, retried for ever.
    with pytest.raises(SinkError, match=r"no primary key or unique index on \(source, index\)"):
        sink.open(ctx(y=Integer))


def test_sqlite_a_nan_float_output_is_not_stored_as_null(sqlite_url: str) -> None:
    """SQLite turns a bound NaN into NULL: the row then says 'no output' while the cell returned NaN."""
    sink = DatabaseSink(sqlite_url)
    sink.open(ctx(score=Float))
    try:
        with pytest.raises(RecordError, match=r"output 'score' of record 0 .*NaN"):  # dead-lettered with its error
            sink.write([rec(0, score=Float(float("nan")))])
        sink.write([rec(1, score=Float(0.5))])
    finally:
        sink.close()
    assert [r["score"] for r in rows(sqlite_url, "results")] == [0.5]


def test_two_different_records_with_one_key_in_a_batch_are_not_both_counted_written(db_table: tuple[str, str]) -> None:
    url, table = db_table
    sink = DatabaseSink(url, table=table)
    sink.open(ctx(y=Integer))
    first, second = rec(0, y=Integer(1)), rec(0, y=Integer(2))
    try:
        result = sink.write([first, second])
    finally:
        sink.close()
    assert len(rows(url, table)) == 1
    present = [] if result is None else list(result.present)
    assert len(present) == 1, f"one row stored, yet both records reported written (present={present})"


@pytest.mark.parametrize("when", ["before_cursor_execute", "commit"])
def test_postgres_a_connection_killed_mid_transaction_commits_nothing_and_the_retry_writes_each_row_once(
    pg_table: tuple[str, str], when: str
) -> None:
    import sqlalchemy as sa

    url, table = pg_table
    sink = DatabaseSink(url, table=table)
    sink.open(ctx(y=Integer))
    killer = sa.create_engine(url)
    killed = []

    def kill(conn: Any, *args: Any) -> None:
        if killed or (when == "before_cursor_execute" and "INSERT" not in str(args[1])):
            return
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() if when == "commit" else conn.connection.dbapi_connection.info.backend_pid
        with killer.begin() as k:
            k.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        killed.append(pid)

    batch = [rec(i, y=Integer(i)) for i in range(5)]
    try:
        sink.write([rec(0, y=Integer(0))])
        sa.event.listen(sink._engine, when, kill)
        with pytest.raises(SinkError) as info:
            sink.write(batch)
        assert not isinstance(info.value, RecordError), "a dropped connection is transient"
        assert [r["index"] for r in rows(url, table)] == [0], "nothing of the failed batch committed"
        result = sink.write(batch)  # the driver's retry
    finally:
        sink.close()
        killer.dispose()
    assert [r["index"] for r in rows(url, table)] == [0, 1, 2, 3, 4]
    assert result is not None and [r.index for r in result.present] == [0]


def test_the_command_line_never_prints_a_database_sinks_password(tmp_path: Path, pg_table: tuple[str, str]) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    _, table = pg_table
    (tmp_path / "my_pipelines.py").write_text(
        f"import sys\nsys.path.insert(0, {str(root)!r})\nfrom examples.quickstart import build_pipeline\npipeline = build_pipeline()\n"
    )
    url = f"postgresql://postgres:S3cretPw@127.0.0.1:5432/test?table={table}"  # trust auth: any password is taken
    result = subprocess.run(
        [sys.executable, "-m", "rvai_sdk.cli", "stream", "my_pipelines:pipeline", "--runtime", "debug", "--interval", "0.2",
         "--source", "clip=dummy:?rate=0&seed=3&count=5", "--sink", f"db={url}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert len(rows(pg_table[0], table)) == 5
    leaked = [line for line in (result.stdout + result.stderr).splitlines() if "S3cretPw" in line]
    assert not leaked, leaked


_Y_COLUMNS = 'source TEXT NOT NULL, "index" BIGINT NOT NULL, sid TEXT, timestamp FLOAT NOT NULL, status VARCHAR(16) NOT NULL, error TEXT, y BIGINT'
"""The columns a DatabaseSink writes for one Integer output ``y``, as a table made by hand declares them."""


def _write_y(url: str, table: str) -> None:
    """Open a DatabaseSink on an existing ``table`` and write one record, ``y`` = 1."""
    sink = DatabaseSink(url, table=table)
    sink.open(ctx(y=Integer))
    try:
        sink.write([rec(0, y=Integer(1))])
    finally:
        sink.close()


def _create(url: str, sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_postgres_a_boolean_output_over_an_earlier_integer_column_is_refused(pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    earlier = DatabaseSink(url, table=table)
    earlier.open(ctx(flag=Integer))
    earlier.close()
    with pytest.raises(SinkError, match=r"column 'flag' .* holds integers .* writes booleans"):
        DatabaseSink(url, table=table).open(ctx(flag=Boolean))  # PostgreSQL would refuse every write


def test_an_integer_output_over_an_earlier_float_column_is_taken(db_table: tuple[str, str]) -> None:
    url, table = db_table
    earlier = DatabaseSink(url, table=table)
    earlier.open(ctx(score=Float))
    earlier.close()
    sink = DatabaseSink(url, table=table)
    sink.open(ctx(score=Integer))  # lossless: an integer fits a float column
    try:
        sink.write([rec(0, score=Integer(3))])
    finally:
        sink.close()
    assert [r["score"] for r in rows(url, table)] == [3]


def test_a_partial_unique_index_is_no_key_and_an_expression_index_does_not_break_the_check(db_table: tuple[str, str]) -> None:
    url, table = db_table
    columns = _Y_COLUMNS
    _create(url, f'CREATE TABLE "{table}" ({columns}); '
                 f'CREATE UNIQUE INDEX "{table}_partial" ON "{table}" (source, "index") WHERE status = \'complete\'; '
                 f'CREATE UNIQUE INDEX "{table}_expr" ON "{table}" (source, lower(sid))')
    with pytest.raises(SinkError, match=r"no primary key or unique index on \(source, index\)"):
        DatabaseSink(url, table=table).open(ctx(y=Integer))  # ON CONFLICT cannot use a partial index
    _create(url, f'CREATE UNIQUE INDEX "{table}_key" ON "{table}" (source, "index")')
    _write_y(url, table)
    assert [r["y"] for r in rows(url, table)] == [1]


def test_a_column_the_pipeline_does_not_write_that_refuses_null_is_refused_at_open_not_dead_lettered_row_by_row(
    db_table: tuple[str, str]
) -> None:
    """A migration added ``site TEXT NOT NULL``: every row would be refused, dead-lettered, and a replayable source
    would resume after those letters; the sink refuses to open instead. Columns it need not fill are fine."""
    url, table = db_table
    ours = _Y_COLUMNS
    fillable = "note TEXT, kind TEXT NOT NULL DEFAULT 'camera'"
    if url.startswith("postgresql"):
        fillable += ", rid BIGSERIAL, gid BIGINT GENERATED ALWAYS AS IDENTITY"
    _create(url, f'CREATE TABLE "{table}" ({ours}, {fillable}, site TEXT NOT NULL, PRIMARY KEY (source, "index"))')
    with pytest.raises(SinkError, match=r"columns site that this pipeline does not write, NOT NULL and without a default"):
        DatabaseSink(url, table=table).open(ctx(y=Integer))
    if url.startswith("sqlite"):  # a surrogate id as SQLAlchemy declares one: the rowid, filled by SQLite
        fillable += ", id INTEGER NOT NULL"
        key = 'PRIMARY KEY (id), UNIQUE (source, "index")'
        _create(url, f'DROP TABLE "{table}"; CREATE TABLE "{table}" ({ours}, {fillable}, {key}) WITHOUT ROWID')
        with pytest.raises(SinkError, match=r"columns id that this pipeline does not write"):  # no rowid: not filled
            DatabaseSink(url, table=table).open(ctx(y=Integer))
    else:
        key = 'PRIMARY KEY (source, "index")'
    _create(url, f'DROP TABLE "{table}"; CREATE TABLE "{table}" ({ours}, {fillable}, {key})')
    _write_y(url, table)
    assert [(r["y"], r["kind"], r["note"]) for r in rows(url, table)] == [(1, "camera", None)]


def test_postgres_an_updatable_view_over_a_keyed_table_is_written_through(pg_table: tuple[str, str]) -> None:
    url, table = pg_table
    keyed = DatabaseSink(url, table=f"{table}_base")
    keyed.open(ctx(y=Integer))
    keyed.close()
    _create(url, f'CREATE VIEW "{table}" AS SELECT * FROM "{table}_base"')
    sink = DatabaseSink(url, table=table)
    try:
        sink.open(ctx(y=Integer))  # a view has no keys of its own: the table below it has
        sink.write([rec(0, y=Integer(7))])
        assert [r["y"] for r in rows(url, f"{table}_base")] == [7]
    finally:
        sink.close()
        _create(url, f'DROP VIEW IF EXISTS "{table}"; DROP TABLE IF EXISTS "{table}_base", "{table}_base_dead_letter"')


def test_a_password_with_an_empty_user_name_is_hidden() -> None:
    from rvai_sdk.drivers.source import hide_passwords

    assert hide_passwords("postgresql://:pw@h/db and mqtt://ann:s3cret@b") == "postgresql://:***@h/db and mqtt://ann:***@b"


# -- dead letters kept in a file count as held ------------------------------------------------------


@dataclasses.dataclass
class ScoreOut(Outputs):
    score: Float


@cell
class NanAtThree(Cell):
    """score = x, but NaN for x == 3: a record SQLite cannot store (dead-lettered)."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> ScoreOut:
        return ScoreOut(score=Float(float("nan") if int(inputs.x) == 3 else float(inputs.x)))


def test_a_record_dead_lettered_to_a_file_is_not_inferred_and_dead_lettered_again_by_the_next_run(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The guide: a file 'resumes after the last row its sinks hold'; a dead letter is held too, in the table's
    dead-letter table or, with ``dead_letter=`` set, in that file."""
    letters = tmp_path / "letters.jsonl"

    def run() -> dict[str, Any]:
        sink = DatabaseSink(sqlite_url, params={"dead_letter": str(letters)})
        handle = proc.add_driver("d", SourceSinkDriver, sources={"file": FileLike(0, count=4)}, sinks={"db": sink})
        try:
            return SourceSinkDriver.wait(handle, timeout=60)["sources"]["file"]
        finally:
            handle.stop()

    with init("local") as rt, rt.start_inference(Inference(pipeline=single(NanAtThree, name="nan"))) as proc:
        first = run()
        second = run()
    assert sorted(int(r["index"]) for r in rows(sqlite_url, "results")) == [0, 1, 2]
    filed = [json.loads(line)["index"] for line in letters.read_text().splitlines()]
    assert filed == [3], f"record 3 dead-lettered once; first run {first}, second run {second}"
    assert second["produced"] == 0, f"the second run had nothing left to infer: {second}"


def test_the_position_of_a_source_counts_only_this_sinks_letters_in_a_shared_dead_letter_file(
    tmp_path: Path, sqlite_url: str
) -> None:
    letters = tmp_path / "letters.jsonl"
    sink = DatabaseSink(sqlite_url, params={"dead_letter": str(letters)})
    sink.open(ctx(score=Float))
    try:
        sink.write([rec(0, score=Float(0.0)), rec(1, score=Float(1.0))])
        sink.dead_letter([(rec(5, score=Float(5.0)), "refused")])
        with letters.open("a") as f:  # another sink's letter, and a line a crash cut short
            f.write(json.dumps({"sink": "other", "source": "cam", "index": 9}) + "\n" + '{"sink": "db", "source": "cam", "ind')
        assert sink.position("cam") == 5
        assert sink.position("elsewhere") is None
    finally:
        sink.close()
    # A sink of the same ref writing to another database, sharing the file (or a default file left in the
    # working directory by a run against another database): those letters are not its own.
    fresh = DatabaseSink(f"sqlite:///{tmp_path / 'other.db'}", params={"dead_letter": str(letters)})
    fresh.open(ctx(score=Float))
    try:
        assert fresh.position("cam") is None, "a fresh table starts at 0, not after another table's letters"
    finally:
        fresh.close()
