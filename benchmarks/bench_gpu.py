"""GPU throughput of the example classifier served to 64 streams, against the raw model in one process.

Needs an NVIDIA GPU with CUDA and torch (``pip install torch``). On the same GPU, in one run:

- raw model: ResNet-50 (fp16, random weights, the example's own ``build_model``)
  looping on a pre-made batch of 64 frames already on the GPU; the same with the
  batch copied from host memory each time; and batch 1, for contrast.
- SDK, batched: ``examples/gpu_classifier.py``'s pipeline on the ``local`` runtime
  (spawned inference process owning the GPU), fed by driver processes (4 by
  default, 16 closed-loop streams each: every stream sends its next 224x224 frame
  when the previous one is answered) through the real transport.
  Goal (issue 6): >= 80% of the raw batched images/s; per-frame p50/p99 latency
  as the drivers measure it (send to answer).
- SDK, unbatched: the same with ``max_batch_size=1`` on both cells, for contrast.

Prints the GPU's name with every figure. Without CUDA it refuses to run, unless
``--cpu-smoke`` (tiny frames on the CPU, checks that the script works; its
figures mean nothing).

    python benchmarks/bench_gpu.py [--streams 64] [--drivers 4] [--seconds 20] [--write docs/performance.md]
    python benchmarks/bench_gpu.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.drivers import DriverParameters, PipelineDriver  # noqa: E402
from rvai_sdk.runtime import RUNTIMES, init  # noqa: E402
from rvai_sdk.types import Image, Integer  # noqa: E402

GOAL = 0.80


@dataclasses.dataclass
class StreamsParameters(DriverParameters):
    streams: Integer = DriverParameters.field(default=Integer(16), description="closed-loop streams in this driver")
    first: Integer = DriverParameters.field(default=Integer(0), description="number of the first stream (sid)")
    side: Integer = DriverParameters.field(default=Integer(224), description="frame side in pixels")
    warmup: Integer = DriverParameters.field(default=Integer(3), description="untimed frames per stream")
    seconds: Integer = DriverParameters.field(default=Integer(10), description="timed seconds")


class StreamsDriver(PipelineDriver):
    """Closed-loop camera streams: each sends its next frame when the last is answered; measures latency."""

    parameters_class = StreamsParameters

    def run(self, inference: Any, resources: Any) -> None:
        p = self.get_parameters()
        assert isinstance(p, StreamsParameters)
        rng = np.random.default_rng(int(p.first))
        side = int(p.side)
        frames = [Image(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(int(p.streams))]
        lock = threading.Lock()
        latencies: list[float] = []
        errors: list[str] = []
        state = {"start": 0.0, "end": 0.0, "stop_at": float("inf"), "active": int(p.streams), "warm": 0}
        all_done = threading.Event()
        warmup, seconds, streams = int(p.warmup), float(p.seconds), int(p.streams)

        def send(i: int, n: int) -> None:
            sent = time.monotonic()
            future = inference.predict({"frame": frames[i]}, sid=f"camera-{int(p.first) + i}")
            future.add_done_callback(lambda f: done(i, n, sent, f))

        def done(i: int, n: int, sent: float, future: Future[Any]) -> None:
            now = time.monotonic()
            if future.exception() is not None:
                errors.append(repr(future.exception()))
            with lock:
                if n == warmup:
                    state["warm"] += 1
                    if state["warm"] == streams:  # every stream is warm: start timing
                        state["start"] = now
                        state["stop_at"] = now + seconds
                elif n > warmup and state["start"]:
                    latencies.append(now - sent)
                    state["end"] = now
                finished = errors or self.stopped.is_set() or now >= state["stop_at"]
                if finished:
                    state["active"] -= 1
                    if not state["active"]:
                        all_done.set()
            if not finished:
                send(i, n + 1)

        for i in range(streams):
            send(i, 0)
        while not (all_done.wait(0.2) or self.stopped.is_set()):
            pass
        self._result = {
            "done": True,
            "errors": errors[:3],
            "frames": len(latencies),
            "start": state["start"],
            "end": state["end"],
            "latencies": latencies,
        }
        self.wait_stopped()

    def stats(self) -> dict[str, Any]:
        return getattr(self, "_result", {"done": False})


@dataclasses.dataclass
class Figure:
    name: str
    images_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""


def raw_model(torch: Any, gpu_classifier: Any, device: str, side: int, batch: int, seconds: float) -> list[Figure]:
    """The raw model in this process: a pre-made batch on the device, from host memory, and batch 1."""
    model = gpu_classifier.build_model(device)
    rng = np.random.default_rng(0)
    host = torch.from_numpy(rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8))
    on_device = host.to(device)
    one = on_device[:1].clone()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def loop(make_input: Any, items: int) -> float:
        with torch.inference_mode():
            for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
                model(make_input())
            sync()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                model(make_input())
                n += 1
                if n % 8 == 0:
                    sync()
            sync()
            return n * items / (time.perf_counter() - start)

    return [
        Figure(f"raw model, batch {batch} already on the device", loop(lambda: on_device, batch), note="the goal's reference"),
        Figure(f"raw model, batch {batch} copied from host memory each time", loop(lambda: host.to(device), batch)),
        Figure("raw model, batch 1 on the device", loop(lambda: one, 1)),
    ]


def sdk(
    runtime: str,
    gpu_classifier: Any,
    *,
    side: int,
    streams: int,
    drivers: int,
    seconds: float,
    batch: int,
    wait: float,
    gpu: bool,
) -> Figure:
    """The example pipeline served to ``streams`` closed-loop streams from ``drivers`` driver processes."""
    inference = gpu_classifier.classifier_inference(side, gpu=gpu, max_batch_size=batch, max_batch_wait=wait)
    per_driver = [streams // drivers + (1 if d < streams % drivers else 0) for d in range(drivers)]
    with init(runtime) as rt, rt.start_inference(inference) as proc:
        handles = []
        first = 0
        for d, n in enumerate(per_driver):
            handles.append(
                proc.add_driver(
                    f"streams-{d}",
                    StreamsDriver,
                    parameters={"streams": n, "first": first, "side": side, "seconds": max(1, round(seconds))},
                )
            )
            first += n
        deadline = time.monotonic() + seconds + 600
        results: list[dict[str, Any]] = []
        while True:
            results = [h.stats() for h in handles]
            if all(r.get("done") for r in results):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the driver processes did not finish")
            time.sleep(0.5)
        cells = proc.stats()["cells"]
        for h in handles:
            proc.remove_driver(h.pid)
    errors = [e for r in results for e in r["errors"]]
    if errors:
        raise RuntimeError(f"requests failed: {errors[:3]}")
    latencies = sorted(x for r in results for x in r["latencies"])
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    frames = sum(r["frames"] for r in results)
    sizes = cells["classify"]["batch_size"]
    return Figure(
        f"SDK on {runtime}, {streams} streams from {drivers} driver processes, max batch {batch}"
        + (f", max wait {wait * 1e3:g} ms" if batch > 1 else ""),
        frames / (end - start),
        statistics.median(latencies) * 1e3,
        latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3,
        f"classify: mean batch {sizes['mean']:.1f}, p99 queue wait {cells['classify']['queue_wait']['p99'] * 1e3:.1f} ms",
    )


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--drivers", type=int, default=4, help="driver processes the streams are spread over")
    parser.add_argument("--batch", type=int, default=64, help="max batch size (and the raw model's batch)")
    parser.add_argument("--side", type=int, default=224, help="frame side in pixels")
    parser.add_argument("--max-batch-wait", type=float, default=0.005, help="seconds a batch may wait to fill (both cells)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    parser.add_argument("--runtime", default="local", help="runtime for the SDK figures (local; debug for a quick look)")
    parser.add_argument("--cpu-smoke", action="store_true", help="run on the CPU with tiny frames: checks the script, figures mean nothing")
    parser.add_argument("--write", type=Path, help="update this markdown file's gpu section")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("bench_gpu.py needs torch: pip install torch (a CUDA build on a GPU machine)", file=sys.stderr)
        raise SystemExit(2) from None
    import gpu_classifier

    if args.cpu_smoke:
        device, gpu = "cpu", False
        args.streams, args.drivers, args.batch, args.side, args.seconds = 4, 2, 4, 32, 1.0
        gpu_name = "none (--cpu-smoke: CPU, tiny frames; these figures mean nothing)"
    elif not torch.cuda.is_available():
        print(
            "bench_gpu.py measures GPU throughput and needs an NVIDIA GPU with CUDA, but torch.cuda.is_available() "
            f"is False (torch {torch.__version__}). Run it on a GPU machine (e.g. an H100 or H200) with a CUDA build "
            "of torch, or pass --cpu-smoke to check the script on this CPU with tiny frames (no figures).",
            file=sys.stderr,
        )
        raise SystemExit(2)
    else:
        device, gpu = "cuda:0", True
        gpu_name = f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    runtime = args.runtime if args.runtime in RUNTIMES else "debug"

    print(f"GPU benchmark on {gpu_name}; host {machine()}")
    figures = raw_model(torch, gpu_classifier, device, args.side, args.batch, args.seconds / 2)
    if gpu:
        torch.cuda.empty_cache()  # the SDK's inference process needs the memory
    figures.append(
        sdk(runtime, gpu_classifier, side=args.side, streams=args.streams, drivers=args.drivers, seconds=args.seconds,
            batch=args.batch, wait=args.max_batch_wait, gpu=gpu)
    )
    figures.append(
        sdk(runtime, gpu_classifier, side=args.side, streams=args.streams, drivers=args.drivers, seconds=args.seconds / 2,
            batch=1, wait=0.0, gpu=gpu)
    )
    reference = figures[0].images_per_s
    batched = figures[3]
    ratio = batched.images_per_s / reference
    width = max(len(f.name) for f in figures)
    for f in figures:
        latency = f"  p50 {f.p50_ms:.1f} ms  p99 {f.p99_ms:.1f} ms" if f.p99_ms is not None else ""
        print(f"  {f.name:<{width}}  {f.images_per_s:10,.1f} images/s  {f.images_per_s / reference:6.1%} of raw{latency}  {f.note}")
    verdict = "MET" if ratio >= GOAL else "NOT MET"
    print(f"  goal: SDK batched >= {GOAL:.0%} of the raw batched model: {ratio:.1%} ({verdict}) on {gpu_name}")
    if args.write and not args.cpu_smoke:
        rows = "\n".join(
            f"| {f.name} | {f.images_per_s:,.0f} | {f.images_per_s / reference:.0%} | "
            + (f"{f.p50_ms:.1f} / {f.p99_ms:.1f} ms" if f.p99_ms is not None else "")
            + f" | {f.note} |"
            for f in figures
        )
        write_section(
            args.write,
            "gpu",
            f"### GPU: ResNet-50 classifier, {args.streams} streams of {args.side}x{args.side} frames\n\n"
            f"`python benchmarks/bench_gpu.py` on **{gpu_name}**, host {machine()}:\n\n"
            "| measurement | images/s | of raw batched | p50 / p99 latency | notes |\n| --- | ---: | ---: | ---: | --- |\n"
            f"{rows}\n\nGoal (SDK batched >= {GOAL:.0%} of the raw batched model): {verdict} ({ratio:.1%}).",
        )
    return figures


if __name__ == "__main__":
    main()
