"""The GPU example's pipeline in front of a simulated GPU: the SDK's share of the gap to the raw model, on any CPU.

``bench_gpu.py`` measured the example's ResNet-50 pipeline on an H200 at a quarter
to a third of the raw model's rate, with full batches. This script runs the same
pipeline shape (a batched preprocessing cell, then a batched stateful classifier
with three outputs; batches of 64; 224x224 frames from 4 driver processes of
closed-loop streams; the ``local`` runtime) on any machine, with a simulated GPU
in place of the real one:

- preprocessing queues, on the GPU's copy engine, the time its frames take to
  cross at ``--h2d-gbps`` (20 GB/s: 0.48 ms for 64 frames) and hands on one
  constant tensor (each frame's shared-memory slot is let go, as after the real
  cell's copy);
- the classifier queues, on the compute engine, ``batch / --raw-rate`` seconds (the
  H200's measured 13,748 images/s: 4.66 ms for 64), optionally spending the first
  ``--launch-ms`` of it holding the GIL (eager PyTorch launching kernels one by
  one), then counts the stream's frames in its state and answers label 0, score 0;
- the host waits without the GIL, as on a CUDA synchronisation; an engine runs
  queued work back to back, so it starts the next batch the moment the last is
  done, whether or not the thread that waited for that one has woken up yet.

It prints frames/s against the simulated raw rate (the goal is 80%), the CPU per
frame of the inference process and of the drivers, and p50/p99 beside Little's
law (frames in flight / rate): with N closed-loop streams, frames/s = N / round
trip, so at 64 streams and batches of 64 (one wave) the round trip, model
included, caps the rate, and at 128 (two waves) the host only has to keep up.
``64x4`` is 64 streams with 4 frames of each in flight, as ``SourceSinkDriver``
pipelines a camera by default (``max_in_flight`` 4): 64 cameras, 256 frames in
flight, each stream's frames still answered in order.

``--before DIR`` runs another checkout (``PYTHONPATH``) and this tree in
alternating child processes, round by round, and prints after/before ratios.

    python benchmarks/bench_gpu_host.py [--streams 64,128,64x4] [--concurrency 1,2] [--launch-ms 3] [--before DIR]
    python benchmarks/bench_gpu_host.py --quick      # the self-check: tiny frames, short windows
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import gpu_classifier as gc  # noqa: E402
import torch  # noqa: E402
from _report import machine  # noqa: E402

from rvai_sdk.cell import Cell, cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Parameters  # noqa: E402
from rvai_sdk.pipeline import PipelineFactory  # noqa: E402
from rvai_sdk.runtime import BatchingPolicy, Inference  # noqa: E402
from rvai_sdk.types import Class, Float, Integer  # noqa: E402

H200_RAW_RATE = 13_748.0  # images/s, ResNet-50 fp16 batch 64 on the device (docs/performance.md, bench_gpu.py)
H2D_GBPS = 20.0  # GB/s from page-locked host memory: PCIe Gen5 x16 in practice (H100/H200 hosts reach 20-50)
GOAL = 0.80


# -- the pipeline: the example's shape, a simulated GPU ----------------------------------------------


class Engine:
    """One engine of a GPU (compute, or the copy engine) as a timeline: work runs in the order it was queued.

    A call books the engine from when it is free (or now) for ``seconds`` and waits, without the GIL
    (``time.sleep``), until its work is done, as the host does on a CUDA synchronisation. The engine is
    free again at that moment whether or not the waiting thread has woken up yet: a real GPU starts the
    next queued batch at once (a lock released by the woken thread would add the host's wake-up and GIL
    wait to the GPU's time).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0

    def run(self, seconds: float, launch: float = 0.0) -> None:
        """Queue ``seconds`` of GPU time and wait for it; the first ``launch`` seconds the host spends launching
        kernels, holding the GIL (as eager PyTorch does, layer by layer), while the GPU already runs them."""
        now = time.perf_counter()
        with self._lock:
            start = max(now, self._free_at)
            self._free_at = end = max(start + seconds, now + launch)
        while time.perf_counter() - now < launch:
            pass
        time.sleep(max(0.0, end - time.perf_counter()))


class SimulatedGpu:
    """One GPU's two engines: a batch's work holds its engine for the time the GPU would take."""

    compute = Engine()
    copy = Engine()


@dataclass
class GpuParameters(Parameters):
    raw_rate: Float = Parameters.field(default=Float(H200_RAW_RATE), description="the model's images/s at full batches")
    h2d_gbps: Float = Parameters.field(default=Float(H2D_GBPS), description="host-to-device copy rate, GB/s")
    launch_ms: Float = Parameters.field(default=Float(0.0), description="host time launching the model's kernels per batch")


CONSTANT = torch.zeros((1, 1, 3), dtype=torch.uint8)


@cell(concurrency=2)
class CopyIn(Cell):
    """The preprocessing cell's GPU time: the frames' copy to the device (the copy engine); hands on a constant."""

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: GpuParameters, inputs_list: Sequence[gc.FrameIn]
    ) -> list[gc.FrameOut]:
        nbytes = sum(inputs.frame.nbytes for inputs in inputs_list)
        SimulatedGpu.copy.run(nbytes / (float(parameters.h2d_gbps) * 1e9))
        return [gc.FrameOut(frame=gc.DeviceFrame(CONSTANT)) for _ in inputs_list]


@cell(state=gc.StreamState, concurrency=2)
class Classify(Cell):
    """The classifier's GPU time (the compute engine, at the raw rate), then its host work: state and outputs."""

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: GpuParameters, inputs_list: Sequence[gc.DeviceFrameIn]
    ) -> list[gc.ClassifyOut]:
        SimulatedGpu.compute.run(len(inputs_list) / float(parameters.raw_rate), float(parameters.launch_ms) / 1e3)
        outs = []
        for context in contexts:
            context.state.frames = Integer(context.state.frames + 1)
            outs.append(gc.ClassifyOut(label=Class(0, "class-0"), score=Float(0.0), frames=context.state.frames))
        return outs


@cell
class CopyInSerial(CopyIn):
    """:class:`CopyIn`, one call at a time."""


@cell(state=gc.StreamState)
class ClassifySerial(Classify):
    """:class:`Classify`, one call at a time."""


def host_inference(
    batch: int, max_batch_wait: float, concurrency: int, raw_rate: float, h2d_gbps: float, launch_ms: float = 0.0
) -> Inference:
    """The example's pipeline (frame -> preprocess -> classify -> label, score, frames) on the simulated GPU."""
    pf = PipelineFactory(name="gpu-classifier-simulated")
    pre = pf.add_cell(ref="preprocess", cell=CopyIn() if concurrency == 2 else CopyInSerial())
    net = pf.add_cell(ref="classify", cell=Classify() if concurrency == 2 else ClassifySerial())
    pf.declare_input(ref="frame", input=pre.inputs.frame)
    pf.connect(pre.outputs.frame, net.inputs.frame)
    for name in ("label", "score", "frames"):
        pf.declare_output(ref=name, output=getattr(net.outputs, name))
    policy = BatchingPolicy(max_batch_size=batch, max_batch_wait=max_batch_wait)
    gpu = {"raw_rate": raw_rate, "h2d_gbps": h2d_gbps, "launch_ms": launch_ms}
    return Inference(
        pipeline=pf.build(),
        parameters={"preprocess": gpu, "classify": gpu},
        batching={"preprocess": policy, "classify": policy},
    )


@dataclasses.dataclass
class Row:
    streams: int
    in_flight: int  # frames of each stream in flight at once
    concurrency: int
    frames_per_s: float
    cpu_us_per_frame: float  # the inference process, over the window's frames
    driver_cpu_us_per_frame: float  # the driver processes together
    p50_ms: float
    p99_ms: float
    mean_batch: float
    problems: list[str]


def measure(args: argparse.Namespace) -> list[Row]:
    """One round in this process: every (concurrency, streams) in a common window of its own (``bench_gpu.sdk_window``)."""
    import bench_gpu
    from rvai_sdk.runtime import init

    rows = []
    for concurrency in _ints(args.concurrency):
        inference = host_inference(args.batch, args.max_batch_wait, concurrency, args.raw_rate, args.h2d_gbps, args.launch_ms)
        with init("local") as rt, rt.start_inference(inference) as proc:
            for streams, in_flight in bench_gpu.parse_streams(args.streams):
                figure, problems = bench_gpu.sdk_window(
                    proc, streams=streams, drivers=args.drivers, side=args.side, seconds=args.seconds, warmup=args.warmup,
                    label=f"{bench_gpu.streams_label(streams, in_flight)}, concurrency {concurrency}", in_flight=in_flight,
                )
                cpu = {name: 1e6 * seconds for name, seconds in figure.cpu_per_frame.items()}
                p50, p99 = figure.p50_ms or 0.0, figure.p99_ms or 0.0
                rows.append(
                    Row(streams, in_flight, concurrency, figure.images_per_s, cpu["inference"], cpu["drivers"], p50, p99, figure.mean_batch, problems)
                )
    return rows


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


# -- the report --------------------------------------------------------------------------------------


def run_child(tree: Path | None, argv: Sequence[str]) -> list[dict[str, Any]]:
    """One round in a child process (``tree``: another checkout, first on its ``PYTHONPATH``)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"a round failed ({tree or 'this tree'}):\n{done.stderr[-3000:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def _streams(row: dict[str, Any]) -> str:
    return f"{row['streams']}" + (f" x {row['in_flight']}" if row["in_flight"] > 1 else "")


def report(results: dict[str, list[list[dict[str, Any]]]], args: argparse.Namespace) -> str:
    """The markdown table of the rounds' medians, after/before ratios and the goal's verdict."""
    lines = [
        f"| side | concurrency | streams | frames/s | of the raw {args.raw_rate:,.0f} | CPU µs/frame: inference, drivers "
        "| p50 / p99 ms | Little: in flight / rate | mean batch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    best: dict[str, float] = {}
    cpu: dict[tuple[str, int], float] = {}
    for name, runs in results.items():
        for i, row in enumerate(runs[0]):
            pick = lambda key: statistics.median(rows[i][key] for rows in runs)  # noqa: E731
            rate = pick("frames_per_s")
            best[name] = max(best.get(name, 0.0), rate)
            cpu[name, i] = pick("cpu_us_per_frame")
            lines.append(
                f"| {name} | {row['concurrency']} | {_streams(row)} | {rate:,.0f} | {rate / args.raw_rate:.0%} | "
                f"{cpu[name, i]:.0f}, {pick('driver_cpu_us_per_frame'):.0f} | {pick('p50_ms'):.1f} / {pick('p99_ms'):.1f} | "
                f"{1e3 * row['streams'] * row['in_flight'] / rate:.1f} ms | "
                f"{pick('mean_batch'):.1f} |"
            )
    text = "\n".join(lines) + "\n"
    if "before" in results:
        text += "\nInference CPU per frame, after/before: " + ", ".join(
            f"{_streams(row)} streams at concurrency {row['concurrency']} {cpu['after', i] / cpu['before', i]:.2f}x"
            for i, row in enumerate(results["after"][0])
        ) + "\n"
    for name, rate in best.items():
        verdict = "met" if rate >= GOAL * args.raw_rate else "not met"
        text += f"\nGoal (best row >= {GOAL:.0%} of the simulated raw rate), {name}: {rate / args.raw_rate:.1%}, {verdict}."
    return text + "\n"


def main(argv: list[str] | None = None) -> dict[str, list[list[dict[str, Any]]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--streams", default="64,128,64x4",
        help="closed-loop stream counts, comma-separated; NxK: N streams with K frames of each in flight",
    )
    parser.add_argument("--concurrency", default="1,2", help="calls of each cell at once, comma-separated (1, 2)")
    parser.add_argument("--drivers", type=int, default=4, help="driver processes the streams are spread over")
    parser.add_argument("--side", type=int, default=224, help="frame side in pixels")
    parser.add_argument("--batch", type=int, default=64, help="max batch size of both cells")
    parser.add_argument("--max-batch-wait", type=float, default=0.005, help="seconds a batch may wait to fill (both cells)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each common window")
    parser.add_argument("--warmup", type=int, default=5, help="replies per stream before the window may open")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (alternating with --before)")
    parser.add_argument("--before", type=Path, help="another checkout to run side by side (PYTHONPATH)")
    parser.add_argument("--raw-rate", type=float, default=H200_RAW_RATE, help="the simulated model's images/s at full batches")
    parser.add_argument("--h2d-gbps", type=float, default=H2D_GBPS, help="the simulated host-to-device copy rate, GB/s")
    parser.add_argument(
        "--launch-ms", type=float, default=0.0,
        help="host ms per batch launching the model (GIL held, overlapping its GPU time): eager ResNet-50 takes milliseconds, "
        "a CUDA graph's replay tens of µs",
    )
    parser.add_argument("--quick", action="store_true", help="tiny frames, short windows, one round: the self-check")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.streams, args.concurrency, args.drivers, args.side, args.batch = "8,4x2", "2", 2, 32, 4
        args.seconds, args.warmup, args.rounds = 1.0, 2, 1
    if args.child:
        print(json.dumps([dataclasses.asdict(r) for r in measure(args)]))
        return {}

    child_argv = [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in (
            "streams", "concurrency", "drivers", "side", "batch", "max_batch_wait", "seconds", "warmup", "raw_rate", "h2d_gbps",
            "launch_ms",
        )
    ]
    sides: dict[str, Path | None] = {"before": args.before, "after": None} if args.before else {"this tree": None}
    results: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in sides}
    print(
        f"The GPU pipeline on a simulated GPU (ResNet-50 at {args.raw_rate:,.0f} images/s, copies at {args.h2d_gbps:g} GB/s, "
        f"{args.launch_ms:g} ms of launching per batch), "
        f"{args.side}x{args.side} frames, batches of {args.batch}, on {machine()}",
        flush=True,
    )
    for n in range(args.rounds):
        for name, tree in sides.items():
            started = time.monotonic()
            rows = run_child(tree, child_argv)
            results[name].append(rows)
            shown = "; ".join(
                f"c{r['concurrency']} {_streams(r)} streams {r['frames_per_s']:,.0f}/s {r['cpu_us_per_frame']:.0f} µs" for r in rows
            )
            print(f"  round {n + 1} {name} ({time.monotonic() - started:.0f} s): {shown}", flush=True)
    print(f"\nMedians of {args.rounds} round(s):\n\n{report(results, args)}")
    problems = [p for runs in results.values() for rows in runs for r in rows for p in r["problems"]]
    print("self-check: " + ("OK" if not problems else "FAILED"))
    for problem in problems:
        print(f"  - {problem}")
    if problems:
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
