# requires: sqlalchemy, fastapi, httpx
"""The whole product in one run: ``make demo``.

On embedded defaults, with nothing to configure:

1. the **local runtime** starts an inference process for a demo pipeline whose cell keeps
   **per-stream state** (each camera's previous frame and frame count);
2. the **HTTP endpoint** comes up (``FastAPIDriver``; its URL is printed);
3. a **generated clip** (ffmpeg; ``DummySource`` frames when ffmpeg or PyAV is missing)
   plays as two cameras, **streamed into SQLite** (``SourceSinkDriver`` and
   ``DatabaseSink``) with a progress line per camera: frames/s, dropped, written;
4. a **sample HTTP request** continues camera ``cam-1``'s stream (the same sid, so the
   same state) and another starts a new one;
5. a **summary** is read back from the database;

and it ends by itself, saying when it closes the HTTP endpoint (the URL works until
then). ``--serve`` keeps the endpoint up until Ctrl-C (or SIGTERM), and so does
``--serve-seconds N`` for N seconds; either way the demo says when it closes it.

    python examples/demo.py                      # local runtime, ends by itself
    python examples/demo.py --serve              # ... then keeps serving: curl the printed URL
    python examples/demo.py --serve-seconds 60   # ... for a minute
    python examples/demo.py --runtime debug --database sqlite:///demo.db --source rtsp://10.0.0.5/stream1
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rvai_sdk.cell import Cell, cell
from rvai_sdk.cli import progress_line
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.exc import DriverError
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Float, FloatRange, Image, Integer


@dataclass
class FrameInputs(Inputs):
    frame: Image = Inputs.field(name="Frame", description="An RGB camera frame")


@dataclass
class ActivityOutputs(Outputs):
    brightness: Float = Outputs.field(name="Brightness", description="Mean pixel value, 0..255")
    motion: Float = Outputs.field(name="Motion", description="Mean absolute change from this stream's previous frame")
    active: Integer = Outputs.field(name="Active", description="1 when motion is above the threshold")
    frames: Integer = Outputs.field(name="Frames", description="Frames seen on this stream so far")


@dataclass
class ActivityParameters(Parameters):
    threshold: FloatRange = Parameters.field(
        name="Motion threshold", description="Motion above this marks a frame active", default=FloatRange(0.4, min=0.0)
    )


@dataclass
class ActivityState(State):
    previous: Image | None = State.field(default=None)
    frames: Integer = State.field(default=Integer(0))


@cell(state=ActivityState)
class Activity(Cell):
    """Brightness and motion of a frame against the previous frame of the same stream (its sid)."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: ActivityParameters, inputs: FrameInputs) -> ActivityOutputs:
        frame = np.asarray(inputs.frame)
        grey = frame[::4, ::4].mean(axis=2).astype(np.uint8)
        previous = context.state.previous
        same_size = previous is not None and np.asarray(previous).shape[:2] == grey.shape
        motion = float(np.abs(grey.astype(np.int16) - np.asarray(previous)[:, :, 0]).mean()) if same_size else 0.0
        context.state.previous = Image(grey)
        context.state.frames = Integer(context.state.frames + 1)
        return ActivityOutputs(
            brightness=float(frame.mean()),
            motion=motion,
            active=int(motion > parameters.threshold),
            frames=context.state.frames,
        )


def build_pipeline() -> Pipeline:
    """One stateful cell: frame → brightness, motion, active, frames."""
    pf = PipelineFactory(name="Demo")
    activity = pf.add_cell(ref="activity", cell=Activity())
    pf.declare_input(ref="frame", input=activity.inputs.frame)
    for port in activity.outputs:
        pf.declare_output(ref=port.name, output=port)
    return pf.build()


def make_clip(path: str) -> bool:
    """A two-second 320x240 test pattern at 25 fps, encoded by ffmpeg; False when ffmpeg or PyAV is missing."""
    if shutil.which("ffmpeg") is None or importlib.util.find_spec("av") is None:
        return False
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "2",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-y", path],
        check=True, timeout=60,
    )
    return True


def sources_for(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Two cameras: the given URLs, the generated clip twice, or DummySource frames."""
    if args.source:
        from rvai_sdk.cli import load_source

        return {f"cam-{i + 1}": load_source(url) for i, url in enumerate(args.source)}
    clip = os.path.join(workdir, "clip.mp4")
    if make_clip(clip):
        from rvai_sdk.extensions.sources.video_source import VideoSource

        print(f"streaming a generated clip as two cameras ({clip})")
        return {"cam-1": VideoSource(clip), "cam-2": VideoSource(clip)}
    from rvai_sdk.extensions.sources.dummy_source import DummySource

    print("ffmpeg or PyAV is missing: streaming fake frames (DummySource) as two cameras")
    return {f"cam-{i}": DummySource(params={"rate": 50, "count": 50, "seed": i}) for i in (1, 2)}


def summary(database: str, table: str) -> list[str]:
    """A few lines read back from the SQLite database."""
    path = database[len("sqlite:///") :]
    with sqlite3.connect(path) as db:
        rows = db.execute(
            f"SELECT source, COUNT(*), SUM(active), AVG(brightness), MAX(motion), MAX(frames) FROM {table} "
            "WHERE status = 'complete' GROUP BY source ORDER BY source"
        ).fetchall()
    lines = [f"{'camera':8} {'rows':>5} {'active':>7} {'brightness':>11} {'max motion':>11}"]
    lines += [f"{s:8} {n:5d} {a:7d} {b:11.1f} {m:11.2f}" for s, n, a, b, m, _ in rows]
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the demo; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="local", help="debug, local (default) or ray")
    parser.add_argument("--serve", action="store_true", help="keep the HTTP endpoint up until Ctrl-C")
    parser.add_argument(
        "--serve-seconds", type=float, default=None, metavar="N", help="keep the HTTP endpoint up N seconds more (or until Ctrl-C)"
    )
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: any free port)")
    parser.add_argument("--source", action="append", default=[], help="a camera URL or video file instead of the clip; repeat")
    parser.add_argument("--database", default=None, help="a sqlite:/// URL (default: in a temporary folder)")
    parser.add_argument("--seconds", type=float, default=20.0, help="most seconds to stream (live cameras never end)")
    args = parser.parse_args(argv)

    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver
    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink

    workdir = tempfile.mkdtemp(prefix="rvai-demo-")
    database = args.database or f"sqlite:///{os.path.join(workdir, 'demo.db')}"
    sources = sources_for(args, workdir)
    pipeline = build_pipeline()
    print(f"pipeline {pipeline.name!r} on the {args.runtime} runtime")

    with init(args.runtime) as rt, rt.start_inference(Inference(pipeline=pipeline)) as proc:
        http = proc.add_driver("http", FastAPIDriver, {"listen_port": args.port})
        client = FastAPIClient(process=http)
        client.wait(timeout=60)
        keeps = "until Ctrl-C" if args.serve else "until the demo says it closes it"
        print(f"HTTP endpoint: {client.base_url}  (POST /predict, docs at /docs, metrics at /metrics; up {keeps})", flush=True)

        stream = proc.add_driver("cameras", SourceSinkDriver, sources=sources, sinks={"db": DatabaseSink(database, table="frames")})
        print(f"streaming into {database}")
        started = time.monotonic()
        last = [started]
        previous: dict[str, int] = {}

        def show(stats: dict[str, Any]) -> None:
            now = time.monotonic()
            print(f"[{now - started:5.1f} s] {progress_line(stats, previous, now - last[0])}", flush=True)
            last[0] = now

        try:  # files end by themselves; live cameras run for --seconds
            SourceSinkDriver.wait(stream, timeout=args.seconds, interval=0.5, progress=show)
        except DriverError as exc:
            if stream.status.name != "RUNNING":
                raise
            print(f"stopping the cameras: {exc}", flush=True)
        proc.remove_driver(stream.pid)  # finishes requests in flight, writes buffered rows

        frame = Image(np.full((240, 320, 3), 128, dtype=np.uint8))
        same = client.predict({"frame": frame}, sid="cam-1")
        fresh = client.predict({"frame": frame}, sid="http-client")
        print(f"sample request on sid 'cam-1' (continues that camera's state): frames={same['frames']}, motion={same['motion']:.1f}")
        print(f"sample request on a new sid 'http-client': frames={fresh['frames']}, motion={fresh['motion']:.1f}")

        if database.startswith("sqlite:///"):
            print("summary from the database:")
            for line in summary(database, "frames"):
                print("  " + line)
        requests = proc.stats()["requests"]
        print(f"{requests['succeeded']} requests served, {requests['failed']} failed")

        if args.serve or args.serve_seconds is not None:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            until = "Ctrl-C" if args.serve_seconds is None else f"Ctrl-C, or for {args.serve_seconds:g} s"
            print(f"serving at {client.base_url} until {until}", flush=True)
            deadline = None if args.serve_seconds is None else time.monotonic() + args.serve_seconds
            while not stop.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if http.status.name != "RUNNING":
                    print(f"the HTTP endpoint stopped: {http.failure or http.status.name}", flush=True)
                    break
        else:
            print("(run with --serve to keep the HTTP endpoint up)", flush=True)
        print(f"closing the HTTP endpoint at {client.base_url}", flush=True)
        client.close()
        proc.remove_driver(http.pid)
    print("done")


if __name__ == "__main__":
    main()
    sys.exit(0)
