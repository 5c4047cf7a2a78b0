"""GPU throughput of the example classifier served to many streams, against the raw model, in one common window.

Needs an NVIDIA GPU with CUDA and torch. On the same GPU, in one run:

- raw references, in a child process (this process never creates a CUDA
  context, so the inference process can own the GPU even in exclusive-process
  compute mode): ResNet-50 (fp16, random weights, the example's own
  ``build_model``) on batches of ``--batch`` 224x224 frames, every batch's labels
  and scores fetched to the host as the SDK does: (a) the batch already on the
  device, (b) the batch copied from page-locked host memory each time; batch 1
  for contrast.
- the SDK: ``examples/gpu_classifier.py``'s pipeline on the ``local`` runtime,
  fed by driver processes of closed-loop streams (each sends its next frame
  when the last is answered), at every ``--streams`` count (64, 128 and 64x4), every
  cell ``--concurrency`` (1 and 2), with the classifier's model replayed as a
  CUDA graph and run eagerly (``--graphs on,off``). ``NxK`` in ``--streams``
  gives each of N streams K frames in flight (``64x4``: 64 cameras pipelined
  as ``SourceSinkDriver`` sends a camera's frames by default, its
  ``max_in_flight`` of 4); a plain N is one frame in flight per stream.

How a window is measured: the drivers start their streams, warm up (every
stream answered ``--warmup`` times) and report; the parent then opens one
window, common to all drivers, of ``--seconds``. Streams keep running until it
has closed; only replies that arrive inside it count, and the batch statistics
are the differences of the cells' counters between its start and its end. A
self-check verifies that (every driver warm before the window, every stream
still running when it closes, counted replies inside it) and fails the run
otherwise.

Prints the GPU's name with every figure. Without CUDA it refuses to run, unless
``--cpu-smoke`` (tiny frames and model size on the CPU, a short window: runs the
self-check; its figures mean nothing).

    python benchmarks/bench_gpu.py [--streams 64,128] [--concurrency 1,2] [--seconds 10] [--write docs/performance.md]
    python benchmarks/bench_gpu.py --cpu-smoke
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
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.drivers import DriverParameters, PipelineDriver  # noqa: E402
from rvai_sdk.runtime import init  # noqa: E402
from rvai_sdk.types import Float, Image, Integer  # noqa: E402

GOAL = 0.80


# -- the drivers -----------------------------------------------------------------------------------


@dataclasses.dataclass
class StreamsParameters(DriverParameters):
    streams: Integer = DriverParameters.field(default=Integer(16), description="closed-loop streams in this driver")
    first: Integer = DriverParameters.field(default=Integer(0), description="number of the first stream (sid)")
    side: Integer = DriverParameters.field(default=Integer(224), description="frame side in pixels")
    warmup: Integer = DriverParameters.field(default=Integer(3), description="replies per stream before it counts as warm")
    in_flight: Integer = DriverParameters.field(default=Integer(1), description="frames of each stream in flight at once")
    window_start: Float = DriverParameters.field(default=Float(0.0), description="the common window (time.monotonic)")
    window_end: Float = DriverParameters.field(default=Float(0.0), description="0: not opened yet")


class StreamsDriver(PipelineDriver):
    """Closed-loop camera streams that run until the parent's window has closed; records every reply's time."""

    parameters_class = StreamsParameters

    def __init__(self, parameters: Any = None) -> None:
        super().__init__(parameters)
        self._end = float("inf")
        self._report: dict[str, Any] = {"warm": False, "done": False}

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        assert isinstance(new, StreamsParameters)
        if float(new.window_end) > 0:
            self._end = float(new.window_end)

    def run(self, inference: Any, resources: Any) -> None:
        p = self.get_parameters()
        assert isinstance(p, StreamsParameters)
        rng = np.random.default_rng(int(p.first))
        side, streams, warmup, depth = int(p.side), int(p.streams), int(p.warmup), int(p.in_flight)
        frames = [Image(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(streams)]
        lock = threading.Lock()
        replies: list[tuple[float, float]] = []  # (answered at, latency)
        answered = [0] * streams
        stopped_at = [float("inf")] * streams  # when the stream's first lane stopped (a lane: one frame in flight)
        errors: list[str] = []
        active = [streams * depth]
        all_done = threading.Event()

        def send(i: int) -> None:
            sent = time.monotonic()
            future = inference.predict({"frame": frames[i]}, sid=f"camera-{int(p.first) + i}")
            future.add_done_callback(lambda f: done(i, sent, f))

        def done(i: int, sent: float, future: Future[Any]) -> None:
            now = time.monotonic()
            with lock:
                if future.exception() is not None:
                    errors.append(repr(future.exception()))
                else:
                    replies.append((now, now - sent))
                    answered[i] += 1
                if not self._report["warm"] and min(answered) >= warmup:
                    self._report = {"warm": True, "done": False, "warm_at": now}
                finished = bool(errors) or self.stopped.is_set() or now >= self._end
                if finished:
                    stopped_at[i] = min(stopped_at[i], now)
                    active[0] -= 1
                    if not active[0]:
                        all_done.set()
            if not finished:
                send(i)

        for _ in range(depth):
            for i in range(streams):
                send(i)
        while not (all_done.wait(0.1) or self.stopped.is_set()):
            pass
        q = self.get_parameters()
        assert isinstance(q, StreamsParameters)
        start, end = float(q.window_start), float(q.window_end)
        inside = sorted(latency for at, latency in replies if start <= at <= end)
        self._report = {
            **self._report,
            "done": True,
            "errors": errors[:3],
            "window": [start, end],
            "frames": len(inside),
            "latencies": inside,
            "replies_before": sum(1 for at, _ in replies if at < start),
            "replies_after": sum(1 for at, _ in replies if at > end),
            "running_at_close": sum(1 for t in stopped_at if end <= t < float("inf")),
            "streams": streams,
        }
        self.wait_stopped()

    def stats(self) -> dict[str, Any]:
        return self._report


# -- the window's arithmetic (tested alone) ------------------------------------------------------


def batch_delta(before: Mapping[Any, int], after: Mapping[Any, int]) -> dict[int, int]:
    """Calls per batch size made between two snapshots of a cell's exact ``batch_sizes`` counter."""
    delta = {int(size): int(after.get(size, 0)) - int(before.get(size, 0)) for size in after}
    return {size: calls for size, calls in sorted(delta.items()) if calls}


def mean_batch(delta: Mapping[int, int]) -> float:
    """Mean batch size of a :func:`batch_delta` (0 when no call was made)."""
    calls = sum(delta.values())
    return sum(size * n for size, n in delta.items()) / calls if calls else 0.0


def check_window(reports: Sequence[Mapping[str, Any]], start: float, end: float) -> list[str]:
    """What went wrong with a common window, from the drivers' reports (empty: nothing)."""
    problems = []
    for d, r in enumerate(reports):
        if r.get("errors"):
            problems.append(f"driver {d}: requests failed: {r['errors']}")
        if r.get("window") != [start, end]:
            problems.append(f"driver {d} counted over {r.get('window')}, not the common window {[start, end]}")
        if not r.get("warm_at", float("inf")) <= start:
            problems.append(f"driver {d} was not warm when the window opened")
        if r.get("running_at_close") != r.get("streams"):
            problems.append(f"driver {d}: {r.get('running_at_close')} of {r.get('streams')} streams ran until the window closed")
        if not r.get("replies_before") or not r.get("replies_after"):
            problems.append(f"driver {d}: no replies on one side of the window: it did not cover the run")
        if not r.get("frames"):
            problems.append(f"driver {d}: no reply inside the window")
    return problems


# -- figures ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Figure:
    name: str
    images_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""
    mean_batch: float = 0.0  # the classifier's, over the window
    cpu_per_frame: dict[str, float] = dataclasses.field(default_factory=dict)  # process group -> CPU seconds per frame


def raw_reference(device: str, side: int, batch: int, seconds: float) -> dict[str, Any]:
    """In a child process: the raw model's rates, every batch's results fetched to the host."""
    import torch

    import gpu_classifier

    cuda = device.startswith("cuda")
    model = gpu_classifier.build_model(device)
    rng = np.random.default_rng(0)
    host = [torch.from_numpy(rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)) for _ in range(4)]
    if cuda:
        host = [h.pin_memory() for h in host]
    on_device = [h.to(device) for h in host]
    one = on_device[0][:1].clone()

    def step(frames: torch.Tensor) -> None:
        scores, labels = torch.softmax(model(frames).float(), dim=1).max(dim=1)
        labels.tolist(), scores.tolist()  # to the host, as the SDK's classify cell does: one sync per batch

    def rate(make_input: Any, items: int) -> float:
        with torch.inference_mode():
            for i in range(5):
                step(make_input(i))
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                step(make_input(n))
                n += 1
            return n * items / (time.perf_counter() - start)

    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    return {
        "gpu": f"{name} (torch {torch.__version__}, CUDA {torch.version.cuda})" if cuda else name,
        "device_resident": rate(lambda i: on_device[i % 4], batch),
        "from_host": rate(lambda i: host[i % 4].to(device, non_blocking=True), batch),
        "batch_1": rate(lambda i: one, 1),
    }


def run_raw_child(device: str, side: int, batch: int, seconds: float) -> dict[str, Any]:
    code = [sys.executable, __file__, "--raw-child", device, "--side", str(side), "--batch", str(batch), "--seconds", str(seconds)]
    result = subprocess.run(code, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"the raw reference failed:\n{result.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def cuda_in_child() -> tuple[bool, str]:
    """Whether torch can use a CUDA GPU, asked in a child process (none of CUDA in this one)."""
    code = "import torch, sys; print(torch.__version__); sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    except subprocess.SubprocessError as exc:
        return False, str(exc)
    if result.returncode not in (0, 3):
        return False, (result.stderr.strip().splitlines() or ["torch cannot be imported"])[-1]
    return result.returncode == 0, f"torch {result.stdout.strip()}"


def parse_streams(text: str) -> list[tuple[int, int]]:
    """``--streams``: ``"64,128,64x4"`` → ``[(64, 1), (128, 1), (64, 4)]`` (streams, frames of each in flight)."""
    specs = []
    for part in text.split(","):
        n, x, k = part.strip().partition("x")
        try:
            spec = (int(n), int(k) if x else 1)
        except ValueError:
            raise SystemExit(f"--streams: {part!r} is not N or NxK (N streams, K frames of each in flight), e.g. 64,128,64x4") from None
        if min(spec) < 1:
            raise SystemExit(f"--streams: {part!r} needs at least one stream and one frame in flight")
        specs.append(spec)
    return specs


def streams_label(streams: int, in_flight: int) -> str:
    """``64 streams`` or ``64 streams x 4 in flight``."""
    return f"{streams} streams" + (f" x {in_flight} in flight" if in_flight > 1 else "")


def sdk_window(
    proc: Any, *, streams: int, drivers: int, side: int, seconds: float, warmup: int, label: str, in_flight: int = 1
) -> tuple[Figure, list[str]]:
    """Feed ``proc`` from driver processes (``in_flight`` frames of each stream at once); measure one common
    window; the figure and any self-check problem."""
    per_driver = [streams // drivers + (1 if d < streams % drivers else 0) for d in range(drivers)]
    handles, first = [], 0
    for d, n in enumerate(per_driver):
        params = {"streams": n, "first": first, "side": side, "warmup": warmup, "in_flight": in_flight}
        handles.append(proc.add_driver(f"streams-{streams}x{in_flight}-{d}", StreamsDriver, parameters=params))
        first += n
    try:
        deadline = time.monotonic() + 600
        while not all(h.stats().get("warm") for h in handles):  # every driver warm: open the window
            if time.monotonic() > deadline:
                raise TimeoutError("the drivers did not warm up within 600 s")
            time.sleep(0.05)
        start = time.monotonic() + 0.2
        end = start + seconds
        for h in handles:
            h.set_parameters({"window_start": start, "window_end": end})
        time.sleep(max(0.0, start - time.monotonic()))
        before = proc.stats()["cells"]
        lag = time.monotonic() - start  # the counters are read this late after the window's edge
        cpu = {"inference": -cpu_seconds(int(proc.pid)), "drivers": -sum(cpu_seconds(int(h.pid)) for h in handles)}
        time.sleep(max(0.0, end - time.monotonic()))
        after = proc.stats()["cells"]
        lag += time.monotonic() - end
        cpu["inference"] += cpu_seconds(int(proc.pid))
        cpu["drivers"] += sum(cpu_seconds(int(h.pid)) for h in handles)
        while not all(h.stats().get("done") for h in handles):
            if time.monotonic() > end + 600:
                raise TimeoutError("the drivers did not finish within 600 s of the window's end")
            time.sleep(0.05)
        reports = [h.stats() for h in handles]
    finally:
        for h in handles:
            proc.remove_driver(h.pid)
    problems = check_window(reports, start, end)
    latencies = sorted(x for r in reports for x in r.get("latencies", []))
    frames = sum(r.get("frames", 0) for r in reports)
    deltas = {ref: batch_delta(before[ref]["batch_sizes"], after[ref]["batch_sizes"]) for ref in ("preprocess", "classify")}
    items = sum(size * n for size, n in deltas["classify"].items())
    busy = (after["classify"]["busy_seconds"] - before["classify"]["busy_seconds"]) / seconds
    # Batches and replies counted over the same window: they differ by the frames in flight at its edges
    # (at most in_flight per stream) and by those classified while the counters were being read.
    if frames and abs(items - frames) > streams * in_flight + frames / seconds * lag:
        problems.append(f"{label}: classify took {items} items in the window but {frames} replies arrived in it")
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else float("nan")  # noqa: E731
    figure = Figure(
        label,
        frames / seconds,
        p(0.5),
        p(0.99),
        f"classify: mean batch {mean_batch(deltas['classify']):.1f}, in calls {busy:.0%} of the window (summed over "
        "concurrent calls); "
        f"preprocess: mean batch {mean_batch(deltas['preprocess']):.1f}",
        mean_batch(deltas["classify"]),
        {name: seconds / max(items, 1) for name, seconds in cpu.items()},
    )
    return figure, problems


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (Linux ``/proc``: no psutil on a bare GPU host)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def render_section(figures: Sequence[Figure], *, gpu_name: str, args: argparse.Namespace, example: str = "") -> str:
    """The markdown of the bench:gpu section: the figures with both ratios, the goal, the example's summary."""
    a, b = figures[0].images_per_s, figures[1].images_per_s
    best = max(figures[3:], key=lambda f: f.images_per_s)
    verdict = "MET" if best.images_per_s / a >= GOAL else "NOT MET"
    rows = "\n".join(
        f"| {f.name} | {f.images_per_s:,.0f} | {f.images_per_s / a:.0%} | {f.images_per_s / b:.0%} | "
        + (f"{f.p50_ms:.1f} / {f.p99_ms:.1f} ms" if f.p99_ms is not None else "")
        + f" | {f.note} |"
        for f in figures
    )
    text = (
        f"### GPU: ResNet-50 classifier, {args.side}x{args.side} frames, max batch {args.batch}\n\n"
        f"`python benchmarks/bench_gpu.py --seconds {args.seconds:g}` on **{gpu_name}**, host {machine()}; "
        f"one common window of {args.seconds:g} s per SDK row:\n\n"
        "| measurement | images/s | of (a) | of (b) | p50 / p99 latency | notes |\n"
        "| --- | ---: | ---: | ---: | ---: | --- |\n"
        f"{rows}\n\nGoal (the SDK's best row >= {GOAL:.0%} of (a)): {verdict} ({best.images_per_s / a:.1%})."
    )
    summary = [line for line in example.strip().splitlines() if " frames in " in line or ": " in line and " calls, " in line]
    if summary:
        quoted = "\n".join(summary)
        text += f"\n\nThe example at full size on the same GPU, as `make gpu-check` runs it:\n\n```\n{quoted}\n```"
    return text


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--streams", default="64,128,64x4", help="stream counts, comma-separated; NxK: N streams with K frames of each in flight"
    )
    parser.add_argument("--concurrency", default="1,2", help="cell concurrencies, comma-separated")
    parser.add_argument(
        "--graphs", default="on,off", help="the classifier's model as a CUDA graph (on), eagerly (off), or both: on,off"
    )
    parser.add_argument("--drivers", type=int, default=4, help="driver processes the streams are spread over")
    parser.add_argument("--batch", type=int, default=64, help="max batch size (and the raw model's batch)")
    parser.add_argument("--side", type=int, default=224, help="frame side in pixels")
    parser.add_argument("--max-batch-wait", type=float, default=0.005, help="seconds a batch may wait to fill (both cells)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each common window")
    parser.add_argument("--warmup", type=int, default=5, help="replies per stream before the window may open")
    parser.add_argument("--runtime", default="local", choices=["local", "debug", "ray"], help="runtime of the SDK figures")
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU, tiny frames, short windows: the self-check only")
    parser.add_argument("--write", type=Path, help="replace this markdown file's <!-- bench:gpu --> section")
    parser.add_argument("--example-output", type=Path, help="a full-size run of the example to quote in the written section")
    parser.add_argument("--raw-child", metavar="DEVICE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.raw_child:
        print(json.dumps(raw_reference(args.raw_child, args.side, args.batch, args.seconds)))
        return []

    if args.cpu_smoke:
        device, gpu = "cpu", False
        args.drivers, args.batch, args.side, args.seconds, args.warmup = 2, 4, 32, 2.0, 2
        streams_list, raw_seconds = [(4, 1), (4, 2)], 1.0  # the self-check, not figures
    else:
        ok, why = cuda_in_child()
        if not ok:
            print(
                "bench_gpu.py measures GPU throughput and needs an NVIDIA GPU with a CUDA build of torch, but torch "
                f"cannot use one here ({why}). Run it on a GPU machine (e.g. an H100 or H200), or pass --cpu-smoke "
                "to check the script and its window logic on this CPU with tiny frames (no figures).",
                file=sys.stderr,
            )
            raise SystemExit(2)
        device, gpu = "cuda:0", True
        streams_list, raw_seconds = parse_streams(args.streams), args.seconds / 2
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    import gpu_classifier

    raw = run_raw_child(device, args.side, args.batch, raw_seconds)
    gpu_name = raw["gpu"] if gpu else "none (--cpu-smoke: CPU, tiny frames; these figures mean nothing)"
    print(f"GPU benchmark on {gpu_name}; host {machine()}", flush=True)
    figures = [
        Figure(f"raw model, batch {args.batch} already on the device", raw["device_resident"], note="reference (a)"),
        Figure(f"raw model, batch {args.batch} copied from page-locked host memory", raw["from_host"], note="reference (b)"),
        Figure("raw model, batch 1 on the device", raw["batch_1"]),
    ]
    problems: list[str] = []
    graphs_list = [mode == "on" for mode in args.graphs.split(",")] if not args.cpu_smoke else [True]
    for graphs, concurrency in ((g, c) for g in graphs_list for c in concurrencies):
        inference = gpu_classifier.classifier_inference(
            args.side, gpu=gpu, max_batch_size=args.batch, max_batch_wait=args.max_batch_wait,
            concurrency=concurrency, frame_shape=(args.side, args.side), cuda_graphs=graphs,
        )
        model = "CUDA graph" if graphs and gpu else "eager"
        with init(args.runtime) as rt, rt.start_inference(inference) as proc:
            for streams, in_flight in streams_list:
                label = (
                    f"SDK on {args.runtime}, {streams_label(streams, in_flight)} from {args.drivers} driver processes, "
                    f"concurrency {concurrency}, model {model}"
                )
                figure, found = sdk_window(
                    proc, streams=streams, drivers=args.drivers, side=args.side, seconds=args.seconds,
                    warmup=args.warmup, label=label, in_flight=in_flight,
                )
                figures.append(figure)
                problems += found
                print(f"  {figure.name}: {figure.images_per_s:,.1f} images/s ({figure.note})", flush=True)
    parent_cuda = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
    if parent_cuda:
        problems.append("the benchmark's parent process initialised CUDA")

    a, b = raw["device_resident"], raw["from_host"]
    width = max(len(f.name) for f in figures)
    print(f"Results on {gpu_name} (window {args.seconds:g} s, max batch {args.batch}, {args.side}x{args.side} frames):")
    for f in figures:
        latency = f"  p50 {f.p50_ms:.1f} ms  p99 {f.p99_ms:.1f} ms" if f.p99_ms is not None else ""
        print(f"  {f.name:<{width}}  {f.images_per_s:10,.1f} images/s  {f.images_per_s / a:6.1%} of (a)  {f.images_per_s / b:6.1%} of (b){latency}  {f.note}")
    best = max(figures[3:], key=lambda f: f.images_per_s)
    verdict = "MET" if best.images_per_s / a >= GOAL else "NOT MET"
    print(f"  goal: SDK >= {GOAL:.0%} of the raw model on the device: best {best.images_per_s / a:.1%} ({verdict}) on {gpu_name}")
    print("  self-check: " + ("OK (one common window; every stream ran through it; counters agree)" if not problems else "FAILED"))
    for problem in problems:
        print(f"    - {problem}")
    example = args.example_output.read_text() if args.example_output and args.example_output.exists() else ""
    if args.write and not args.cpu_smoke and not problems:
        write_section(args.write, "gpu", render_section(figures, gpu_name=gpu_name, args=args, example=example))
    if problems:
        raise SystemExit(1)
    return figures


if __name__ == "__main__":
    main()
