"""What tracing costs per request: off (the goal: at most 2% over the tree before tracing), and on.

Measures CPU time per request, not wall time, so that other work on a loaded machine
skews the figures less: a process's CPU time counts only what it ran itself.

(a) debug runtime, a 3-cell chain, ``predict().result()`` one after another: the
    calling process's CPU time per request (handle, executor, the three cells);
(b) local runtime, the same chain: the CPU time of the calling process and of the
    inference process together per request (``predict``, the Unix-socket link, the
    inference server, the executor).

Each figure is taken, in alternated rounds in one run, under this checkout with
tracing off ("after"), under ``--before DIR``'s Python (``DIR/.venv/bin/python``: the
tree before tracing, e.g. ``git worktree add /tmp/before <commit>`` and ``make venv``
there) when given, and under this checkout with tracing on (the ``file`` exporter
into a temporary folder, every span written as it ends): medians of ``--rounds``.
Prints µs per request and the ratios after/before and on/off.

    python benchmarks/bench_tracing.py [--before DIR] [--requests 3000] [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine  # noqa: E402


def measure(requests: int, trace: bool) -> dict[str, float]:
    """In this interpreter: CPU µs per request on debug and on local (parent and inference process)."""
    import psutil

    from _toys import inc_chain
    from rvai_sdk.runtime import Inference, init

    if trace:
        from rvai_sdk.tracing import configure_tracing

        configure_tracing("file", path=tempfile.mkdtemp(prefix="rvai-bench-spans-"))
    figures: dict[str, float] = {}
    pipeline = inc_chain(3, "bench")
    for runtime in ("debug", "local"):
        with init(runtime) as rt, rt.start_inference(Inference(pipeline=pipeline)) as proc:
            for n in range(200):  # warm up
                proc.predict({"x": n}).result()
            child = psutil.Process(proc.pid) if runtime == "local" and proc.pid not in (None, os.getpid()) else None
            child_before = sum(child.cpu_times()[:2]) if child is not None else 0.0
            start = time.process_time()
            for n in range(requests):
                proc.predict({"x": n}).result()
            used = time.process_time() - start
            if child is not None:
                used += sum(child.cpu_times()[:2]) - child_before
            figures[runtime] = used / requests * 1e6
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=os.environ.get("RVAI_BENCH_BEFORE", ""), help="a checkout with its own .venv")
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement (default 3000)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds; medians reported (default 7)")
    parser.add_argument("--quick", action="store_true", help="300 requests, 1 round (smoke test)")
    parser.add_argument("--measure", choices=["off", "on"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 300, 1
    if args.measure:
        print(json.dumps(measure(args.requests, args.measure == "on")))
        return {}
    here = str(Path(__file__).resolve())
    sides: dict[str, list[str]] = {"after": [sys.executable, here, "--measure", "off"]}
    if args.before:
        sides["before"] = [str(Path(args.before, ".venv", "bin", "python")), here, "--measure", "off"]
    sides["on"] = [sys.executable, here, "--measure", "on"]
    results: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for side, command in sides.items():
            # from outside both checkouts, so that each Python imports its own rvai_sdk
            out = subprocess.run(command + ["--requests", str(args.requests)], check=True, capture_output=True,
                                 text=True, cwd="/", timeout=900)
            for key, value in json.loads(out.stdout.strip().splitlines()[-1]).items():
                results[side].setdefault(key, []).append(value)
    median = {side: {key: statistics.median(values) for key, values in figures.items()} for side, figures in results.items()}
    print(f"CPU time per request, medians of {args.rounds} alternated rounds of {args.requests} requests, on {machine()}")
    print(f"(load average before/after: {load:.1f}/{os.getloadavg()[0]:.1f})")
    ratios: dict[str, float] = {}
    for key, label in (("debug", "debug, 3-cell chain"), ("local", "local, 3-cell chain (both processes)")):
        after, on = median["after"][key], median["on"][key]
        line = f"  {label:<40} off {after:8.1f} µs   on {on:8.1f} µs (on/off {on / after:.2f})"
        ratios[f"{key}_on_over_off"] = on / after
        if "before" in median:
            before = median["before"][key]
            ratios[f"{key}_off_over_before"] = after / before
            line += f"   before {before:8.1f} µs (off/before {after / before:.3f})"
        print(line)
    if "before" in median:
        worst = max(ratios["debug_off_over_before"], ratios["local_off_over_before"])
        print(f"  goal: tracing off costs <= 2% over before: worst off/before {worst:.3f}: {'met' if worst <= 1.02 else 'NOT met'}")
    return ratios


if __name__ == "__main__":
    main()
