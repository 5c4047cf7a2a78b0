"""VideoSource: files (count, fps, loop, errors) and live RTSP cameras from a real GStreamer RTSP server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_a_looping_file_keeps_counting_and_gives_its_frames_again(clip: Path) -> None:
    import numpy as np

    source = _open(VideoSource(str(clip), params={"loop": True}))
    indexes, frames = [], []
    try:
        for item in source.items():
            indexes.append(item.index)
            frames.append(item.inputs["frame"])
            if len(indexes) == FRAMES * 2 + 10:
                break
    finally:
        source.close()
    assert indexes == list(range(FRAMES * 2 + 10))
    # each pass (the file seeks back to its start, keeping its decoder) gives the same frames, from the first
    reference = _reference(clip)
    assert len(reference) == FRAMES
    assert all(np.array_equal(frames[i], reference[i % FRAMES]) for i in range(len(frames)))
    assert source.stats()["decoded"] == len(frames) and source.stats()["reconnects"] == 0


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


# -- decode: the GPU decoder and its fallback, what a target fps lets the decoder skip, pacing -----
# These clips are made with PyAV's own encoder (no ffmpeg CLI), 160x120, with the GOP each test needs.


def _make_clip(
    path: Path, *, frames: int = 60, fps: int = 30, x264: str = "keyint=30:min-keyint=30:scenecut=0:bframes=0", movflags: str = ""
) -> Path:
    import av
    import numpy as np

    y, x = np.mgrid[0:120, 0:160]
    with av.open(str(path), "w", options={"movflags": movflags} if movflags else {}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "x264-params": x264})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(frames):
            rgb = np.stack([(x + 5 * i) % 256, (y + 3 * i) % 256, np.full_like(x, (40 * i) % 256)], axis=2).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def _frames(source: VideoSource) -> list[Any]:
    source = _open(source)
    try:
        return [item.inputs["frame"] for item in source.items()]
    finally:
        source.close()


def _reference(path: Path) -> list[Any]:
    """Every frame of the clip, decoded with PyAV directly."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_the_cuda_decoder_falls_back_to_the_cpu_with_the_reason_and_the_same_frames(tmp_path: Path) -> None:
    import numpy as np

    if _gpu_decoder_usable():
        pytest.skip("this machine's GPU decodes: tests/integration/test_gpu_decode.py covers it")
    path = _make_clip(tmp_path / "clip.mp4")
    cpu = VideoSource(str(path), params={"decode": "cpu"})
    cuda = VideoSource(str(path), params={"decode": "cuda"})
    on_cpu, asked_cuda = _frames(cpu), _frames(cuda)
    assert cpu.stats()["decoder"] == "cpu" and cpu.stats()["decode_fallback"] is None
    stats = cuda.stats()
    assert stats["decoder"] == "cpu" and "CUDA" in stats["decode_fallback"], stats
    assert cpu.stats()["convert"] == stats["convert"] == "cpu"
    if stats["convert_fallback"] is not None:  # the GPU conversion was considered first: why it was not used
        assert "torch" in stats["convert_fallback"] or "PyAV" in stats["convert_fallback"], stats
    assert len(asked_cuda) == len(on_cpu) == 60
    assert all(np.array_equal(a, b) for a, b in zip(asked_cuda, on_cpu))


def test_auto_decodes_on_the_cpu_where_no_nvidia_gpu_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # hides any GPU, as the runtime does for CPU-only processes
    path = _make_clip(tmp_path / "clip.mp4")
    source = VideoSource(str(path))
    frames = _frames(source)
    assert source.stats()["decoder"] == "cpu" and "no NVIDIA GPU" in source.stats()["decode_fallback"]
    assert all(np.array_equal(a, b) for a, b in zip(frames, _reference(path))) and len(frames) == 60


def test_an_unknown_decoder_is_refused_with_the_choices() -> None:
    with pytest.raises(Exception, match="cuda"):
        VideoSource("clip.mp4", params={"decode": "nvdec"})


def test_a_target_fps_met_by_key_frames_alone_decodes_only_key_frames_and_keeps_the_same_frames(tmp_path: Path) -> None:
    import numpy as np

    path = _make_clip(tmp_path / "clip.mp4", frames=90, x264="keyint=6:min-keyint=6:scenecut=0:bframes=0")
    source = VideoSource(str(path), params={"fps": 5.0})
    frames = _frames(source)
    stats = source.stats()
    every = _reference(path)
    # 5 fps from 30 fps is every 6th frame, and every 6th frame is a key frame: the same frames as decoding all
    assert len(frames) == 15 and all(np.array_equal(a, every[6 * i]) for i, a in enumerate(frames))
    assert stats["skip_frame"] == "key frames only"
    # the first three GOPs are decoded whole to learn the stream; after that, only key frames
    assert stats["discarded"] == 90 - 15 - 12 and stats["decoded"] == 90 - stats["discarded"]


def test_a_target_fps_met_by_i_and_p_frames_skips_b_frames(tmp_path: Path) -> None:
    import numpy as np

    path = _make_clip(tmp_path / "clip.mp4", frames=120, x264="keyint=30:min-keyint=30:scenecut=0:bframes=3:b-adapt=0:b-pyramid=none")
    source = VideoSource(str(path), params={"fps": 5.0})
    frames = _frames(source)
    stats = source.stats()
    every = _reference(path)
    assert stats["skip_frame"] == "B frames skipped"
    assert stats["decoded"] < 120 - 40  # B frames after the first two GOPs were never decoded
    # every kept frame is one of the clip's frames, in order, about 5 a second of video
    positions = [next(i for i, f in enumerate(every) if np.array_equal(f, frame)) for frame in frames]
    assert positions == sorted(positions) and 16 <= len(frames) <= 20


def test_a_camera_like_stream_at_a_target_fps_gives_the_frames_it_gave_before(tmp_path: Path) -> None:
    import numpy as np

    path = _make_clip(tmp_path / "clip.mp4", frames=90)  # I and P frames, one key frame a second: nothing to skip
    source = VideoSource(str(path), params={"fps": 5.0})
    frames = _frames(source)
    every = _reference(path)
    assert len(frames) == 15 and all(np.array_equal(a, every[6 * i]) for i, a in enumerate(frames))
    assert source.stats()["skip_frame"] == "non-reference frames skipped" and source.stats()["discarded"] == 0


def test_a_looping_file_at_a_target_fps_samples_across_the_loop_without_a_double_frame(tmp_path: Path) -> None:
    path = _make_clip(tmp_path / "clip.mp4", frames=45)  # 1.5 s: a loop boundary in the middle of a 5 fps step
    source = _open(VideoSource(str(path), params={"fps": 5.0, "loop": True}))
    try:
        items = []
        for item in source.items():
            items.append(item)
            if len(items) == 30:  # 6 s of video: 4 loops
                break
    finally:
        source.close()
    assert source.stats()["decoded"] <= 4 * 45 + 6  # 30 frames at 5 fps are 6 s of the 30 fps video, not more


def test_realtime_paces_a_file_like_a_camera(tmp_path: Path) -> None:
    path = _make_clip(tmp_path / "clip.mp4", frames=30)
    source = _open(VideoSource(str(path), params={"realtime": True}))
    try:
        stamps = [item.timestamp for item in source.items()]
    finally:
        source.close()
    assert len(stamps) == 30
    assert stamps[-1] - stamps[0] >= 29 / 30 - 0.01  # never faster than the video (a lower bound: no timing flake)


def _gpu_decoder_usable() -> bool:
    from rvai_sdk.extensions.sources import video_source

    return video_source._nvidia_gpu_listed()


# -- damaged files ------------------------------------------------------------------------------------


def test_a_damaged_packet_mid_file_is_skipped_and_every_other_frame_is_written_once(tmp_path: Path, sqlite_url: str) -> None:
    """Zeroed bytes in the middle of a file (a bad disk block): the decoder refuses some packets. The stream goes
    on past them, as ffmpeg does, and says so; it used to fail, reopen the file and write it again and again
    under new indexes."""
    from rvai_sdk.runtime import init

    good = _make_clip(tmp_path / "good.mp4", frames=120)
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with init("debug") as rt, rt.start_inference(Inference(pipeline=frame_pipeline())) as proc:
        handle = proc.add_driver(
            "video", SourceSinkDriver, sources={"file": VideoSource(str(damaged))}, sinks={"db": DatabaseSink(sqlite_url)}
        )
        stats = SourceSinkDriver.wait(handle, timeout=60)["sources"]["file"]
    table = rows(sqlite_url, "results")
    assert stats["state"] == "ended" and stats["errors"] == 0, stats
    assert 0 < stats["source"]["corrupt"] and "damaged packet was skipped" in stats["source"]["last_error"]
    assert 60 < len(table) < 120 and [r["index"] for r in table] == list(range(len(table)))
    assert [r["count"] for r in table] == list(range(1, len(table) + 1)), "each frame inferred once"


def test_a_file_cut_short_ends_saying_how_many_of_its_frames_it_had(tmp_path: Path) -> None:
    """An interrupted copy: the header announces 90 frames, half the file is there. It used to end as if whole."""
    whole = _make_clip(tmp_path / "whole.mp4", frames=90, movflags="faststart")  # the header first, as streamed files have it
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    source = VideoSource(str(cut))
    frames = _frames(source)
    assert 0 < len(frames) < 90
    assert "the file ended after" in str(source.stats()["last_error"]) and "of the 90 frames" in str(source.stats()["last_error"])


@pytest.mark.parametrize("x264", ["keyint=25:min-keyint=25:scenecut=0:bframes=0", "keyint=25:min-keyint=25:scenecut=0:bframes=3:b-pyramid=none"])
def test_a_target_fps_samples_a_file_without_timestamps_by_its_frame_rate_the_same_every_time(tmp_path: Path, x264: str) -> None:
    """A raw .h264 file has no timestamps: sampling used the wall clock, so what was kept depended on how fast
    it was read (one frame when read fast), and the same index was another frame the next time. B frames
    (which the decoder skips: nothing refers to them) must not slow the file's clock."""
    import numpy as np

    # 3 s at 25 fps, no container: no timestamps (and no rate in its header: FFmpeg takes 25 fps for it)
    raw = _make_clip(tmp_path / "clip.h264", frames=75, fps=25, x264=x264)
    first = _frames(VideoSource(str(raw), params={"fps": 5.0}))
    again = _frames(VideoSource(str(raw), params={"fps": 5.0}))
    assert 13 <= len(first) <= 17  # about 5 a second of video
    assert len(again) == len(first) and all(np.array_equal(a, b) for a, b in zip(first, again))


def test_frames_below_the_drivers_first_index_are_neither_converted_nor_paced(tmp_path: Path) -> None:
    """A file opened again (or resumed) at frame 50: the driver skips what comes before. Those frames used to be
    converted to RGB and, with realtime, paced: an hour-long file resumed after 50 minutes gave nothing for 50."""
    import numpy as np

    path = _make_clip(tmp_path / "clip.mp4", frames=60)
    source = VideoSource(str(path), params={"realtime": True})
    source.open(SourceContext(ref="v", inputs=frame_pipeline().inputs, first_index=50))
    try:
        items = list(source.items())
    finally:
        source.close()
    assert [i.index for i in items] == list(range(60))
    assert all(item.inputs == {} for item in items[:50])
    every = _reference(path)
    assert all(np.array_equal(item.inputs["frame"], every[item.index]) for item in items[50:])
