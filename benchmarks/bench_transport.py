"""The local runtime's transport, side by side with raw pipes and copies, in one run.

Prints, from one run:

- small request round trip: ``predict().result()`` on a 1-cell pipeline in the local
  runtime vs a raw ``multiprocess`` Pipe echo of the same dict (pickled bytes) to a
  child; goal <= 2x the echo.
- a 1920x1080x3 uint8 frame through an identity cell and back vs one cold numpy copy
  of the frame (source and destination out of the CPU's caches: buffers rotated over
  ``COLD_BYTES``, as frames from a camera are), and vs pickling it through a Pipe to a
  child and back; goals <= 4x one cold copy, >= 5x faster than the pickle path. The
  ratio to a warm copy (the same two buffers again and again, in cache) is printed too.
- 8 driver processes sending small requests (64 in flight each, closed loop):
  aggregate requests/s; goal >= 20,000/s on a 2-core machine.
- the cost of a ``Tensor`` vs an ``Image`` for the same 1920x1080x3 uint8 frame: the round
  trip through an identity cell (shared memory both ways), and the JSON encode + decode
  (base64 bytes vs PNG), measured alternately in one run; printed as ratios.

    python benchmarks/bench_transport.py [--quick] [--write docs/performance.md]
    python benchmarks/bench_transport.py --tensor-only [--quick]   # just Tensor vs Image
    python benchmarks/bench_transport.py --own-answer [--quick]    # what the caller reading its own answer would save
    python benchmarks/bench_transport.py --before DIR [--quick]   # DIR: another checkout with its own .venv

With ``--before TREE`` it measures the two ratio goals (small round trip / Pipe echo,
1080p frame / one copy) for TREE (with TREE/.venv/bin/python) and for this tree, each in
a fresh process, alternating (``--rounds``, 3 by default), and prints the best of each side
and their ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import alternating_seconds, machine, per_call_seconds, write_section  # noqa: E402
from _toys import inc_chain  # noqa: E402

import numpy as np  # noqa: E402

from rvai_sdk.cell import Cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.drivers import DriverParameters, PipelineDriver  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.resources import DriverResources  # noqa: E402
from rvai_sdk.runtime import Inference, RestrictedInferenceProcess, init  # noqa: E402
from rvai_sdk.types import Boolean, Float, Image, Integer  # noqa: E402

try:
    from rvai_sdk.types import Tensor

    FrameTensor: Any = Tensor[np.uint8, (None, None, 3)]
except ImportError:  # a tree from before Tensor, measured with --before: its ratio goals need only Image
    FrameTensor = Image


@dataclass
class FrameIn(Inputs):
    frame: Image = Inputs.field()


@dataclass
class FrameOut(Outputs):
    frame: Image = Outputs.field()


class Identity(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameIn) -> FrameOut:
        return FrameOut(frame=inputs.frame)


@dataclass
class TensorIn(Inputs):
    frame: FrameTensor = Inputs.field()


@dataclass
class TensorOut(Outputs):
    frame: FrameTensor = Outputs.field()


class TensorIdentity(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: TensorIn) -> TensorOut:
        return TensorOut(frame=inputs.frame)


def own_answer(quick: bool) -> str:
    """A probe for a design not built: the waiting caller reading its own answer from the socket.

    A bare :class:`~rvai_sdk.transport.channel.Channel` to the same inference process sends a
    validated small request and reads the answer in the calling thread (no reader thread, no
    future: one wake-up on each side, as the Pipe echo), alternating rounds with
    ``predict().result()`` (three wake-ups) and the Pipe echo. What is left between the probe
    and the echo is the Python of the two sides.
    """
    from rvai_sdk.transport.channel import Channel, connect

    number = 300 if quick else 2000
    echo = EchoChild()
    with init("local") as rt, rt.start_inference(Inference(pipeline=inc_chain(1, "inc"))) as proc:
        link = proc._link  # noqa: SLF001 - the probe talks to the same process on a connection of its own
        channel = Channel(connect(link.address, link.authkey, 10.0), None)  # type: ignore[attr-defined]
        rids = itertools.count(1)

        def probe() -> None:
            inputs = proc.pipeline.validate_inputs({"x": 1})
            channel.post(("p", next(rids), None, inputs))
            ops = channel.recv()
            assert ops is not None and ops[0][0] == "r" and ops[0][2], ops

        def sdk() -> None:
            proc.predict({"x": 1}).result()

        for _ in range(200):
            probe(), sdk(), echo.small()
        timed = alternating_seconds({"probe": probe, "sdk": sdk, "echo": echo.small}, number=number, repeat=7)
        channel.close()
    echo.close()
    p, k, e = timed["probe"] * 1e6, timed["sdk"] * 1e6, timed["echo"] * 1e6
    return (
        f"small request, local runtime: predict().result() {k:.0f} µs ({k / e:.2f}x the echo); the caller reading its "
        f"own answer (probe) {p:.0f} µs ({p / e:.2f}x the echo, {p / k:.2f}x predict); Pipe echo {e:.0f} µs"
    )


def tensor_vs_image(rt: Any, quick: bool) -> tuple[list[tuple[str, str]], str]:
    """A 1080p uint8 frame as Image and as Tensor: round trips through an identity cell, and JSON; alternating rounds."""
    pixels = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    image, tensor = Image(pixels), FrameTensor(pixels)
    number, rounds = (5, 3) if quick else (20, 5)
    best: dict[str, float] = {}

    def keep(key: str, seconds: float) -> None:
        best[key] = min(best.get(key, seconds), seconds)

    with rt.start_inference(Inference(pipeline=one_cell(Identity(), "image-identity"))) as image_proc, rt.start_inference(
        Inference(pipeline=one_cell(TensorIdentity(), "tensor-identity"))
    ) as tensor_proc:
        calls = {
            "image_trip": lambda: image_proc.predict({"frame": image}).result(),
            "tensor_trip": lambda: tensor_proc.predict({"frame": tensor}).result(),
            "image_json": lambda: Image.from_json(image.to_json()),
            "tensor_json": lambda: FrameTensor.from_json(tensor.to_json()),
        }
        for fn in calls.values():  # warm every path
            fn()
        for _ in range(rounds):  # alternate, so a noisy moment hits both sides
            for key, fn in calls.items():
                keep(key, per_call_seconds(fn, number=number if "trip" in key else max(2, number // 4), repeat=1))
        check = tensor_proc.predict({"frame": tensor}).result()["frame"]
        assert type(check) is FrameTensor and np.array_equal(check, pixels)
    trip, coded = best["tensor_trip"] / best["image_trip"], best["tensor_json"] / best["image_json"]
    rows = [
        ("1080p frame as `Image` through an identity cell and back", f"{best['image_trip'] * 1e3:.2f} ms"),
        (
            "the same frame as `Tensor[uint8, (None, None, 3)]`",
            f"{best['tensor_trip'] * 1e3:.2f} ms (**{trip:.2f}x** the Image round trip)",
        ),
        ("1080p `Image` JSON encode + decode (base64 PNG)", f"{best['image_json'] * 1e3:.1f} ms"),
        (
            "1080p `Tensor` JSON encode + decode (base64 bytes)",
            f"{best['tensor_json'] * 1e3:.1f} ms (**{coded:.2f}x** the Image's; "
            f"{len(tensor.to_json()['data']) / len(image.to_json()):.1f}x its size for this random frame)",
        ),
    ]
    summary = f"Tensor vs Image, 1080p frame: round trip {trip:.2f}x, JSON encode+decode {coded:.2f}x (best of {rounds} alternating rounds)"
    return rows, summary


def one_cell(cell: Cell, name: str) -> Pipeline:
    pf = PipelineFactory(name=name)
    c = pf.add_cell(ref="c", cell=cell)
    for port in c.inputs:
        pf.declare_input(ref=port.name, input=port)
    for port in c.outputs:
        pf.declare_output(ref=port.name, output=port)
    return pf.build()


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (0 without psutil)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _echo(conn: Any) -> None:
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(data)


class EchoChild:
    """The reference: a spawned child that sends back every message of a ``multiprocess`` Pipe."""

    def __init__(self) -> None:
        import multiprocess

        ctx = multiprocess.get_context("spawn")
        self._parent, child = ctx.Pipe()
        self._process = ctx.Process(target=_echo, args=(child,), daemon=True)
        self._process.start()

    def round_trip(self, obj: Any) -> Any:
        """``obj`` pickled (protocol 5), sent, echoed back and unpickled."""
        self._parent.send_bytes(pickle.dumps(obj, protocol=5))
        return pickle.loads(self._parent.recv_bytes())

    def small(self) -> None:
        """The round trip of the small request's dict."""
        self.round_trip({"x": Integer(1)})

    def close(self) -> None:
        self._parent.close()
        self._process.join(5)


@dataclass
class LoadParameters(DriverParameters):
    go: Boolean = DriverParameters.field(default=Boolean(False))
    seconds: Float = DriverParameters.field(default=Float(2.0))


class LoadDriver(PipelineDriver):
    """Waits for ``go``, then keeps 64 small requests in flight for ``seconds``; reports how many finished."""

    parameters_class = LoadParameters

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.go = threading.Event()
        self.done = threading.Event()
        self.count = 0
        self.elapsed = 0.0

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        if bool(new.go):  # type: ignore[attr-defined]
            self.go.set()

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        inference.predict({"x": 0}).result(timeout=30)
        self.go.wait()
        seconds = float(self.get_parameters().seconds)  # type: ignore[attr-defined]
        lock = threading.Lock()
        start = time.perf_counter()
        deadline = start + seconds
        finished = threading.Event()
        in_flight = [0]

        def send(i: int) -> None:
            with lock:
                in_flight[0] += 1
            inference.predict({"x": i}, sid=f"d{self.index}-{i % 64}").add_done_callback(on_done)

        def on_done(future: Future[dict[str, Any]]) -> None:
            future.result()
            with lock:
                self.count += 1
                in_flight[0] -= 1
                more = time.perf_counter() < deadline
                last = not more and in_flight[0] == 0
            if more:
                send(self.count)
            elif last:
                finished.set()

        for i in range(64):
            send(i)
        finished.wait(seconds + 60)
        self.elapsed = time.perf_counter() - start
        self.done.set()
        self.wait_stopped()

    def stats(self) -> dict[str, Any]:
        return {"done": self.done.is_set(), "count": self.count, "elapsed": self.elapsed}


FRAME_WARMUP = 10  # frames before timing: the pools create their slots (and fault their pages in) on the first few
COLD_BYTES = 256 << 20  # more than any CPU's last-level cache: a buffer is evicted before it comes round again


def copies(frame: np.ndarray) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(cold, warm)``: one numpy copy of ``frame``'s size with both buffers out of cache, and with the same two in cache.

    The cold copy rotates over pairs of page-faulted buffers totalling
    :data:`COLD_BYTES`, so each call reads and writes memory the caches no longer
    hold (what copying a new camera frame costs); the warm one copies ``frame``
    into one scratch buffer again and again.
    """
    pairs = max(2, COLD_BYTES // (2 * frame.nbytes))
    # targets written once (ones_like): their pages exist before the first timed copy
    turn = itertools.cycle([(np.ones_like(frame), np.array(frame)) for _ in range(pairs)])
    scratch = np.empty_like(frame)

    def cold() -> None:
        np.copyto(*next(turn))

    def warm() -> None:
        np.copyto(scratch, frame)

    return cold, warm


def measure_ratios(quick: bool) -> dict[str, float]:
    """The two ratio goals in this process: seconds of each side, and the ratios."""
    number, frames = (200, 5) if quick else (1000, 30)
    echo = EchoChild()
    raw_small = echo.small
    frame = Image(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    copy_frame, warm_copy = copies(frame)

    out: dict[str, float] = {}
    with init("local") as rt:
        with rt.start_inference(Inference(pipeline=inc_chain(1, "inc"))) as proc:

            def sdk_small() -> None:
                proc.predict({"x": 1}).result()

            for _ in range(20):
                raw_small(), sdk_small()
            out.update(alternating_seconds({"echo_s": raw_small, "small_s": sdk_small}, number=number))
        with rt.start_inference(Inference(pipeline=one_cell(Identity(), "identity"))) as proc:

            def sdk_frame() -> None:
                proc.predict({"frame": frame}).result()

            for _ in range(FRAME_WARMUP):
                sdk_frame(), copy_frame(), warm_copy()
            out.update(
                alternating_seconds({"copy_s": copy_frame, "warm_copy_s": warm_copy, "frame_s": sdk_frame}, number=frames)
            )
    echo.close()
    out["small_ratio"] = out["small_s"] / out["echo_s"]
    out["frame_ratio"] = out["frame_s"] / out["copy_s"]
    out["frame_warm_ratio"] = out["frame_s"] / out["warm_copy_s"]
    return out


def compare(before: Path, quick: bool, rounds: int = 3) -> None:
    """Before (another tree) and after (this tree), each in fresh processes, alternating; print both and the ratio."""
    here = Path(__file__).resolve()
    trees = {"before": before.resolve(), "after": here.parents[1]}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(rounds):
        for side, tree in trees.items():
            python = tree / ".venv" / "bin" / "python"
            command = [str(python if python.exists() else sys.executable), str(here), "--measure-only"]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run(
                command + (["--quick"] if quick else []), capture_output=True, text=True, env=env, cwd=tree, timeout=600
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise SystemExit(f"{side} ({tree}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            runs[side].append(json.loads(lines[-1]))

    def best(side: str, key: str) -> float:
        return min(run[key] for run in runs[side])

    rows = [
        ("small `predict().result()` / Pipe echo (goal <= 2x)", "small_ratio", "x"),
        ("1080p frame round trip / one cold copy (goal <= 4x)", "frame_ratio", "x"),
        ("1080p frame round trip / one warm copy (in cache)", "frame_warm_ratio", "x"),
        ("small `predict().result()`", "small_s", "µs"),
        ("Pipe echo of the same dict", "echo_s", "µs"),
        ("1080p frame round trip", "frame_s", "ms"),
        ("one cold numpy copy of the frame", "copy_s", "ms"),
        ("one warm numpy copy of the frame", "warm_copy_s", "ms"),
    ]
    print(f"machine: {machine()}; before = {trees['before']}, after = {trees['after']}; best of {rounds} alternating runs each")
    print("| measurement | before | after | after / before |\n| --- | --- | --- | --- |")
    for label, key, unit in rows:
        b, a = best("before", key), best("after", key)
        scale = {"x": 1.0, "µs": 1e6, "ms": 1e3}[unit]
        print(f"| {label} | {b * scale:.2f} {unit} | {a * scale:.2f} {unit} | {a / b:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file")
    parser.add_argument("--before", type=Path, help="another tree to compare the ratio goals with")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each side with --before (default 3)")
    parser.add_argument("--tensor-only", action="store_true", help="only the Tensor vs Image comparison")
    parser.add_argument("--own-answer", action="store_true", help="only the probe of the caller reading its own answer")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure_ratios(args.quick)))
        return
    if args.before is not None:
        compare(args.before, args.quick, args.rounds)
        return
    if args.own_answer:
        print(f"machine: {machine()}")
        print(own_answer(args.quick))
        return
    if args.tensor_only:
        with init("local") as rt:
            tensor_rows, tensor_summary = tensor_vs_image(rt, args.quick)
        print(f"machine: {machine()}")
        print("| measurement | figure |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in tensor_rows))
        print(tensor_summary)
        return
    number = 200 if args.quick else 2000
    frames = 5 if args.quick else 40
    seconds = 0.5 if args.quick else 3.0

    echo = EchoChild()
    raw_small = echo.small
    frame = Image(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))

    def raw_frame() -> None:
        echo.round_trip({"frame": frame})

    rows: list[tuple[str, str]] = []
    with init("local") as rt:
        with rt.start_inference(Inference(pipeline=inc_chain(1, "inc"))) as proc:

            def sdk_small() -> None:
                proc.predict({"x": 1}).result()

            for _ in range(3):  # warm both paths, interleaved
                raw_small(), sdk_small()
            timed = alternating_seconds({"echo": raw_small, "sdk": sdk_small}, number=number)
            raw, sdk = timed["echo"], timed["sdk"]
            small_ratio = sdk / raw
            rows += [
                ("raw multiprocess Pipe echo of a small dict (pickle)", f"{raw * 1e6:.0f} µs"),
                ("local runtime `predict().result()`, 1-cell pipeline", f"{sdk * 1e6:.0f} µs (**{small_ratio:.2f}x** the echo; goal <= 2x)"),
            ]

            drivers = [proc.add_driver(f"load{i}", LoadDriver, i) for i in range(8)]
            for d in drivers:
                d.set_parameters({"seconds": seconds})
            pids = [proc.pid, *(d.pid for d in drivers)]  # type: ignore[attr-defined]
            cpu_before = _cpu_seconds(pids)
            for d in drivers:
                d.set_parameters({"go": True})
            deadline = time.monotonic() + seconds + 120
            while not all(d.stats()["done"] for d in drivers) and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu = _cpu_seconds(pids) - cpu_before
            stats = [d.stats() for d in drivers]
            total = sum(s["count"] for s in stats)
            rate = total / max(s["elapsed"] for s in stats)
            cpu_us = cpu / total * 1e6 if cpu else float("nan")
            cores = os.cpu_count() or 1
            rows.append(
                (
                    "8 driver processes x 64 in flight, small requests",
                    f"**{rate:,.0f} req/s** aggregate (goal >= 20,000); {cpu_us:.0f} µs of CPU per request over all "
                    f"processes, i.e. at most {cores * 1e6 / cpu_us:,.0f} req/s on {cores} idle cores",
                )
            )

        with rt.start_inference(Inference(pipeline=one_cell(Identity(), "identity"))) as proc:

            def sdk_frame() -> None:
                proc.predict({"frame": frame}).result()

            copy_frame, warm_copy = copies(frame)
            for _ in range(FRAME_WARMUP):
                sdk_frame(), raw_frame(), copy_frame(), warm_copy()
            timed = alternating_seconds({"cold": copy_frame, "warm": warm_copy, "sdk": sdk_frame}, number=frames)
            copy, warm, sdk_f = timed["cold"], timed["warm"], timed["sdk"]
            pickled = per_call_seconds(raw_frame, number=max(3, frames // 4))
            rows += [
                ("one cold numpy copy of a 1920x1080x3 frame (buffers out of cache)", f"{copy * 1e3:.2f} ms"),
                ("one warm numpy copy (the same two buffers, in cache)", f"{warm * 1e3:.2f} ms"),
                ("the frame pickled through a Pipe to a child and back", f"{pickled * 1e3:.2f} ms"),
                (
                    "the frame through an identity cell and back (local runtime)",
                    f"{sdk_f * 1e3:.2f} ms (**{sdk_f / copy:.2f}x** one cold copy, goal <= 4x; {sdk_f / warm:.1f}x a warm "
                    f"one; **{pickled / sdk_f:.1f}x** faster than pickling, goal >= 5x)",
                ),
            ]
        tensor_rows, tensor_summary = tensor_vs_image(rt, args.quick)
        rows += tensor_rows
    echo.close()

    table = "| measurement | figure |\n| --- | --- |\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    print(f"machine: {machine()}")
    print(table)
    print(
        f"goals: small round trip {small_ratio:.2f}x echo (<= 2); frame {sdk_f / copy:.2f}x a cold copy (<= 4), "
        f"{pickled / sdk_f:.1f}x faster than pickle (>= 5); {rate:,.0f} req/s from 8 drivers (>= 20,000)"
    )
    print(tensor_summary)
    if args.write:
        write_section(
            args.write,
            "transport",
            f"Local runtime transport (`python benchmarks/bench_transport.py`), {machine()}:\n\n{table}",
        )


if __name__ == "__main__":
    main()
