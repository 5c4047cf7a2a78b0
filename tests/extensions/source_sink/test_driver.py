"""SourceSinkDriver with DummySource and file sinks, on every runtime: order, per-source state, drops, retries."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from rvai_sdk.drivers import Record, SourceMap
from rvai_sdk.exc import DriverError, ParameterError, SourceError
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sinks.dummy_sink import DummySink
from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.runtime import Inference, Runtime, init
from rvai_sdk.types import FloatRange, Integer
from tests.conftest import Count, FailNegative, single
from tests.extensions.source_sink.support import (
    AckingSource,
    FailsMidwaySource,
    FlakyOpenSource,
    GatedFileSink,
    append_jsonl,
    read_jsonl,
    wait_until,
    work_pipeline,
)

pytestmark = pytest.mark.timeout(90)


def counting(count: int | None, rate: float = 0.0, **more: object) -> DummySource:
    return DummySource(params=DummySource.parameters(rate=FloatRange(rate), count=count, seed=1, **more))


def written(handle: object, source: str) -> int:
    return int(handle.stats()["sources"].get(source, {}).get("written", 0))  # type: ignore[attr-defined]


# -- without a runtime --------------------------------------------------------------------------


def test_parameters_helper_builds_typed_parameters_and_rejects_unknown_fields() -> None:
    params = DummySource.parameters(rate=FloatRange(10), count=5)
    assert params.rate == 10.0 and params.count == 5 and params.drop == "auto"
    with pytest.raises(ParameterError, match="nope"):
        DummySource.parameters(nope=1)
    with pytest.raises(ParameterError, match="drop"):
        DummySource.parameters(drop="sometimes")


def test_sources_are_configuration_compared_by_value() -> None:
    assert counting(3) == counting(3)
    assert counting(3) != counting(4)
    import copy
    import pickle

    source = counting(3)
    assert pickle.loads(pickle.dumps(source)) == source
    assert copy.deepcopy(source) == source


def test_driver_rejects_duplicate_refs_and_non_sources_naming_them() -> None:
    driver = SourceSinkDriver(sources={"cam-1": counting(1)})
    with pytest.raises(DriverError, match="'cam-1' is already added"):
        driver.add_source(ref="cam-1", source=counting(1))
    with pytest.raises(DriverError, match="expected a Source"):
        driver.add_source(ref="cam-2", source="rtsp://nowhere")  # type: ignore[arg-type]
    with pytest.raises(DriverError, match="no source with ref 'cam-9'"):
        driver.remove_source("cam-9")
    with pytest.raises(ParameterError, match="sources"):
        driver.set_parameters({"sources": {"cam-3": 42}})


def test_reprs_hide_passwords_and_secret_headers() -> None:
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
    from rvai_sdk.extensions.sinks.http_callback_sink import HttpCallbackSink
    from rvai_sdk.extensions.sources.video_source import VideoSource

    assert "me:***@db" in repr(DatabaseSink("postgresql+psycopg://me:secret@db/x")) and "secret" not in repr(DatabaseSink("postgresql+psycopg://me:secret@db/x"))
    assert "token" not in repr(HttpCallbackSink("http://x/{source}", headers={"Authorization": "Bearer token"}))
    assert repr(VideoSource("rtsp://admin:hunter2@10.0.0.5/s")).startswith("VideoSource(url='rtsp://admin:***@10.0.0.5/s'")


def test_source_map_cannot_be_decoded_from_json() -> None:
    from rvai_sdk.exc import InputValidationError

    assert SourceMap.from_json({}) == {}
    with pytest.raises(InputValidationError, match="from Python"):
        SourceMap.from_json({"cam": {}})


def test_dummy_source_format_must_match_the_pipeline_inputs() -> None:
    from rvai_sdk.drivers import SourceContext

    pipeline = single(Count)
    source = DummySource(format={"z": Integer})
    with pytest.raises(SourceError, match="unknown: z; missing: x"):
        source.open(SourceContext(ref="fake", inputs=pipeline.inputs))


def test_record_json_has_status_and_error_for_failures() -> None:
    record = Record(source="s", sid="s", index=3, timestamp=1.0, outputs={}, status="failed", error="ValueError: bad")
    assert record.to_json() == {
        "source": "s", "sid": "s", "index": 3, "timestamp": 1.0, "status": "failed", "outputs": {}, "error": "ValueError: bad",
    }


# -- on every runtime ---------------------------------------------------------------------------


def test_each_source_is_its_own_stream_with_its_own_state_and_order(runtime: Runtime, jsonl: Callable[[str], str]) -> None:
    path = jsonl("out")
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver(
            "stream",
            SourceSinkDriver,
            sources={"cam-1": counting(60), "cam-2": counting(25)},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, path))},
        )
        wait_until(lambda: written(handle, "cam-1") == 60 and written(handle, "cam-2") == 25, what="85 records")
        stats = handle.stats()["sources"]
        handle.stop()
    for ref, n in (("cam-1", 60), ("cam-2", 25)):
        records = [r for r in read_jsonl(path) if r["source"] == ref]
        assert [r["index"] for r in records] == list(range(n)), "records reach the sink in source order"
        assert [r["outputs"]["y"] for r in records] == list(range(1, n + 1)), "the counter cell counts each sid"
        assert {r["sid"] for r in records} == {ref}
        assert stats[ref]["produced"] == stats[ref]["processed"] == n
        assert stats[ref]["state"] == "ended"


def test_failed_requests_become_failed_records_and_the_stream_goes_on(runtime: Runtime, jsonl: Callable[[str], str]) -> None:
    path = jsonl("out")
    with runtime.start_inference(Inference(pipeline=single(FailNegative))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"s": counting(40, signed=True)},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, path))},
        )
        wait_until(lambda: written(handle, "s") == 40, what="40 records")
        stats = handle.stats()["sources"]["s"]
    records = read_jsonl(path)
    failed = [r for r in records if r["status"] == "failed"]
    assert [r["index"] for r in records] == list(range(40))
    assert failed and len(failed) < 40, "the seeded fake values are of both signs"
    assert all("negative input" in r["error"] and r["outputs"] == {} for r in failed)
    assert stats["failed"] == len(failed) and stats["processed"] == 40 - len(failed)


@pytest.mark.parametrize("drop", ["auto", "keep_latest"])
def test_live_source_drops_by_policy_instead_of_queueing(runtime: Runtime, jsonl: Callable[[str], str], drop: str) -> None:
    path = jsonl("out")
    source = counting(300, live=True, buffer=2, max_in_flight=1, drop=drop)
    with runtime.start_inference(Inference(pipeline=work_pipeline(), parameters={"w": {"seconds": 0.002}})) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"cam": source},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, path))},
        )
        def drained() -> dict[str, int] | None:
            s: dict[str, int] = handle.stats()["sources"]["cam"]
            return s if s["state"] == "ended" and s["queued"] == 0 and s["in_flight"] == 0 and s["written"] == s["processed"] else None

        stats = wait_until(drained, what="the live source to end and drain")
    assert stats["policy"] == ("drop_oldest" if drop == "auto" else drop)
    assert stats["dropped"] > 0
    assert stats["produced"] == 300 == stats["processed"] + stats["dropped"]
    indexes = [r["index"] for r in read_jsonl(path)]
    assert indexes == sorted(set(indexes)) and len(indexes) == stats["processed"]


def test_sources_can_be_added_and_removed_on_a_running_driver(runtime: Runtime, jsonl: Callable[[str], str]) -> None:
    path = jsonl("out")
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"a": counting(None, rate=200)},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, path))},
        )
        wait_until(lambda: written(handle, "a") >= 10, what="10 records of a")
        SourceSinkDriver.add_source_to(handle, ref="b", source=counting(None, rate=200), sid="camera-b")
        wait_until(lambda: written(handle, "b") >= 10, what="10 records of b")
        SourceSinkDriver.remove_source_from(handle, "a")
        assert "a" not in handle.stats()["sources"]
        b_then = written(handle, "b")
        wait_until(lambda: written(handle, "b") >= b_then + 10, what="b to go on after a was removed")
        with pytest.raises(DriverError, match="'b' is already added"):
            SourceSinkDriver.add_source_to(handle, ref="b", source=counting(1))
        handle.stop()
    records = read_jsonl(path)
    for ref, sid in (("a", "a"), ("b", "camera-b")):
        mine = [r for r in records if r["source"] == ref]
        assert [r["index"] for r in mine] == list(range(len(mine))), f"{ref}: no gaps, no duplicates"
        assert [r for r in mine if r["status"] != "complete"] == []
        assert [r["outputs"]["y"] for r in mine] == list(range(1, len(mine) + 1)), f"{ref}: its own state"
        assert {r["sid"] for r in mine} == {sid}


def test_a_replaced_or_removed_sink_keeps_its_counts_in_the_stats(runtime: Runtime, jsonl: Callable[[str], str]) -> None:
    """A sink given new parameters is a new writer: what the old one wrote vanished from the counters (a source's
    ``written`` went backwards and ended below the records stored); a removed sink's too."""
    first, second, other = jsonl("first"), jsonl("second"), jsonl("other")
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"a": counting(300, rate=300)},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, first)),
                   "extra": DummySink(drain=functools.partial(append_jsonl, other))},
        )
        wait_until(lambda: written(handle, "a") >= 20, what="20 records of a")
        handle.set_parameters({"sinks": {"file": DummySink(drain=functools.partial(append_jsonl, second))}})
        wait_until(lambda: written(handle, "a") >= 300 + len(read_jsonl(other)), what="every record written", timeout=60)
        stats = handle.stats()
        handle.stop()
    stored = len(read_jsonl(first)) + len(read_jsonl(second))
    assert stored == 300 and len(read_jsonl(first)) > 0 and len(read_jsonl(second)) > 0
    assert stats["sources"]["a"]["written"] == stored + len(read_jsonl(other)), stats
    assert stats["sinks"]["file"]["written"] == stored and stats["sinks"]["file"]["lost"] == 0
    assert "extra" not in stats["sinks"]  # removed: no longer listed, its rows still counted for the source


def test_a_removed_sink_still_writing_keeps_the_driver_unfinished() -> None:
    gate = threading.Event()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
        driver = SourceSinkDriver(sources={"a": counting(5)})
        driver.add_sink(ref="slow", sink=DummySink(drain=lambda record: gate.wait(30)))
        driver.add_sink(ref="fast", sink=DummySink())
        handle = proc.add_driver("stream", lambda: driver)
        wait_until(lambda: handle.stats()["sinks"]["slow"]["buffered"] + written(handle, "a") >= 10, what="5 records each")
        driver.remove_sink("slow")
        stats = handle.stats()
        assert "slow" not in stats["sinks"] and stats["removing"] > 0 and not SourceSinkDriver.finished(stats)
        gate.set()
        final = SourceSinkDriver.wait(handle, timeout=30)
        handle.stop()
    assert final["removing"] == 0 and final["sources"]["a"]["written"] == 10  # by both sinks


def test_waiting_on_a_stopped_driver_says_so_at_once(runtime: Runtime, jsonl: Callable[[str], str]) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"a": counting(None, rate=100)},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, jsonl("out")))},
        )
        wait_until(lambda: written(handle, "a") >= 5, what="5 records of a")
        proc.remove_driver("stream")
        with pytest.raises(DriverError, match=r"driver 'stream' is STOPPED before its streams finished \(a: "):
            SourceSinkDriver.wait(handle, timeout=60)  # an endless source: it would wait out the timeout


def test_sink_outage_buffers_and_backpressures_without_losing_records(runtime: Runtime, tmp_path: Path) -> None:
    path, gate = str(tmp_path / "out.jsonl"), str(tmp_path / "gate")
    Path(gate).touch()
    sink = GatedFileSink(path, gate, params={"buffer": 5, "batch_size": 2, "retry_initial": 0.01, "retry_max": 0.05})
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver("stream", SourceSinkDriver, sources={"s": counting(50)}, sinks={"gated": sink})
        stats = wait_until(
            lambda: (s := handle.stats())["sinks"]["gated"]["write_failures"] >= 3 and s["sinks"]["gated"]["buffered"] == 5 and s,
            what="the sink to fill its buffer while failing",
        )
        assert stats["sources"]["s"]["produced"] < 50, "the source is held back, not drained into memory"
        assert stats["sinks"]["gated"]["last_error"] and "gate" in stats["sinks"]["gated"]["last_error"]
        os.unlink(gate)
        wait_until(lambda: written(handle, "s") == 50, what="every record after the outage")
        final = handle.stats()
    assert [r["index"] for r in read_jsonl(path)] == list(range(50))
    assert final["sinks"]["gated"]["lost"] == 0 and final["sources"]["s"]["dropped"] == 0


def test_a_source_that_fails_to_open_is_retried_and_reported(runtime: Runtime, jsonl: Callable[[str], str]) -> None:
    path = jsonl("out")
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"flaky": FlakyOpenSource(10, failures=2), "fine": counting(10)},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, path))},
        )
        wait_until(lambda: written(handle, "flaky") == 10 and written(handle, "fine") == 10, what="both sources")
        stats = handle.stats()["sources"]["flaky"]
    assert stats["errors"] == 2 and "not yet (attempt 2)" in stats["last_error"]
    assert stats["source"] == {"opened": 3}


def test_a_replayable_source_failing_midway_starts_again_and_each_item_is_inferred_and_written_once(
    runtime: Runtime, jsonl: Callable[[str], str]
) -> None:
    """A file read again from its start after a failure gives its items under the same indexes: the ones the
    stream had already taken are skipped, not inferred again under new indexes."""
    path = jsonl("out")
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"file": FailsMidwaySource(10, fail_at=5)},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, path))},
        )
        stats = SourceSinkDriver.wait(handle, timeout=60)["sources"]["file"]
    records = read_jsonl(path)
    assert [r["index"] for r in records] == list(range(10)), stats
    assert [r["outputs"]["y"] for r in records] == list(range(1, 11)), "items 0..4 inferred once (y counts the calls)"
    assert stats["errors"] == 1 and "read failed at item 5" in stats["last_error"]
    assert stats["produced"] == 10 and stats["skipped"] == 5
    assert stats["source"]["first_indexes"] == [0, 5], "told, when opened again, which items the driver skips"


@pytest.mark.parametrize("drop", ["block", "drop_oldest", "keep_latest"])
def test_a_source_that_wants_acknowledgements_gets_each_item_once_written_failed_or_dropped(
    drop: str, jsonl: Callable[[str], str]
) -> None:
    source = AckingSource([-1 if i % 7 == 3 else i for i in range(60)], params={"drop": drop, "buffer": 2, "max_in_flight": 1})
    idle = AckingSource([1, 2, 3])  # no sink takes it: its items are done once inferred
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(FailNegative))) as proc:
        driver = SourceSinkDriver(sources={"s": source, "idle": idle})
        driver.add_sink(ref="a", sink=DummySink(drain=functools.partial(append_jsonl, jsonl("a"))), sources=["s"])
        driver.add_sink(ref="b", sink=DummySink(), sources=["s"])
        handle = proc.add_driver("stream", lambda: driver)
        final = SourceSinkDriver.wait(handle, timeout=60)["sources"]
        handle.stop()
    stats = final["s"]
    assert stats["produced"] == 60 and stats["unfinished"] == 0, stats
    assert stats["processed"] + stats["failed"] + stats["dropped"] == 60 and (drop != "block" or stats["failed"] == 9), stats
    assert sorted(source.acked) == list(range(60)), "each item once: written by both sinks, failed and written, or dropped"
    assert sorted(idle.acked) == [0, 1, 2]


def test_a_sink_can_take_some_sources_only(jsonl: Callable[[str], str]) -> None:
    everything, only_b = jsonl("all"), jsonl("b")
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
        driver = SourceSinkDriver(sources={"a": counting(5), "b": counting(5)})
        driver.add_sink(ref="all", sink=DummySink(drain=functools.partial(append_jsonl, everything)))
        driver.add_sink(ref="b", sink=DummySink(drain=functools.partial(append_jsonl, only_b)), sources=["b"])
        handle = proc.add_driver("stream", lambda: driver)
        wait_until(lambda: handle.stats()["sinks"]["all"]["written"] == 10 and handle.stats()["sinks"]["b"]["written"] == 5, what="records")
        driver.remove_sink("all")
        assert set(handle.stats()["sinks"]) == {"b"}
    assert {r["source"] for r in read_jsonl(only_b)} == {"b"}
    assert len(read_jsonl(everything)) == 10


def test_stop_returns_promptly_and_the_driver_stops_cleanly() -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver("stream", SourceSinkDriver, sources={"s": counting(None, rate=50)}, sinks={"log": DummySink()})
        wait_until(lambda: handle.stats()["sources"]["s"]["processed"] >= 3, what="a few items")
        handle.stop(timeout=10)
        assert handle.status.name == "STOPPED"


def test_results_reach_sinks_in_source_order_even_when_requests_finish_out_of_order(
    runtime: Runtime, jsonl: Callable[[str], str]
) -> None:
    from tests.extensions.source_sink.support import ListSource, sleep_pipeline

    path = jsonl("out")
    xs = [200, 0, 0, 0, 200, 0, 0, 0]
    with runtime.start_inference(Inference(pipeline=sleep_pipeline())) as proc:
        handle = proc.add_driver(
            "stream", SourceSinkDriver, sources={"s": ListSource(xs, params={"max_in_flight": 4})},
            sinks={"file": DummySink(drain=functools.partial(append_jsonl, path))},
        )
        wait_until(lambda: written(handle, "s") == len(xs), what="8 records")
    records = read_jsonl(path)
    assert [r["index"] for r in records] == list(range(len(xs)))
    assert [r["outputs"]["y"] for r in records] == xs
    assert [r["sid"] for r in records] == [f"item-{i}" for i in range(len(xs))], "a source item may carry its own sid"
    done = [r["outputs"]["done_ns"] for r in records]
    assert done != sorted(done), "the fast requests behind a slow one finished first (several were in flight)"


def test_a_source_missing_its_extra_is_reported_once_and_not_retried(jsonl: Callable[[str], str]) -> None:
    from tests.extensions.source_sink.support import NeedsExtraSource

    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver("stream", SourceSinkDriver, sources={"x": NeedsExtraSource(), "ok": counting(3)},
                                 sinks={"file": DummySink(drain=functools.partial(append_jsonl, jsonl("out")))})
        stats = wait_until(lambda: (s := handle.stats()["sources"])["x"]["state"] == "failed" and s["ok"]["written"] == 3 and s, what="states")
    assert stats["x"]["errors"] == 1 and "pip install 'rvai_sdk[nope]'" in stats["x"]["last_error"]
