"""VideoSource: files (count, fps, loop, errors) and live RTSP cameras from a real GStreamer RTSP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from rvai_sdk.drivers import SourceContext
from rvai_sdk.exc import SourceError
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
from rvai_sdk.extensions.sources.video_source import VideoSource
from rvai_sdk.runtime import Inference, Runtime
from tests.conftest import Count, single
from tests.conftest import require_extra
from tests.extensions.source_sink.conftest import RtspServer, rows
from tests.extensions.source_sink.support import frame_pipeline, wait_until

pytestmark = pytest.mark.timeout(120)

FRAMES = 200  # the clip fixture: 8 s at 25 fps


@pytest.fixture(autouse=True)
def _av() -> None:
    require_extra("av")


def test_a_file_gives_one_row_per_frame(runtime: Runtime, clip: Path, sqlite_url: str) -> None:
    with runtime.start_inference(Inference(pipeline=frame_pipeline())) as proc:
        handle = proc.add_driver(
            "video", SourceSinkDriver, sources={"file": VideoSource(str(clip))}, sinks={"db": DatabaseSink(sqlite_url)}
        )
        wait_until(lambda: handle.stats()["sources"]["file"]["written"] == FRAMES, what=f"{FRAMES} rows")
        stats = handle.stats()["sources"]["file"]
        handle.stop()
    table = rows(sqlite_url, "results")
    assert [r["index"] for r in table] == list(range(FRAMES))
    assert [r["count"] for r in table] == list(range(1, FRAMES + 1))
    assert all(0 < float(r["brightness"]) < 255 for r in table)  # type: ignore[arg-type]
    assert stats["state"] == "ended" and stats["policy"] == "block" and stats["dropped"] == 0
    assert stats["source"]["frames"] == FRAMES and stats["source"]["reconnects"] == 0


def _open(source: VideoSource) -> VideoSource:
    source.open(SourceContext(ref="v", inputs=frame_pipeline().inputs))
    return source


def test_target_fps_skips_frames_by_timestamp_and_size_resizes(clip: Path) -> None:
    source = _open(VideoSource(str(clip), params={"fps": 5.0, "width": 160}))
    try:
        items = list(source.items())
    finally:
        source.close()
    assert len(items) == FRAMES // 5 and source.stats()["skipped"] == FRAMES - FRAMES // 5
    assert items[0].inputs["frame"].shape == (120, 160, 3)
    assert [i.index for i in items] == list(range(len(items)))


def test_a_looping_file_keeps_counting(clip: Path) -> None:
    source = _open(VideoSource(str(clip), params={"loop": True}))
    indexes = []
    try:
        for item in source.items():
            indexes.append(item.index)
            if len(indexes) == FRAMES * 2 + 10:
                break
    finally:
        source.close()
    assert indexes == list(range(FRAMES * 2 + 10))


def test_clear_errors_name_the_source(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"source 'v' \(VideoSource .*missing.mp4\): cannot open"):
        _open(VideoSource(str(tmp_path / "missing.mp4")))
    with pytest.raises(SourceError, match="0 Image inputs"):
        VideoSource(str(clip)).open(SourceContext(ref="v", inputs=single(Count).inputs))
    assert VideoSource("rtsp://user:secret@10.0.0.5/s")._shown() == "rtsp://***@10.0.0.5/s"


@pytest.mark.timeout(180)
def test_two_rtsp_cameras_survive_a_server_restart_without_gaps_or_duplicates(
    runtime: Runtime, rtsp_server: RtspServer, pg_table: tuple[str, str]
) -> None:
    url, table = pg_table
    # drop="block": the test asserts contiguous rows, so no frame may be dropped for being late either.
    params = {"drop": "block", "reconnect_initial": 0.2, "reconnect_max": 1.0, "read_timeout": 2.0}
    cameras = {ref: VideoSource(rtsp_server.url(ref), params=params) for ref in ("cam-1", "cam-2")}

    def count(ref: str) -> int:
        return int(handle.stats()["sources"][ref]["written"])

    with runtime.start_inference(Inference(pipeline=frame_pipeline())) as proc:
        handle = proc.add_driver("cameras", SourceSinkDriver, sources=cameras, sinks={"db": DatabaseSink(url, table=table)})
        wait_until(lambda: count("cam-1") >= 20 and count("cam-2") >= 20, what="frames from both cameras")
        rtsp_server.kill()
        wait_until(
            lambda: not any(s["source"]["connected"] for s in handle.stats()["sources"].values()),
            what="both cameras to notice the server is gone",
        )
        before = {ref: count(ref) for ref in cameras}
        rtsp_server.start()
        wait_until(
            lambda: all(count(ref) >= before[ref] + 20 for ref in cameras), timeout=60, what="frames after the server is back"
        )
        stats = handle.stats()["sources"]
        handle.stop()
    for ref in cameras:
        mine = [r for r in rows(url, table) if r["source"] == ref]
        assert [(r["index"], r["error"]) for r in mine if r["status"] != "complete"] == [], f"{ref}: every frame processed"
        assert [r["index"] for r in mine] == list(range(len(mine))), f"{ref}: contiguous, no duplicates"
        assert [r["count"] for r in mine] == list(range(1, len(mine) + 1)), f"{ref}: one stream's state across the reconnect"
        assert stats[ref]["source"]["reconnects"] >= 1 and stats[ref]["dropped"] == 0
        assert len(mine) > before[ref]


def test_stop_returns_while_a_camera_hangs_in_its_open_timeout() -> None:
    import socket

    from rvai_sdk.runtime import init

    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/hangs"
        with init("debug") as rt, rt.start_inference(Inference(pipeline=frame_pipeline())) as proc:
            handle = proc.add_driver(
                "cameras", SourceSinkDriver, sources={"stuck": VideoSource(url, params={"open_timeout": 60.0})}
            )
            wait_until(lambda: handle.stats()["sources"]["stuck"]["state"] == "opening", what="the camera to be opening")
            handle.stop(timeout=5.0)  # raises DriverError if run() does not return in time
            assert handle.status.name == "STOPPED"
