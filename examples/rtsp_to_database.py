# requires: av, sqlalchemy
"""Cameras → a pipeline → a database: one row per processed frame per camera.

Each camera is its own stream (its own sid), so the per-camera state of the
``Motion`` cell (the previous frame) stays with its camera. A progress line shows
frames/s, drops and rows written per camera.

    python examples/rtsp_to_database.py                       # a generated clip as two cameras, SQLite
    python examples/rtsp_to_database.py --runtime local \\
        --camera rtsp://10.0.0.5/stream1 --camera rtsp://10.0.0.6/stream1 \\
        --database postgresql+psycopg://user:password@db/frames --seconds 60

With no ``--camera`` it encodes a short clip with PyAV and uses it twice, so it
runs anywhere, in seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.exc import DriverError
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Float, Image, Integer


@dataclass
class FrameInputs(Inputs):
    frame: Image = Inputs.field(name="Frame", description="An RGB camera frame")


@dataclass
class MotionOutputs(Outputs):
    brightness: Float = Outputs.field(name="Brightness", description="Mean pixel value, 0..255")
    motion: Float = Outputs.field(name="Motion", description="Mean absolute change from this camera's previous frame")
    frames: Integer = Outputs.field(name="Frames", description="Frames seen on this camera")


@dataclass
class MotionState(State):
    previous: Image | None = State.field(default=None)
    frames: Integer = State.field(default=Integer(0))


@cell(state=MotionState)
class Motion(Cell):
    """Brightness and motion of a frame; remembers each camera's previous (downsampled, grey) frame."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameInputs) -> MotionOutputs:
        grey = np.asarray(inputs.frame)[::4, ::4].mean(axis=2).astype(np.uint8)
        state = context.state
        previous = state.previous
        motion = 0.0 if previous is None else float(np.abs(grey.astype(np.int16) - np.asarray(previous)[:, :, 0]).mean())
        state.previous = Image(grey)
        state.frames = Integer(state.frames + 1)
        return MotionOutputs(brightness=float(np.asarray(inputs.frame).mean()), motion=motion, frames=state.frames)


def build_pipeline() -> Pipeline:
    """One cell: frame → brightness, motion, frame count."""
    pf = PipelineFactory(name="CameraMotion")
    motion = pf.add_cell(ref="motion", cell=Motion())
    pf.declare_input(ref="frame", input=motion.inputs.frame)
    for port in motion.outputs:
        pf.declare_output(ref=port.name, output=port)
    return pf.build()


def make_clip(path: str, seconds: float = 3.0, fps: int = 25, width: int = 320, height: int = 240) -> str:
    """Encode a moving gradient as an H.264 MP4 with PyAV (no camera needed)."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x, y = np.meshgrid(np.arange(width, dtype=np.uint16), np.arange(height, dtype=np.uint16))
        for i in range(int(seconds * fps)):
            rgb = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, np.full_like(x, (3 * i) % 256)], axis=2)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def progress_line(stats: dict[str, object], previous: dict[str, int], elapsed: float) -> str:
    """``cam-1: 24.8 fps, 0 dropped, 120 written | cam-2: ...``"""
    parts = []
    for ref, entry in stats["sources"].items():  # type: ignore[attr-defined]
        processed = int(entry["processed"]) + int(entry["failed"])
        rate = (processed - previous.get(ref, 0)) / elapsed if elapsed > 0 else 0.0
        previous[ref] = processed
        parts.append(f"{ref}: {rate:5.1f} fps, {entry['dropped']} dropped, {entry['written']} written")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="debug", help="debug (in this process) or local (separate processes)")
    parser.add_argument("--camera", action="append", default=[], help="an RTSP URL or a video file; repeat for more cameras")
    parser.add_argument("--database", default=None, help="a SQLAlchemy URL (default: SQLite in a temporary folder)")
    parser.add_argument("--table", default="frames", help="the table to write (created when missing)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: when every file ends; 30 s for live cameras)")
    parser.add_argument("--fps", type=float, default=0.0, help="most frames per second per camera (0: every frame)")
    args = parser.parse_args(argv)

    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
    from rvai_sdk.extensions.sources.video_source import VideoSource

    workdir = tempfile.mkdtemp(prefix="rvai-rtsp-to-database-")
    cameras = list(args.camera)
    if not cameras:
        clip = make_clip(os.path.join(workdir, "clip.mp4"))
        cameras = [clip, clip]
        print(f"no --camera given: using a generated clip twice ({clip})")
    database = args.database or f"sqlite:///{os.path.join(workdir, 'frames.db')}"
    sources = {f"cam-{i + 1}": VideoSource(url, params={"fps": args.fps}) for i, url in enumerate(cameras)}
    live = any(source.live for source in sources.values())
    seconds = args.seconds if args.seconds is not None else (30.0 if live else None)

    with init(args.runtime) as rt, rt.start_inference(Inference(pipeline=build_pipeline())) as proc:
        stream = proc.add_driver(
            "cameras", SourceSinkDriver, sources=sources, sinks={"db": DatabaseSink(database, table=args.table)}
        )
        started = time.monotonic()
        last = [started]
        previous: dict[str, int] = {}

        def show(stats: dict[str, Any]) -> None:
            now = time.monotonic()
            print(f"[{now - started:5.1f} s] {progress_line(stats, previous, now - last[0])}", flush=True)
            last[0] = now

        try:  # every file ended and its rows are written; live cameras run for --seconds
            final = SourceSinkDriver.wait(stream, timeout=seconds if seconds is not None else 3600.0, interval=1.0, progress=show)
        except DriverError:
            if stream.status.name != "RUNNING":
                raise
            stream.set_parameters({"limit": 0})  # cameras: stop taking frames, finish and write what was taken
            try:
                final = SourceSinkDriver.wait(stream, timeout=30.0, interval=0.2)
            except DriverError:  # a camera that is reconnecting takes no frame, so it never ends by the limit
                final = stream.stats()
        stream.stop()  # finishes the requests in flight and writes what is buffered

    for ref, entry in final["sources"].items():
        print(f"{ref}: {entry['produced']} frames read, {entry['processed']} processed, {entry['failed']} failed, {entry['dropped']} dropped")
    print_table_summary(database, args.table)
    if args.database is None and not args.camera:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"rows are in {database} (table {args.table!r})")


def print_table_summary(database: str, table: str) -> None:
    """Rows per camera, as the database has them."""
    import sqlalchemy as sa

    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            query = sa.text(
                f'SELECT source, COUNT(*) AS n, MIN("index") AS first, MAX("index") AS last, AVG(motion) AS motion '
                f'FROM "{table}" GROUP BY source ORDER BY source'
            )
            for row in conn.execute(query):
                print(f"table {table!r}: {row.source}: {row.n} rows, frames {row.first}..{row.last}, mean motion {row.motion:.2f}")
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
