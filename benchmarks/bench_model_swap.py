"""Request rate and latency while a model is swapped (``set_models``) vs steady state (issue 15 item 4).

Closed-loop streams (one thread per sid, each waits for its result before sending
the next) run against a stateful one-cell pipeline whose ``load_model`` takes
``--load-seconds``: once sleeping (a load that waits on I/O) and once busy in Python
(a load that competes for the CPU and, on ``local``/``debug``, the inference
process's interpreter lock). For each, the requests completed while
``proc.set_models(...)`` ran are compared with a steady window of the same
length before it, in one run: the rate and p50/p99 latency ratios, and the failed
requests and state errors (both must be 0).

    python benchmarks/bench_model_swap.py [--quick] [--runtime local|debug|ray] [--replicas 2] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.cell import Cell, cell  # noqa: E402
from rvai_sdk.context import InferenceContext, ModelContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters, State  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import Inference, InferenceProcess, init  # noqa: E402
from rvai_sdk.types import Integer, String  # noqa: E402


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    n: Integer = Outputs.field()
    model: String = Outputs.field()


@dataclass
class Tally(State):
    n: Integer = State.field(default=Integer(0))


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    data = b"x" * 64
    while time.perf_counter() < end:
        data = hashlib.blake2b(data).digest()


@cell(state=Tally)
class Model(Cell):
    """Model path ``<kind>:<seconds>:<tag>``: loading sleeps or computes that long; a call costs about 0.5 ms."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        assert model_path is not None
        kind, seconds, tag = model_path.split(":")
        if kind == "sleep":
            time.sleep(float(seconds))
        else:
            _busy(float(seconds))
        return tag

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        _busy(0.0005)
        context.state.n = Integer(context.state.n + 1)
        return Out(n=context.state.n, model=String(context.model))


def pipeline() -> Pipeline:
    pf = PipelineFactory(name="swap")
    c = pf.add_cell(ref="model", cell=Model())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="n", output=c.outputs.n)
    pf.declare_output(ref="model", output=c.outputs.model)
    return pf.build()


class Streams:
    """``sids`` closed-loop streams; each request recorded as (sent, done, ok, model)."""

    def __init__(self, proc: InferenceProcess, sids: int) -> None:
        self.proc = proc
        self.records: list[tuple[float, float, bool, str]] = []
        self.state_errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(f"s{i}",), daemon=True) for i in range(sids)]

    def _run(self, sid: str) -> None:
        n = 0
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent = time.perf_counter()
            try:
                out = self.proc.predict({"x": 0}, sid=sid).result(timeout=60)
            except Exception:
                with self._lock:
                    self.records.append((sent, time.perf_counter(), False, ""))
                continue
            n += 1
            with self._lock:
                self.records.append((sent, time.perf_counter(), True, str(out["model"])))
                if int(out["n"]) != n:
                    self.state_errors += 1

    def __enter__(self) -> Streams:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(70)

    def window(self, start: float, end: float) -> dict[str, float]:
        """Requests done in [start, end]: rate, p50/p99 latency, failures."""
        with self._lock:
            done = [r for r in self.records if start <= r[1] <= end]
        latencies = sorted(r[1] - r[0] for r in done if r[2])
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
        return {
            "seconds": end - start,
            "rate": sum(1 for r in done if r[2]) / (end - start),
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": p99,
            "failed": sum(1 for r in done if not r[2]),
        }


def run(
    runtime: str, load_seconds: float, sids: int, replicas: int
) -> tuple[list[tuple[str, dict[str, float], dict[str, float]]], int, int]:
    rows = []
    options: dict[str, Any] = {"replicas": replicas} if runtime == "ray" else {}
    with init(runtime, **options) as rt, rt.start_inference(
        Inference(pipeline=pipeline(), models={"model": "sleep:0:v0"})
    ) as proc, Streams(proc, sids) as streams:
        time.sleep(5.0 if runtime == "ray" else 1.0)  # warm up: every stream running (Ray takes longer)
        version = 0
        for kind in ("sleep", "cpu"):
            version += 1
            time.sleep(load_seconds)  # a steady window as long as the load
            t0 = time.perf_counter()
            proc.set_models({"model": f"{kind}:{load_seconds}:v{version}"})
            t1 = time.perf_counter()
            steady = streams.window(t0 - (t1 - t0), t0)
            swap = streams.window(t0, t1)
            rows.append((f"`load_model` {'sleeping' if kind == 'sleep' else 'busy in Python'}", steady, swap))
            after = time.perf_counter()
            time.sleep(0.5)
            with streams._lock:
                stale = sum(1 for r in streams.records if r[0] > after and r[2] and r[3] != f"v{version}")
            assert stale == 0, f"{stale} requests sent after set_models returned ran with the old model"
        failed = sum(1 for r in streams.records if not r[2])
        return rows, failed, streams.state_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows on the debug runtime (a smoke run)")
    parser.add_argument("--runtime", default=None, help="debug, local (default) or ray")
    parser.add_argument("--load-seconds", type=float, default=None, help="how long load_model takes (default 2)")
    parser.add_argument("--sids", type=int, default=8, help="closed-loop streams")
    parser.add_argument("--replicas", type=int, default=2, help="replicas on the ray runtime (they swap one at a time)")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file (docs/performance.md)")
    args = parser.parse_args(argv)
    runtime = args.runtime or ("debug" if args.quick else "local")
    load_seconds = args.load_seconds if args.load_seconds is not None else (0.3 if args.quick else 2.0)
    rows, failed, state_errors = run(runtime, load_seconds, args.sids, args.replicas)
    on = f"runtime `{runtime}`" + (f" with {args.replicas} replicas (swapped one at a time)" if runtime == "ray" else "")
    command = f"{' --quick' if args.quick else ''} --runtime {runtime}" + (f" --replicas {args.replicas}" if runtime == "ray" else "")
    lines = [
        f"Machine: {machine()}; {on}; {args.sids} closed-loop streams, a stateful cell of about "
        f"0.5 ms per call, `load_model` taking {load_seconds:g} s; `python benchmarks/bench_model_swap.py{command}`. "
        "Each swap window (the `set_models` call) is compared with the steady window of the same length just before it.",
        "",
        "| swap | seconds | requests/s steady | requests/s during swap | rate vs steady | p50 ms steady / swap | "
        "p99 ms steady / swap | p99 vs steady |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, steady, swap in rows:
        lines.append(
            f"| {name} | {swap['seconds']:.2f} | {steady['rate']:,.0f} | {swap['rate']:,.0f} | "
            f"{swap['rate'] / steady['rate']:.2f} | {steady['p50'] * 1e3:.2f} / {swap['p50'] * 1e3:.2f} | "
            f"{steady['p99'] * 1e3:.2f} / {swap['p99'] * 1e3:.2f} | {swap['p99'] / steady['p99']:.2f} |"
        )
    lines += ["", f"Failed requests: {failed}; sids whose counter skipped or repeated: {state_errors} (both must be 0)."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        title = "## Model swap" if runtime == "local" else f"### Model swap on `{runtime}`"
        write_section(args.write, f"model_swap_{runtime}", f"{title}\n\n{text}")
    return 0 if failed == 0 and state_errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
