"""Stream positions kept in a store (issue 15, item 6), with real parts.

A stream service (``position_service.py``: its own program on the local runtime, a sink that
keeps no positions) is SIGKILLed with all its processes mid-stream, as in a crash of the
whole machine, and started again: every item is delivered at least once, duplicates only
within the documented window, a file resumes after the recorded position and a live source
numbers on after it; on SQLite and on Redis. Also: the acknowledgement bookkeeping alone,
the stores alone, a restart on every runtime, bad store URLs, and a Redis server that is
down at start and goes away mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.drivers import Record
from rvai_sdk.drivers.metrics import stream_metrics_text
from rvai_sdk.exc import ParameterError
from rvai_sdk.execution.state_store import RedisStateStore, SqliteStateStore
from rvai_sdk.extensions.drivers._stream_positions import Tracker, open_position_store
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.runtime import Inference, Runtime, init
from rvai_sdk.types import FloatRange
from tests._servers import RedisServer, own_redis, redis_up  # noqa: F401 (own_redis: a fixture)
from tests.conftest import Count, require_extra, single
from tests._servers import free_port
from tests.extensions.source_sink.support import TaggedFileSink, read_jsonl, wait_until

pytestmark = pytest.mark.timeout(300)

SERVICE = Path(__file__).with_name("position_service.py")
ROOT = Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("RVAI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def scraped(text: bytes) -> dict[tuple[str, str], float]:
    """(sample name, its source label or '') -> value, as Prometheus reads the text."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, sample.labels.get("source", "")): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


_NAMES: list[str] = []
"""The pipeline names the tests used (their keys are deleted from the shared Redis afterwards)."""


def unique_name(kind: str) -> str:
    name = f"{kind}-{uuid.uuid4().hex[:8]}"
    _NAMES.append(name)
    return name


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A position store: an SQLite file, or the Redis server on 127.0.0.1:6379 (each test uses its own pipeline name)."""
    if request.param == "sqlite":
        yield str(tmp_path / "positions.db")
        return
    require_extra("redis")
    if not redis_up(REDIS_URL):
        from tests.conftest import IN_CI

        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is not available, but CI must provide it")
        pytest.skip(f"Redis at {REDIS_URL} is not available")
    yield REDIS_URL
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for name in _NAMES:
            for key in list(client.scan_iter(f"rvai:positions:{name}*")):
                client.delete(key)
    finally:
        client.close()
        _NAMES.clear()


def stored(url: str, pipeline: str, driver: str, source: str) -> int | None:
    """What the store holds for one source, read through a connection of its own."""
    connection = open_position_store(url, pipeline=pipeline, driver=driver)
    try:
        return connection.load(source)
    finally:
        connection.close()


def record(index: int, source: str = "s") -> Record:
    return Record(source=source, sid=source, index=index, timestamp=0.0, outputs={})


def counting(count: int | None, seed: int | None = None, rate: float = 0.0) -> DummySource:
    return DummySource(params=DummySource.parameters(rate=FloatRange(rate), count=count, seed=seed))


# -- 1. the bookkeeping alone -------------------------------------------------------------------------


def test_a_position_advances_only_over_records_every_sink_acknowledged_in_delivery_order() -> None:
    woken: list[int] = []
    tracker = Tracker("s", None, lambda: woken.append(1), every=2)
    records = [record(i) for i in range(5)]
    for r in records:
        tracker.issue(r, 2)
    tracker.settle(records[1], True)
    tracker.settle(records[1], True)  # record 1 is done, but record 0 is not: nothing advances
    assert tracker.acknowledged is None
    tracker.settle(records[0], True)
    assert tracker.acknowledged is None, "one of two sinks is not yet an acknowledgement"
    tracker.settle(records[0], True)
    assert tracker.acknowledged == 1 and woken, "0 and 1 by both sinks: two items, so the recorder is woken"
    tracker.settle(records[2], True)
    tracker.settle(records[2], False)  # the other sink gave it up (shutdown): a hole
    for r in records[3:]:
        tracker.settle(r, True)
        tracker.settle(r, True)
    assert tracker.acknowledged == 1 and tracker.stuck, "nothing after a record a sink gave up is ever recorded"


def test_a_record_cut_off_by_a_stop_holds_the_position_before_it() -> None:
    tracker = Tracker("s", 9, lambda: None, every=100)
    first, later = record(10), record(12)
    tracker.issue(first, 1)
    tracker.hole()  # index 11 was cut off by the stop
    tracker.issue(later, 1)
    tracker.settle(later, True)
    tracker.settle(first, True)
    assert tracker.acknowledged == 10 and tracker.due() == (10, 1)
    tracker.mark(10, 1)
    assert tracker.due() is None and tracker.recorded == 10 and tracker.unrecorded == 0


def test_a_record_without_sinks_and_an_unknown_record_are_handled() -> None:
    tracker = Tracker("s", None, lambda: None, every=1)
    tracker.issue(record(0), 0)
    assert tracker.acknowledged == 0
    tracker.settle(record(0), True)  # an equal record that is not the one issued: ignored
    assert tracker.acknowledged == 0


# -- 2. the stores alone ------------------------------------------------------------------------------


def test_a_store_keeps_positions_per_pipeline_driver_and_source_and_never_moves_one_back(store: str) -> None:
    name = unique_name("p")
    one = open_position_store(store, pipeline=name, driver="stream")
    other = open_position_store(store, pipeline=name, driver="other")
    try:
        assert one.load("cam") is None
        one.save({"cam": 41, "clip": 7})
        one.save({"cam": 40})  # a late writer never moves it back
        other.save({"cam": 3})
        assert (one.load("cam"), one.load("clip"), other.load("cam")) == (41, 7, 3)
    finally:
        one.close()
        other.close()
    assert stored(store, name, "stream", "cam") == 41, "a new connection (a restarted service) reads it"


def test_names_with_the_key_separator_do_not_share_positions(store: str) -> None:
    """Redis keys join pipeline and driver with ':': pipeline 'N:x' with driver 'y' and pipeline 'N' with driver
    'x:y' made one key, so one stream skipped the other's items."""
    name = unique_name("p")
    one = open_position_store(store, pipeline=f"{name}:x", driver="y")
    other = open_position_store(store, pipeline=name, driver="x:y")
    try:
        one.save({"cam": 41})
        assert other.load("cam") is None
    finally:
        one.close()
        other.close()


# -- 3. bad stores: clear errors ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["ftp://host/x", "postgresql://u@h/db", "  "])
def test_a_position_store_that_is_not_one_is_refused_naming_the_driver_parameter(bad: str) -> None:
    with pytest.raises(ParameterError, match=r"SourceSinkDriverParameters\.position_store") as caught:
        SourceSinkDriver(position_store=bad)
    assert caught.value.field == "position_store"
    with pytest.raises(ParameterError, match=r"SourceSinkDriverParameters\.position_store"):
        SourceSinkDriver(parameters={"position_store": bad})


def test_a_position_store_of_the_wrong_kind_is_refused_and_state_stores_are_taken(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"SourceSinkDriver\(position_store=\.\.\.\) takes None"):
        SourceSinkDriver(position_store=42)
    assert SourceSinkDriver(position_store=SqliteStateStore(tmp_path / "s.db")).get_parameters().position_store == str(tmp_path / "s.db")
    assert SourceSinkDriver(position_store=RedisStateStore("redis://h:1/0")).get_parameters().position_store == "redis://h:1/0"
    assert SourceSinkDriver(position_store=f"sqlite:///{tmp_path}/p.db").get_parameters().position_store == f"sqlite:///{tmp_path}/p.db"
    here = os.getcwd()
    assert SourceSinkDriver(position_store="p.db").get_parameters().position_store == os.path.join(here, "p.db"), (
        "a relative path means the working directory of the process that made the driver, not the driver process's"
    )
    assert SourceSinkDriver(parameters={"position_store": "sqlite:///p.db"}).get_parameters().position_store == f"sqlite:///{here}/p.db"


def test_a_bad_position_store_on_the_command_line_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "my_pipelines.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom examples.quickstart import build_pipeline\npipeline = build_pipeline()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "rvai_sdk.cli", "stream", "my_pipelines:pipeline", "--runtime", "debug",
         "--source", "dummy:", "--sink", "dummy:", "--position-store", "ftp://host/positions"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--position-store" in result.stderr and "SourceSinkDriverParameters.position_store" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_command_line_records_positions_and_a_second_run_resumes_its_file(tmp_path: Path) -> None:
    (tmp_path / "my_pipelines.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom examples.quickstart import build_pipeline\npipeline = build_pipeline()\n"
    )
    positions = tmp_path / "positions.db"
    outputs = []
    for count in (30, 50):
        result = subprocess.run(
            [sys.executable, "-m", "rvai_sdk.cli", "stream", "my_pipelines:pipeline", "--runtime", "debug", "--interval", "0.2",
             "--source", f"clip=dummy:?rate=0&seed=3&count={count}", "--sink", "dummy:", "--position-store", str(positions)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        outputs.append([line for line in result.stdout.splitlines() if line.startswith("clip: ")][-1])
    assert outputs == ["clip: 30 processed, 0 failed, 0 dropped, 30 written (ended)",
                       "clip: 20 processed, 0 failed, 0 dropped, 20 written (ended)"], "the second run resumed after index 29"
    with sqlite3.connect(positions) as db:
        assert db.execute("SELECT pipeline, driver, source, position FROM rvai_stream_positions").fetchall() == [
            ("Quickstart", "stream", "clip", 49)
        ]


# -- 4. a restart on every runtime (the driver in its own process on local and ray) ----------------------


def test_a_driver_added_again_on_the_same_store_resumes_its_file_and_numbers_its_live_source_on(
    runtime: Runtime, tmp_path: Path
) -> None:
    out = str(tmp_path / "out.jsonl")
    positions = str(tmp_path / "positions.db")
    name = f"restart-{uuid.uuid4().hex[:8]}"
    firsts = []
    with runtime.start_inference(Inference(pipeline=single(Count, name=name))) as proc:
        for run, count in (("1", 40), ("2", 70)):
            handle = proc.add_driver(
                "stream", SourceSinkDriver,
                sources={"file": counting(count, seed=5), "cam": counting(30)},
                sinks={"out": TaggedFileSink(out, run)},
                position_store=positions,
            )
            final = SourceSinkDriver.wait(handle, timeout=120)
            firsts.append({ref: final["sources"][ref]["first_index"] for ref in ("file", "cam")})
            proc.remove_driver(handle.pid)
    lines = read_jsonl(out)
    assert firsts == [{"file": 0, "cam": 0}, {"file": 40, "cam": 30}]
    assert [r["index"] for r in lines if r["source"] == "file"] == list(range(70)), "each frame once, in order"
    assert sorted(r["index"] for r in lines if r["source"] == "cam") == list(range(60)), "the camera numbered on"
    assert stored(positions, name, "stream", "file") == 69 and stored(positions, name, "stream", "cam") == 59


def test_a_stream_into_mqtt_run_twice_on_a_position_store_resumes_its_file_and_numbers_its_camera_on(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    from rvai_sdk.extensions.sinks.mqtt_sink import MqttSink
    from tests.extensions.source_sink.test_mqtt import Subscriber

    host, port = mqtt_broker
    base = f"rvai-test/{uuid.uuid4().hex[:12]}"
    sub = Subscriber(host, port, topic=f"{base}/#")
    try:
        with init("local") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
            for count in (40, 70):
                handle = proc.add_driver(
                    "stream", SourceSinkDriver,
                    sources={"file": counting(count, seed=4), "cam": counting(30)},
                    sinks={"broker": MqttSink(f"{base}/{{source}}", host=host, port=port)},
                    position_store=str(tmp_path / "positions.db"),
                )
                SourceSinkDriver.wait(handle, timeout=120)
                proc.remove_driver(handle.pid)
        wait_until(lambda: len(sub.received()) >= 130, what="130 messages", explain=lambda: len(sub.received()))
        messages = sub.received()
    finally:
        sub.close()
    assert sorted(m["index"] for topic, m in messages if topic == f"{base}/file") == list(range(70)), "each frame once"
    assert sorted(m["index"] for topic, m in messages if topic == f"{base}/cam") == list(range(60)), "the camera numbered on"


def test_a_stream_starts_after_the_larger_of_the_stores_position_and_what_its_database_sink_holds(tmp_path: Path) -> None:
    require_extra("sqlalchemy")
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink

    out = str(tmp_path / "out.jsonl")
    positions = str(tmp_path / "positions.db")
    database = f"sqlite:///{tmp_path / 'results.db'}"
    firsts = []
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
        runs = [
            {"out": TaggedFileSink(out, "1")},  # the store records 29
            {"out": TaggedFileSink(out, "2"), "db": DatabaseSink(database)},  # the new table holds nothing: the store wins
        ]
        for sinks, count in zip(runs, (30, 50)):
            handle = proc.add_driver("stream", SourceSinkDriver, sources={"file": counting(count, seed=2)}, sinks=sinks,
                                     position_store=positions)
            firsts.append(SourceSinkDriver.wait(handle, timeout=60)["sources"]["file"]["first_index"])
            proc.remove_driver(handle.pid)
        # A third run without the store: the table alone says 49.
        handle = proc.add_driver("stream", SourceSinkDriver, sources={"file": counting(60, seed=2)},
                                 sinks={"db": DatabaseSink(database)})
        firsts.append(SourceSinkDriver.wait(handle, timeout=60)["sources"]["file"]["first_index"])
        proc.remove_driver(handle.pid)
    assert firsts == [0, 30, 50]
    assert [r["index"] for r in read_jsonl(out)] == list(range(50))


# -- 5. a crash of the whole machine --------------------------------------------------------------------


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _start_service(store: str, out: str, run: str, name: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SERVICE), "--store", store, "--out", out, "--run", run, "--name", name,
         "--count", str(count), "--rate", "60", "--every", str(EVERY), "--batch", str(BATCH), "--delay", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
    )


EVERY = 20
BATCH = 8
WINDOW = EVERY + 2 * BATCH
"""The replay window the durability guide documents: ``position_every`` plus the sink batches being written or acknowledged.

The sink is slow (0.1 s per batch of 8, less than the two streams produce), so at the kill
its buffer holds records that were delivered but not acknowledged: a position recorded
before the sink acknowledged them would skip them after the restart."""


def test_a_service_killed_with_all_its_processes_resumes_its_file_and_numbers_on_delivering_each_item_at_least_once(
    store: str, tmp_path: Path
) -> None:
    out = str(tmp_path / "out.jsonl")
    name = unique_name("crash")
    count = 400
    first = _start_service(store, out, "1", name, count)
    try:
        def progressed() -> bool:
            lines = read_jsonl(out)
            return all(sum(1 for r in lines if r["source"] == s) >= 120 for s in ("file", "cam")) and all(
                (stored(store, name, "stream", s) or -1) >= 60 for s in ("file", "cam")
            )

        wait_until(progressed, timeout=180, what="both streams well under way, with positions recorded",
                   explain=lambda: (first.poll(), len(read_jsonl(out))))
        assert first.poll() is None, "the service was still running when it was killed"
        os.killpg(first.pid, signal.SIGKILL)  # the whole machine goes down: main, inference and driver processes
        first.wait(30)
        wait_until(lambda: _group_gone(first.pid), timeout=60, what="every process of the service to be gone")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    at_crash = {s: stored(store, name, "stream", s) for s in ("file", "cam")}
    before = read_jsonl(out)

    second = _start_service(store, out, "2", name, count)
    stdout, stderr = second.communicate(timeout=240)
    assert second.returncode == 0, stderr[-3000:]
    final = json.loads(stdout.strip().splitlines()[-1])
    lines = read_jsonl(out)
    run1 = {s: [r["index"] for r in before if r["source"] == s] for s in ("file", "cam")}
    run2 = {s: [r["index"] for r in lines if r["source"] == s and r["run"] == "2"] for s in ("file", "cam")}

    for s in ("file", "cam"):
        position = at_crash[s]
        assert position is not None
        assert run1[s] == list(range(len(run1[s]))), f"{s}: the first run delivered in order"
        assert final[s]["first_index"] == position + 1, f"{s}: the second run started right after the recorded position"
        replayed = len(run1[s]) - (position + 1)
        assert 0 <= replayed <= WINDOW, f"{s}: {replayed} items delivered before the crash came again (window {WINDOW})"
    # The file resumes: every frame at least once, none skipped, the duplicates only in the window.
    assert run2["file"] == list(range(at_crash["file"] + 1, count))  # type: ignore[operator]
    assert set(run1["file"]) | set(run2["file"]) == set(range(count)), "nothing skipped"
    # The camera numbers on: its new items continue after the recorded position.
    assert run2["cam"] == list(range(at_crash["cam"] + 1, at_crash["cam"] + 1 + count))  # type: ignore[operator]
    assert stored(store, name, "stream", "file") == count - 1
    assert stored(store, name, "stream", "cam") == at_crash["cam"] + count  # type: ignore[operator]


# -- 6. the store down at start and gone mid-run -----------------------------------------------------------




def test_a_store_down_at_start_holds_the_stream_and_one_gone_mid_run_lets_it_flow_and_catches_up(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    out = str(tmp_path / "out.jsonl")
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count, name="outage"))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver,
            sources={"file": counting(None, seed=1, rate=100)},
            sinks={"out": TaggedFileSink(out, "1", params={"batch_size": 4, "batch_wait": 0.0})},
            position_store=own_redis.url,
            parameters={"position_every": 10, "position_interval": 0.1},
        )
        stats: Callable[[], dict[str, Any]] = handle.stats
        # Down at start: the stream cannot know where to start, so it waits (it does not replay from 0 blindly).
        wait_until(lambda: (stats()["positions"] or {}).get("errors", 0) >= 1, what="a failed read of the position", explain=stats)
        assert stats()["sources"]["file"]["state"] == "resuming"
        assert "cannot read the position of source 'file'" in stats()["positions"]["last_error"]
        assert read_jsonl(out) == []
        own_redis.start()
        wait_until(lambda: (stored(own_redis.url, "outage", "stream", "file") or -1) >= 20, what="positions recorded", explain=stats)
        # Gone mid-run: the stream goes on, the positions wait in memory and the writes are retried.
        own_redis.kill()
        errors = stats()["positions"]["errors"]
        written = len(read_jsonl(out))
        wait_until(lambda: stats()["positions"]["state"] == "failing" and stats()["positions"]["errors"] > errors,
                   what="a failed write", explain=stats)
        wait_until(lambda: len(read_jsonl(out)) >= written + 50, what="the stream to go on without its store", explain=stats)
        assert stats()["positions"]["sources"]["file"]["unrecorded"] >= 40
        seen = stats()  # Prometheus says the same (the series --metrics-port serves)
        metrics = scraped(stream_metrics_text("outage", seen, {}, process=False))
        assert metrics[("rvai_position_store_failing", "")] == 1.0
        assert metrics[("rvai_source_position_unrecorded", "file")] == seen["positions"]["sources"]["file"]["unrecorded"]
        assert metrics[("rvai_position_write_errors_total", "")] == seen["positions"]["errors"] > errors
        own_redis.start()  # back, empty (no persistence): the next write records the position again
        wait_until(lambda: stats()["positions"]["state"] == "running"
                   and (stored(own_redis.url, "outage", "stream", "file") or -1) >= written + 40,
                   timeout=60, what="the position recorded again", explain=stats)
        seen = stats()
        metrics = scraped(stream_metrics_text("outage", seen, {}, process=False))
        assert metrics[("rvai_position_store_failing", "")] == 0.0
        assert metrics[("rvai_source_position_recorded", "file")] == seen["positions"]["sources"]["file"]["recorded"]
        proc.remove_driver(handle.pid)
    lines = read_jsonl(out)
    assert [r["index"] for r in lines] == list(range(len(lines))), "the stream lost and repeated nothing meanwhile"
    assert stored(own_redis.url, "outage", "stream", "file") == len(lines) - 1, "the last position was written at stop"


def test_a_stream_stopped_while_its_store_is_down_at_start_stops_promptly(tmp_path: Path) -> None:
    require_extra("redis")
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver("stream", SourceSinkDriver, sources={"file": counting(10, seed=1)},
                                 sinks={"out": TaggedFileSink(str(tmp_path / "o.jsonl"), "1")}, position_store=url)
        wait_until(lambda: (handle.stats()["positions"] or {}).get("errors", 0) >= 1, what="a failed read")
        proc.remove_driver(handle.pid)
    assert not (tmp_path / "o.jsonl").exists(), "nothing was sent before the position was known"
