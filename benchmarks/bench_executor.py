"""Executor overhead on the debug runtime, side by side with a bare thread-pool round trip.

Prints, from one run: a direct call of three trivial functions; a bare
``ThreadPoolExecutor(1).submit(f).result()`` round trip; the same three
functions as a 3-cell chain through ``predict().result()`` (sequential latency);
and throughput with 64 requests in flight. Goals (issue: core SDK): sequential
latency <= 1.5x the bare round trip, >= 30,000 requests/s in flight.

``--checks`` measures what the output checks at the cell boundary cost (issue 12:
at most 5%): the same executor with the checks on and off, alternating rounds in
this one run, and prints the ratios.

``--against DIR`` runs this same script under ``DIR/.venv/bin/python`` (another
checkout, e.g. the code before a change) and under this checkout's, alternating
rounds in one run, and prints each figure of both with the ratio.

    python benchmarks/bench_executor.py [--write docs/performance.md] [--checks]
    python benchmarks/bench_executor.py --against ../base [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, per_call_seconds, write_section  # noqa: E402
from _toys import inc_chain  # noqa: E402

from rvai_sdk.execution import Executor  # noqa: E402
from rvai_sdk.pipeline import Pipeline  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402
from rvai_sdk.types import Integer  # noqa: E402


def f1(x: int) -> int:
    return x + 1


def three(x: int = 1) -> int:
    return f1(f1(f1(x)))


def chain() -> Pipeline:
    return inc_chain(3, "bench-chain")


def throughput_blocking(predict: Callable[..., Future], total: int, in_flight: int) -> float:
    """One client thread keeps ``in_flight`` requests out, blocking on the oldest ``result()``."""
    pending: deque[Future] = deque()
    start = time.perf_counter()
    for i in range(total):
        if len(pending) >= in_flight:
            pending.popleft().result()
        pending.append(predict({"x": i}, sid=f"s{i % in_flight}"))
    while pending:
        pending.popleft().result()
    return total / (time.perf_counter() - start)


def throughput_closed_loop(predict: Callable[..., Future], total: int, in_flight: int) -> float:
    """``in_flight`` concurrent streams: each completion callback sends that stream's next request."""
    lock = threading.Lock()
    counts = {"sent": in_flight, "done": 0}
    finished = threading.Event()
    errors: list[BaseException] = []

    def on_done(future: Future) -> None:
        if future.exception() is not None:
            errors.append(future.exception())  # type: ignore[arg-type]
        with lock:
            counts["done"] += 1
            if counts["done"] == total:
                finished.set()
            if counts["sent"] >= total:
                return
            counts["sent"] += 1
            i = counts["sent"]
        predict({"x": i}, sid=f"s{i % in_flight}").add_done_callback(on_done)

    start = time.perf_counter()
    for i in range(in_flight):
        predict({"x": i}, sid=f"s{i}").add_done_callback(on_done)
    if not finished.wait(timeout=300):
        raise TimeoutError("the closed loop did not finish")
    if errors:
        raise errors[0]
    return total / (time.perf_counter() - start)


def output_check_cost(total: int, rounds: int = 7) -> dict[str, float]:
    """Sequential latency and closed-loop throughput of the 3-cell chain with the output checks on and off.

    Rounds alternate (on, off, on, off...) in one executor, so both see the same machine
    load; the best round of each mode is compared (other load only slows rounds down). Turning the checks off reaches into the executor's
    (immutable) plan of each cell: this is a measurement, not an API.
    """
    executor = Executor(chain())
    executor.start()
    stages = [stage.plan for stage in executor._stages]  # noqa: SLF001 - see the docstring
    checks = [stage.out_checks for stage in stages]
    x = Integer(1)
    figures: dict[str, list[float]] = {"seq_on": [], "seq_off": [], "tput_on": [], "tput_off": []}
    try:
        for _ in range(200):
            executor.submit({"x": x}, "warm").result()
        for _ in range(rounds):
            for mode in ("on", "off"):
                for stage, kept in zip(stages, checks):
                    object.__setattr__(stage, "out_checks", kept if mode == "on" else ())
                figures[f"seq_{mode}"].append(
                    per_call_seconds(lambda: executor.submit({"x": x}, "s").result(), number=total // 6, repeat=1)
                )
                figures[f"tput_{mode}"].append(throughput_closed_loop(executor.submit, total // 3, 64))
    finally:
        executor.stop()
    # The best round of each mode: on a shared machine other processes only ever slow a round down.
    best = {key: (min if key.startswith("seq") else max)(values) for key, values in figures.items()}
    return {
        "sequential_on": best["seq_on"],
        "sequential_off": best["seq_off"],
        "closed_loop_on": best["tput_on"],
        "closed_loop_off": best["tput_off"],
        "latency_ratio": best["seq_on"] / best["seq_off"],
        "throughput_ratio": best["tput_on"] / best["tput_off"],
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--write", type=Path, help="update this markdown file's executor section")
    parser.add_argument("--checks", action="store_true", help="only the cost of the output checks, on vs off")
    parser.add_argument("--against", type=Path, help="another checkout (with its .venv) to compare with, side by side")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: alternating rounds per side (best kept)")
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)  # used by --against for each side
    args = parser.parse_args(argv)
    if args.against is not None:
        return compare(args)
    n = 300 if args.quick else 5000
    total = 2000 if args.quick else 60_000

    if args.checks:
        cost = output_check_cost(total, rounds=3 if args.quick else 11)
        print(f"output checks at the cell boundary, on vs off (3-cell chain, best of alternating rounds) on {machine()}")
        print(f"  sequential latency: {cost['sequential_on'] * 1e6:.1f} µs on, {cost['sequential_off'] * 1e6:.1f} µs off: "
              f"{cost['latency_ratio']:.3f}× (goal ≤ 1.05×)")
        print(f"  closed loop, 64 streams: {cost['closed_loop_on']:,.0f} req/s on, {cost['closed_loop_off']:,.0f} off: "
              f"{cost['throughput_ratio']:.3f}× (goal ≥ 0.95×)")
        return cost

    direct = per_call_seconds(three, number=n * 10)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(three).result()
        bare = per_call_seconds(lambda: pool.submit(three).result(), number=n)

    with init("debug") as rt, rt.start_inference(Inference(pipeline=chain())) as proc:
        x = Integer(1)
        for _ in range(200):
            proc.predict({"x": x}, sid="warm").result()
        seq = per_call_seconds(lambda: proc.predict({"x": x}, sid="s").result(), number=n)
        # wait() does not run cells in the waiting thread: the worker-thread path alone
        workers_only = per_call_seconds(lambda: wait([proc.predict({"x": x}, sid="s")]), number=n)
        closed = sorted(throughput_closed_loop(proc.predict, total // 3, 64) for _ in range(3))[1]
        blocking = sorted(throughput_blocking(proc.predict, total // 3, 64) for _ in range(3))[1]

    ratio = seq / bare
    rows = [
        ("direct call of 3 trivial functions", f"{direct * 1e6:.2f} µs", ""),
        ("bare ThreadPoolExecutor(1).submit(f).result()", f"{bare * 1e6:.1f} µs", "1.00×"),
        ("3-cell chain, predict().result() (sequential)", f"{seq * 1e6:.1f} µs", f"{ratio:.2f}× bare (goal ≤ 1.5×)"),
        ("3-cell chain, predict() then wait() (worker threads only)", f"{workers_only * 1e6:.1f} µs", f"{workers_only / bare:.2f}× bare, for contrast"),
        ("3-cell chain, 64 streams in flight (closed loop)", f"{closed:,.0f} req/s", "goal ≥ 30,000 req/s"),
        ("3-cell chain, 64 in flight, one thread blocking on result()", f"{blocking:,.0f} req/s", "for contrast"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"executor benchmark on {machine()}")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")
    verdict = "MET" if ratio <= 1.5 and closed >= 30_000 else "NOT MET"
    print(f"  goals: latency ratio {ratio:.2f} (≤ 1.5), throughput {closed:,.0f}/s (≥ 30,000): {verdict}")
    if args.write:
        table = "\n".join(
            ["| measurement | figure | vs. bare round trip / goal |", "| --- | ---: | --- |"]
            + [f"| {a} | {b} | {c} |" for a, b, c in rows]
        )
        write_section(
            args.write,
            "executor",
            f"### Executor overhead (debug runtime)\n\n`python benchmarks/bench_executor.py` on {machine()}:\n\n{table}\n\n"
            f"Goals (sequential latency ≤ 1.5× the bare round trip, ≥ 30,000 req/s with 64 in flight): {verdict}.\n\n"
            "Why `predict().result()` beats the bare thread-pool round trip: a caller blocked in `result()` runs "
            "the request's unstarted cells in its own thread (caller-runs), so the request costs no thread "
            "hand-off at all, where the bare pool pays two. The worker-only row (`wait()` does not run cells) "
            "shows the hand-off cost the executor avoids. The closed-loop row is 64 concurrent streams whose "
            "completion callbacks send each stream's next request, the way drivers submit; a single client "
            "thread blocking on the oldest `result()` pays one thread wake-up per request and is shown for contrast.",
        )
    figures = {"direct": direct, "bare": bare, "sequential": seq, "workers_only": workers_only, "ratio": ratio,
               "closed_loop": closed, "blocking": blocking}
    if args.json is not None:
        args.json.write_text(json.dumps(figures))
    return figures


def compare(args: argparse.Namespace) -> dict[str, float]:
    """Run this script under ``args.against``'s Python and this checkout's, alternating; print figures and ratios."""
    here = Path(__file__).resolve()
    sides = {"before": args.against.resolve() / ".venv" / "bin" / "python", "after": Path(sys.executable)}
    lower_is_better = {"direct", "bare", "sequential", "workers_only", "ratio"}
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    out = here.parent / f".bench_executor_{os.getpid()}.json"
    try:
        for _ in range(args.rounds):
            for side, python in sides.items():
                # Run from outside both checkouts, so each Python imports its own rvai_sdk.
                cmd = [str(python), str(here), "--json", str(out)] + (["--quick"] if args.quick else [])
                subprocess.run(cmd, check=True, cwd="/", timeout=1800, stdout=subprocess.DEVNULL)
                for key, value in json.loads(out.read_text()).items():
                    keep = min if key in lower_is_better else max
                    best[side][key] = keep(best[side].get(key, value), value)
    finally:
        out.unlink(missing_ok=True)
    print(f"before ({args.against}) vs after (this checkout), best of {args.rounds} alternating rounds, on {machine()}")
    ratios: dict[str, float] = {}
    for key, after in best["after"].items():
        before = best["before"][key]
        unit = "req/s" if key in ("closed_loop", "blocking") else "×" if key == "ratio" else "µs"
        scale = 1e6 if unit == "µs" else 1.0
        ratios[key] = after / before
        better = "lower is better" if key in lower_is_better else "higher is better"
        print(f"  {key:<13} {before * scale:12,.2f} -> {after * scale:12,.2f} {unit:<5}  after/before {after / before:.3f} ({better})")
    return ratios


if __name__ == "__main__":
    main()
