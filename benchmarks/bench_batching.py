"""Cross-stream dynamic batching and stage pipelining, on CPU, against their ideal rates.

Two measurements, each on the debug runtime (the executor in this process) and,
when ``init("local")`` is available, on the local runtime (the executor in a
spawned inference process, requests over the transport):

1. Batching: a ``call_batch`` cell whose call costs ``a + b * batch`` seconds of
   GIL-free waiting (``time.sleep`` releases the GIL, as a GPU kernel launch and
   sync would), fed by 32 concurrent closed-loop streams (each stream sends its
   next request when the previous one completes, with its own sid). With every
   stream in every batch the ideal is ``32 / (a + 32 * b)`` requests/s.
   Goal (issue 6): >= 85% of ideal.
   The same cell fed by 32 client threads that each block on ``predict().result()``
   (a thread per client, as a synchronous web framework or a script would use it),
   against the same ideal. Goal (issue 14): >= 85% of ideal.
2. Pipelining: a 3-stage chain of GIL-free 5 ms cells, 8 closed-loop streams.
   Pipelined, the chain runs at the rate of its slowest stage, 200 requests/s;
   unpipelined it would be 1 / 15 ms = 67. Goal: >= 85% of 200.

Latencies are measured by the client (send to completion callback).

``--against DIR`` runs this same script under ``DIR/.venv/bin/python`` (another
checkout, e.g. the code before a change) in the same run, alternating rounds with
this checkout, and prints every row of both side by side with their ratio.

    python benchmarks/bench_batching.py [--quick] [--runtimes debug,local] [--write docs/performance.md]
    python benchmarks/bench_batching.py --against ../base [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.cell import Cell, cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import RUNTIMES, BatchingPolicy, Inference, init  # noqa: E402
from rvai_sdk.types import Float, Integer  # noqa: E402

GOAL = 0.85


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


@dataclass
class CostParameters(Parameters):
    a: Float = Parameters.field(default=Float(0.004), description="fixed seconds per call")
    b: Float = Parameters.field(default=Float(0.0005), description="seconds per item")


@cell(max_batch_size=32, max_batch_wait=0.005)
class LinearCost(Cell):
    """A batched cell whose call sleeps (GIL-free) a + b * len(batch) seconds."""

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: CostParameters, inputs_list: Sequence[In]
    ) -> list[Out]:
        time.sleep(parameters.a + parameters.b * len(inputs_list))
        return [Out(y=i.x) for i in inputs_list]


class Sleep5ms(Cell):
    """An unbatched cell that sleeps (GIL-free) 5 ms."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        time.sleep(0.005)
        return Out(y=inputs.x)


def batched_pipeline() -> Pipeline:
    pf = PipelineFactory(name="bench-batching")
    c = pf.add_cell(ref="linear", cell=LinearCost())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    return pf.build()


def chain_pipeline(stages: int = 3) -> Pipeline:
    pf = PipelineFactory(name="bench-pipelining")
    cells = [pf.add_cell(ref=f"stage{i}", cell=Sleep5ms()) for i in range(stages)]
    pf.declare_input(ref="x", input=cells[0].inputs.x)
    for a, b in zip(cells, cells[1:]):
        pf.connect(a.outputs.y, b.inputs.x)
    pf.declare_output(ref="y", output=cells[-1].outputs.y)
    return pf.build()


@dataclass
class LoopResult:
    rate: float
    latencies: list[float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def closed_loop(predict: Callable[..., Future[Any]], streams: int, rounds: int, warmup: int) -> LoopResult:
    """``streams`` concurrent streams with their own sids; each sends its next request from the completion callback.

    The first ``warmup`` rounds of every stream are not timed.
    """
    lock = threading.Lock()
    finished = threading.Event()
    errors: list[BaseException] = []
    left = {f"s{i}": warmup + rounds for i in range(streams)}
    active = [streams]
    timed = [0, 0.0, 0.0]  # completions counted, first timed start, last completion
    latencies: list[float] = []

    def send(sid: str) -> None:
        sent = time.perf_counter()
        predict({"x": Integer(left[sid])}, sid=sid).add_done_callback(lambda f: done(sid, sent, f))

    def done(sid: str, sent: float, future: Future[Any]) -> None:
        now = time.perf_counter()
        if future.exception() is not None:
            errors.append(future.exception())  # type: ignore[arg-type]
        with lock:
            left[sid] -= 1
            remaining = left[sid]
            if remaining < rounds:  # a timed round
                latencies.append(now - sent)
                timed[0] += 1
                timed[2] = now
            elif remaining == rounds:
                timed[1] = timed[1] or now  # the first stream to finish warming up starts the clock
            if not remaining:
                active[0] -= 1
                if not active[0]:
                    finished.set()
        if remaining and not errors:
            send(sid)
        elif errors:
            finished.set()

    for i in range(streams):
        send(f"s{i}")
    if not finished.wait(timeout=600):
        raise TimeoutError("the closed loop did not finish in 600 s")
    if errors:
        raise errors[0]
    # Rate over the timed window: completions after the first stream's warm-up, to the last completion.
    return LoopResult(rate=timed[0] / (timed[2] - timed[1]), latencies=latencies)


def blocking_threads(predict: Callable[..., Future[Any]], streams: int, rounds: int, warmup: int) -> LoopResult:
    """``streams`` client threads with their own sids; each sends a request and blocks on its ``result()``, in a loop.

    The first ``warmup`` requests of every thread are not timed.
    """
    lock = threading.Lock()
    errors: list[BaseException] = []
    latencies: list[float] = []
    timed = [0, 0.0, 0.0]  # completions counted, first timed start, last completion
    barrier = threading.Barrier(streams)

    def client(sid: str) -> None:
        barrier.wait(timeout=60)
        mine: list[float] = []
        try:
            for n in range(warmup + rounds):
                sent = time.perf_counter()
                # No timeout: a caller blocked in result() runs its request's cells itself on the
                # debug runtime (caller-runs), as a plain script would; the join below bounds the run.
                predict({"x": Integer(n)}, sid=sid).result()
                now = time.perf_counter()
                if n == warmup - 1:
                    with lock:
                        timed[1] = timed[1] or now  # the first thread to finish warming up starts the clock
                elif n >= warmup:
                    mine.append(now - sent)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        with lock:
            latencies.extend(mine)
            timed[0] += len(mine)
            timed[2] = max(timed[2], time.perf_counter())

    threads = [threading.Thread(target=client, args=(f"s{i}",), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        if t.is_alive():
            raise TimeoutError("a blocking client did not finish in 600 s")
    if errors:
        raise errors[0]
    return LoopResult(rate=timed[0] / (timed[2] - timed[1]), latencies=latencies)


@dataclass
class Row:
    runtime: str
    name: str
    achieved: float
    ideal: float
    p50_ms: float
    p99_ms: float
    note: str

    @property
    def ratio(self) -> float:
        return self.achieved / self.ideal


def measure(runtime_name: str, quick: bool, a: float, b: float) -> list[Row]:
    rows: list[Row] = []
    streams = 32
    ideal = streams / (a + streams * b)
    rounds, warmup = (15, 3) if quick else (60, 5)
    with init(runtime_name) as rt:
        inference = Inference(
            pipeline=batched_pipeline(),
            parameters={"linear": {"a": a, "b": b}},
            batching={"linear": BatchingPolicy(max_batch_size=streams, max_batch_wait=0.005)},
        )
        for load, loop in (("closed-loop streams", closed_loop), ("client threads blocking on result()", blocking_threads)):
            with rt.start_inference(inference) as proc:
                result = loop(proc.predict, streams, rounds, warmup)
                cell_stats = proc.stats()["cells"]["linear"]
            sizes = cell_stats["batch_size"]
            rows.append(
                Row(
                    runtime_name,
                    f"call_batch cell, a={a * 1e3:g} ms + b={b * 1e3:g} ms/item, {streams} {load}",
                    result.rate,
                    ideal,
                    result.percentile(50) * 1e3,
                    result.percentile(99) * 1e3,
                    f"mean batch {sizes['mean']:.1f}, p99 queue wait {cell_stats['queue_wait']['p99'] * 1e3:.1f} ms",
                )
            )
        streams, rounds, warmup = 8, (40 if quick else 150), 5
        with rt.start_inference(Inference(pipeline=chain_pipeline())) as proc:
            result = closed_loop(proc.predict, streams, rounds, warmup)
        rows.append(
            Row(
                runtime_name,
                f"3-stage chain of 5 ms GIL-free cells, {streams} closed-loop streams",
                result.rate,
                200.0,
                result.percentile(50) * 1e3,
                result.percentile(99) * 1e3,
                "unpipelined would be 67 req/s",
            )
        )
    return rows


def compare(args: argparse.Namespace) -> None:
    """Run this script under this checkout's Python and ``args.against``'s, alternating, and print ratios."""
    here = Path(__file__).resolve()
    sides = {"before": args.against.resolve() / ".venv" / "bin" / "python", "after": Path(sys.executable)}
    common = ["--runtimes", args.runtimes, "--a", str(args.a), "--b", str(args.b)] + (["--quick"] if args.quick else [])
    best: dict[str, dict[tuple[str, str], Row]] = {"before": {}, "after": {}}
    out = here.parent / f".bench_batching_{os.getpid()}.json"
    try:
        for _ in range(args.rounds):
            for side, python in sides.items():
                # Run from outside both checkouts, so each Python imports its own rvai_sdk.
                subprocess.run([str(python), str(here), *common, "--json", str(out)], check=True, cwd="/", timeout=1800,
                               stdout=subprocess.DEVNULL)
                for item in json.loads(out.read_text()):
                    row = Row(**item)
                    key = (row.runtime, row.name)
                    if key not in best[side] or row.achieved > best[side][key].achieved:
                        best[side][key] = row
    finally:
        out.unlink(missing_ok=True)
    print(f"before ({args.against}) vs after (this checkout), best of {args.rounds} alternating rounds, on {machine()}")
    for key, after in best["after"].items():
        before = best["before"].get(key)
        if before is None:
            continue
        print(
            f"  [{key[0]:<5}] {key[1]}: {before.achieved:,.0f} -> {after.achieved:,.0f} req/s "
            f"({before.ratio:.1%} -> {after.ratio:.1%} of ideal; after/before {after.achieved / before.achieved:.3f}x)"
        )


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument("--runtimes", default="debug,local", help="comma-separated; those not available are skipped")
    parser.add_argument("--a", type=float, default=0.004, help="fixed seconds per batched call (default 0.004)")
    parser.add_argument("--b", type=float, default=0.0005, help="seconds per item of a batched call (default 0.0005)")
    parser.add_argument("--write", type=Path, help="update this markdown file's batching section")
    parser.add_argument("--against", type=Path, help="another checkout (with its .venv) to compare with, side by side")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: alternating rounds per side (best kept)")
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # used by --against for each side
    args = parser.parse_args(argv)
    if args.against is not None:
        compare(args)
        return []

    rows: list[Row] = []
    skipped: list[str] = []
    for name in [n.strip() for n in args.runtimes.split(",") if n.strip()]:
        if name not in RUNTIMES:
            skipped.append(f"{name} (not in rvai_sdk.runtime.RUNTIMES: {', '.join(RUNTIMES)})")
            continue
        try:
            rows.extend(measure(name, args.quick, args.a, args.b))
        except Exception as exc:  # a runtime that cannot start here is reported, not fatal
            skipped.append(f"{name} ({type(exc).__name__}: {exc})")

    print(f"batching and pipelining benchmark on {machine()}")
    width = max((len(r.name) for r in rows), default=10)
    for r in rows:
        verdict = "MET" if r.ratio >= GOAL else "NOT MET"
        print(
            f"  [{r.runtime:<5}] {r.name:<{width}}  {r.achieved:8,.0f} req/s of ideal {r.ideal:,.0f} = "
            f"{r.ratio:5.1%} (goal >= {GOAL:.0%}: {verdict})  p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms  {r.note}"
        )
    for s in skipped:
        print(f"  skipped runtime {s}")
    if args.json is not None:
        args.json.write_text(json.dumps([r.__dict__ for r in rows]))
    met = bool(rows) and all(r.ratio >= GOAL for r in rows)
    print(f"  goals (>= {GOAL:.0%} of ideal, every row): {'MET' if met else 'NOT MET'}")
    if args.write:
        table = "\n".join(
            ["| runtime | load | achieved | ideal | ratio | p50 / p99 latency | notes |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
            + [
                f"| {r.runtime} | {r.name} | {r.achieved:,.0f} req/s | {r.ideal:,.0f} req/s | {r.ratio:.1%} | "
                f"{r.p50_ms:.1f} / {r.p99_ms:.1f} ms | {r.note} |"
                for r in rows
            ]
        )
        extra = "".join(f"\n\nSkipped runtime {s}." for s in skipped)
        write_section(
            args.write,
            "batching",
            f"### Batching and pipelining (CPU)\n\n`python benchmarks/bench_batching.py` on {machine()}:\n\n{table}\n\n"
            f"Goal: each row >= {GOAL:.0%} of its ideal: {'MET' if met else 'NOT MET'}.{extra}",
        )
    return rows


if __name__ == "__main__":
    main()
