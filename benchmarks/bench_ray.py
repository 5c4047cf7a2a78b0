"""The ray runtime side by side with the local runtime and a Ray Serve deployment handle.

One run, one machine, one local Ray instance. For the same 1-cell pipeline
(``y = x + 1`` on an Integer) it measures:

- round trip: ``predict(...).result()`` one request at a time;
- throughput with 64 requests in flight, two ways: a closed loop (64 streams,
  each completion callback sends that stream's next request, as drivers do)
  and a window (one thread keeps 64 requests out, blocking on the oldest);

on ``init("ray")`` (1 replica), ``init("local")`` when that runtime is
available, and a Ray Serve deployment doing the same arithmetic through its
``DeploymentHandle`` when ``ray.serve`` imports (``pip install 'ray[serve]'``).
Goal (issue: the Ray runtime): the ray runtime's throughput >= Ray Serve's
handle throughput.

    python benchmarks/bench_ray.py [--quick] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import machine, per_call_seconds, write_section  # noqa: E402

from rvai_sdk.cell import Cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import RUNTIMES, Inference, init  # noqa: E402
from rvai_sdk.types import Integer  # noqa: E402

IN_FLIGHT = 64


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


class Inc(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        return Out(y=inputs.x + 1)


def one_cell() -> Pipeline:
    pf = PipelineFactory(name="bench-ray")
    inc = pf.add_cell(ref="inc", cell=Inc())
    pf.declare_input(ref="x", input=inc.inputs.x)
    pf.declare_output(ref="y", output=inc.outputs.y)
    return pf.build()


Submit = Callable[[int, int], Future]  # (x, stream) -> future of the answer


def closed_loop(submit: Submit, total: int, in_flight: int = IN_FLIGHT) -> float:
    """``in_flight`` streams; each completion callback sends that stream's next request. Requests/s."""
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
        submit(i, i % in_flight).add_done_callback(on_done)

    start = time.perf_counter()
    for i in range(in_flight):
        submit(i, i).add_done_callback(on_done)
    if not finished.wait(timeout=600):
        raise TimeoutError("the closed loop did not finish within 600 s")
    if errors:
        raise errors[0]
    return total / (time.perf_counter() - start)


def window(send: Callable[[int, int], Any], wait_one: Callable[[Any], Any], total: int, in_flight: int = IN_FLIGHT) -> float:
    """One thread keeps ``in_flight`` requests out, blocking on the oldest. Requests/s."""
    pending: deque[Any] = deque()
    start = time.perf_counter()
    for i in range(total):
        if len(pending) >= in_flight:
            wait_one(pending.popleft())
        pending.append(send(i, i % in_flight))
    while pending:
        wait_one(pending.popleft())
    return total / (time.perf_counter() - start)


def median_of_3(fn: Callable[[], float]) -> float:
    return sorted(fn() for _ in range(3))[1]


def bench_runtime(name: str, n: int, total: int, **options: Any) -> dict[str, float]:
    """Round trip and throughput of ``init(name)`` on the 1-cell pipeline."""
    with init(name, **options) as rt, rt.start_inference(Inference(pipeline=one_cell())) as proc:
        x = Integer(1)
        for i in range(300):
            proc.predict({"x": x}, sid=f"s{i % IN_FLIGHT}").result()

        def submit(i: int, stream: int) -> Future:
            return proc.predict({"x": i}, sid=f"s{stream}")

        rtt = per_call_seconds(lambda: proc.predict({"x": x}, sid="s").result(), number=n)
        closed = median_of_3(lambda: closed_loop(submit, total))
        win = median_of_3(lambda: window(submit, lambda f: f.result(), total))
    return {"rtt": rtt, "closed": closed, "window": win}


def bench_serve(n: int, total: int) -> dict[str, float] | None:
    """The same arithmetic as a Ray Serve deployment called through its handle; None without Ray Serve.

    Its closed loop is 64 asyncio streams each awaiting ``handle.remote(x)`` (Serve's
    own concurrent path); its window is one thread blocking on the oldest ``.result()``.
    """
    try:
        from ray import serve
    except ImportError as exc:
        print(f"  (Ray Serve is not importable: {exc}; skipping it)")
        return None

    @serve.deployment(max_ongoing_requests=1000, num_replicas=1)
    class IncDeployment:
        def __call__(self, x: int) -> int:
            return x + 1

    serve.start(http_options={"location": "NoServer"})
    try:
        handle = serve.run(IncDeployment.bind(), name="bench-inc", route_prefix=None)
        for i in range(300):
            handle.remote(i).result()

        async def streams(total: int) -> float:
            numbers = iter(range(total))

            async def stream() -> None:
                for i in numbers:
                    await handle.remote(i)

            begin = time.perf_counter()
            await asyncio.gather(*[stream() for _ in range(IN_FLIGHT)])
            return total / (time.perf_counter() - begin)

        rtt = per_call_seconds(lambda: handle.remote(1).result(), number=n)
        # Serve's own high-throughput path: 64 asyncio streams awaiting the handle
        closed = median_of_3(lambda: asyncio.run(streams(total)))
        win = median_of_3(lambda: window(lambda i, s: handle.remote(i), lambda r: r.result(), total))
    finally:
        serve.shutdown()
    return {"rtt": rtt, "closed": closed, "window": win}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float] | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    parser.add_argument("--write", type=Path, help="update this markdown file's ray section")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    args = parser.parse_args(argv)
    n = 100 if args.quick else 1000
    total = 1000 if args.quick else 6000

    import ray

    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        results: dict[str, dict[str, float] | None] = {}
        results["ray"] = bench_runtime("ray", n, total)
        print(f"  ray done: {results['ray']}", flush=True)
        results["local"] = None
        if "local" in RUNTIMES:
            try:
                results["local"] = bench_runtime("local", n, total)
                print(f"  local done: {results['local']}", flush=True)
            except Exception as exc:  # the local runtime is not ready on this checkout
                print(f"  (local runtime failed: {type(exc).__name__}: {exc}; skipping it)")
        results["serve"] = bench_serve(n, total)
    finally:
        ray.shutdown()

    labels = {"ray": 'init("ray"), 1 replica', "local": 'init("local")', "serve": "Ray Serve DeploymentHandle, 1 replica"}
    rows = []
    for key, label in labels.items():
        figures = results[key]
        if figures is None:
            rows.append((label, "n/a", "n/a", "n/a"))
            continue
        rows.append(
            (
                label,
                f"{figures['rtt'] * 1e3:.2f} ms",
                f"{figures['closed']:,.0f} req/s",
                f"{figures['window']:,.0f} req/s",
            )
        )
    print(f"ray benchmark on {machine()}, 1-cell pipeline, {IN_FLIGHT} in flight")
    header = ("", "round trip", "closed loop", "window")
    width = max(len(r[0]) for r in rows)
    print(f"  {header[0]:<{width}}  {header[1]:>12}  {header[2]:>16}  {header[3]:>16}")
    for row in rows:
        print(f"  {row[0]:<{width}}  {row[1]:>12}  {row[2]:>16}  {row[3]:>16}")
    ray_figures = results["ray"]
    assert ray_figures is not None
    ratios = []
    for key in ("local", "serve"):
        other = results[key]
        if other is None:
            continue
        best_other = max(v for k, v in other.items() if k != "rtt" and v == v)
        best_ray = max(ray_figures["closed"], ray_figures["window"])
        ratios.append(
            f"ray/{key}: round trip {ray_figures['rtt'] / other['rtt']:.2f}x, "
            f"best throughput {best_ray / best_other:.2f}x"
        )
    for line in ratios:
        print(f"  {line}")
    serve = results["serve"]
    verdict = "not measured (no Ray Serve)"
    if serve is not None:
        best_serve = max(v for k, v in serve.items() if k != "rtt" and v == v)
        met = max(ray_figures["closed"], ray_figures["window"]) >= best_serve
        verdict = "MET" if met else "NOT MET"
    print(f"  goal: ray runtime throughput >= Ray Serve handle throughput: {verdict}")
    if args.write:
        table = "\n".join(
            ["| runtime | round trip | 64 in flight, closed loop | 64 in flight, window |", "| --- | ---: | ---: | ---: |"]
            + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        )
        write_section(
            args.write,
            "ray",
            f"### Ray runtime vs local runtime vs Ray Serve\n\n`python benchmarks/bench_ray.py` on {machine()}:\n\n"
            f"{table}\n\n" + "\n".join(f"- {line}" for line in ratios) + f"\n\nGoal (ray throughput ≥ Ray Serve handle): {verdict}.\n",
        )
    return results


if __name__ == "__main__":
    main()
