"""Streaming throughput: PyAV decoding alone vs the same clip through SourceSinkDriver → a cell → DatabaseSink.

Side by side in one run, on a generated 1080p H.264 clip (no camera needed):

* decode only: PyAV decodes the clip to RGB arrays (``thread_type="AUTO"``, the
  same settings as :class:`VideoSource`), frames/s; with 4 sources, 4 decoders on
  threads at once (aggregate frames/s);
* driver path: ``VideoSource(loop=True)`` → ``SourceSinkDriver`` → a trivial cell →
  ``DatabaseSink`` on SQLite, on the chosen runtime (``local`` by default: the
  frames cross to the inference process through shared memory), steady-state
  frames/s written to the database, measured over a window after a warm-up.

Goal (issue 5): driver path >= 80% of the decode-only rate.

    python benchmarks/bench_stream.py [--runtime local|debug] [--quick] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.cell import Cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402
from rvai_sdk.types import Image, Integer  # noqa: E402


@dataclass
class FrameIn(Inputs):
    frame: Image = Inputs.field()


@dataclass
class SizeOut(Outputs):
    height: Integer = Outputs.field()
    corner: Integer = Outputs.field()


class Trivial(Cell):
    """Reads the frame's size and one pixel: next to nothing, so the stream machinery is what is measured."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameIn) -> SizeOut:
        frame = np.asarray(inputs.frame)
        return SizeOut(height=frame.shape[0], corner=int(frame[0, 0, 0]))


def pipeline() -> Pipeline:
    pf = PipelineFactory(name="bench-stream")
    cell = pf.add_cell(ref="trivial", cell=Trivial())
    pf.declare_input(ref="frame", input=cell.inputs.frame)
    pf.declare_output(ref="height", output=cell.outputs.height)
    pf.declare_output(ref="corner", output=cell.outputs.corner)
    return pf.build()


def make_clip(path: str, seconds: float, fps: int = 30, width: int = 1920, height: int = 1080) -> int:
    """Encode a moving, noisy 1080p pattern as H.264 (libx264, veryfast, like a camera stream); the frame count."""
    import av

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    x, y = np.meshgrid(np.arange(width, dtype=np.uint16), np.arange(height, dtype=np.uint16))
    count = int(seconds * fps)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "g": str(fps)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(count):
            rgb = np.stack([(x + 8 * i) % 256, (y + 4 * i) % 256, (x // 4 + y // 4 + 2 * i) % 256], axis=2).astype(np.uint8)
            rgb += np.roll(noise, i * 7, axis=1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return count


def decode_only(path: str, seconds: float) -> tuple[int, float]:
    """Decode the clip to RGB arrays, looping, for about ``seconds``; (frames, elapsed)."""
    import av

    frames = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24")
                frames += 1
    return frames, time.perf_counter() - start


def decode_only_parallel(path: str, seconds: float, sources: int) -> float:
    """Aggregate frames/s of ``sources`` decoders on threads at once."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def work() -> None:
        result = decode_only(path, seconds)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=work) for _ in range(sources)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return sum(n for n, _ in results) / elapsed


def driver_path(path: str, runtime: str, sources: int, warmup: float, window: float, workdir: str) -> tuple[float, dict[str, int]]:
    """Steady-state frames/s written to SQLite through the driver; and the summed counters."""
    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
    from rvai_sdk.extensions.sources.video_source import VideoSource

    db = f"sqlite:///{os.path.join(workdir, f'bench-{runtime}-{sources}.db')}"
    cams = {f"cam-{i}": VideoSource(path, params={"loop": True}) for i in range(sources)}
    tick = threading.Event()  # never set: paces the polling

    def written(stats: dict[str, dict[str, dict[str, int]]]) -> int:
        return sum(int(s["written"]) for s in stats["sources"].values())

    with init(runtime) as rt, rt.start_inference(Inference(pipeline=pipeline())) as proc:
        handle = proc.add_driver("bench", SourceSinkDriver, sources=cams, sinks={"db": DatabaseSink(db, params={"buffer": 256})})
        deadline = time.monotonic() + 120
        while written(handle.stats()) == 0 and time.monotonic() < deadline:
            tick.wait(0.02)
        tick.wait(warmup)
        first, t0 = written(handle.stats()), time.perf_counter()
        tick.wait(window)
        stats = handle.stats()
        last, t1 = written(stats), time.perf_counter()
        handle.stop()
    totals = {k: sum(int(s[k]) for s in stats["sources"].values()) for k in ("produced", "processed", "dropped", "failed", "written")}
    return (last - first) / (t1 - t0), totals


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="local", help="runtime of the driver path (default: local)")
    parser.add_argument("--quick", action="store_true", help="short clip and windows (smoke test)")
    parser.add_argument("--write", type=Path, help="update this markdown file's stream section")
    args = parser.parse_args(argv)

    seconds = 1.0 if args.quick else 4.0
    window = 1.5 if args.quick else 6.0
    warmup = 0.5 if args.quick else 2.0
    workdir = tempfile.mkdtemp(prefix="rvai-bench-stream-")
    clip = os.path.join(workdir, "clip-1080p.mp4")
    frames = make_clip(clip, seconds)
    print(f"clip: {frames} frames of 1920x1080 H.264 ({os.path.getsize(clip) / 1e6:.1f} MB); {machine()}")

    n, elapsed = decode_only(clip, window)
    single_decode = n / elapsed
    single_driver, one = driver_path(clip, args.runtime, 1, warmup, window, workdir)
    quad_decode = decode_only_parallel(clip, window, 4)
    quad_driver, four = driver_path(clip, args.runtime, 4, warmup, window, workdir)

    ratio1, ratio4 = single_driver / single_decode, quad_driver / quad_decode
    rows = [
        ("1 source", single_decode, single_driver, ratio1, one),
        ("4 sources (aggregate)", quad_decode, quad_driver, ratio4, four),
    ]
    table = [
        f"| stream ({args.runtime} runtime) | PyAV decode only, frames/s | SourceSinkDriver → cell → SQLite, frames/s | ratio | dropped |",
        "|---|---|---|---|---|",
    ]
    for name, dec, drv, ratio, totals in rows:
        table.append(f"| {name} | {dec:.1f} | {drv:.1f} | {ratio:.2f} | {totals['dropped']} |")
    print("\n".join(table))
    print(f"goals: driver path >= 0.80 of decode only: 1 source {ratio1:.2f} ({'met' if ratio1 >= 0.8 else 'NOT met'}), 4 sources {ratio4:.2f}")
    if args.write:
        write_section(
            args.write,
            "stream",
            "\n".join(
                [
                    f"Streaming, 1080p H.264 file ({frames} frames, looped), `python benchmarks/bench_stream.py`; {machine()}.",
                    "",
                    *table,
                ]
            ),
        )
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    return {"decode_1": single_decode, "driver_1": single_driver, "ratio_1": ratio1, "decode_4": quad_decode, "driver_4": quad_driver, "ratio_4": ratio4}


if __name__ == "__main__":
    main()
