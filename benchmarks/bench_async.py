"""Async cells side by side with sync cells, on the debug runtime, in one run: what the event loop costs and buys.

1. Overhead: a trivial cell (no I/O), ``def call`` vs ``async def call``, 8 streams
   in flight (closed loop: each stream sends its next request when the previous one
   completes). The async cell's coroutine runs on the process's event loop while
   the worker waits: one thread hop each way. Reported: mean latency per request
   and the async/sync ratio.
2. I/O: a cell that waits ``--wait`` seconds for "another service" (``time.sleep``
   in the sync cell, ``asyncio.sleep`` in the async one) with ``concurrency=8``, and
   the sync cell with ``concurrency=1`` as the baseline, 8 streams in flight.
   The ideal is ``8 / wait`` requests/s with concurrency 8. Reported: requests/s and
   ratios.

    python benchmarks/bench_async.py [--quick] [--rounds 3] [--wait 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Integer

STREAMS = 8
WAIT = [0.01]  # set from --wait before any cell runs


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


class SyncTrivial(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        return Out(y=inputs.x)


class AsyncTrivial(Cell):
    @classmethod
    async def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        return Out(y=inputs.x)


@cell(concurrency=1)
class SyncIO1(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        time.sleep(WAIT[0])
        return Out(y=inputs.x)


@cell(concurrency=STREAMS)
class SyncIO8(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        time.sleep(WAIT[0])
        return Out(y=inputs.x)


@cell(concurrency=STREAMS)
class AsyncIO8(Cell):
    @classmethod
    async def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        await asyncio.sleep(WAIT[0])
        return Out(y=inputs.x)


def single(cls: type[Cell]) -> Pipeline:
    pf = PipelineFactory(name=cls.__name__)
    c = pf.add_cell(ref="c", cell=cls())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    return pf.build()


def closed_loop(cls: type[Cell], requests: int, timeout: float = 120.0) -> tuple[float, float]:
    """``requests`` in all over STREAMS closed-loop streams: (requests/s, mean latency in s)."""
    per_stream = max(1, requests // STREAMS)
    latencies: list[float] = []
    lock = threading.Lock()
    finished = threading.Event()
    left = [STREAMS]

    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(cls))) as proc:
        proc.predict({"x": 0}).result()  # warm up (the loop thread starts on the first async call)

        def send(sid: str, n: int) -> None:
            sent = time.perf_counter()

            def done(_: Any) -> None:
                with lock:
                    latencies.append(time.perf_counter() - sent)
                if n + 1 < per_stream:
                    send(sid, n + 1)
                else:
                    with lock:
                        left[0] -= 1
                        if not left[0]:
                            finished.set()

            proc.predict({"x": n}, sid=sid).add_done_callback(done)

        started = time.perf_counter()
        for s in range(STREAMS):
            send(f"s{s}", 0)
        if not finished.wait(timeout):
            raise SystemExit(f"{cls.__name__}: not finished within {timeout} s")
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, sum(latencies) / len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each case's median round is reported")
    parser.add_argument("--wait", type=float, default=0.01, help="seconds each I/O call waits (default 0.01)")
    args = parser.parse_args()
    WAIT[0] = args.wait
    trivial = 400 if args.quick else 4000
    io = 80 if args.quick else 800

    cases = (
        ("trivial, def call", SyncTrivial, trivial),
        ("trivial, async def call", AsyncTrivial, trivial),
        ("I/O, def call, concurrency 1", SyncIO1, io // 4),
        ("I/O, def call, concurrency 8", SyncIO8, io),
        ("I/O, async def call, concurrency 8", AsyncIO8, io),
    )
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
    for _ in range(args.rounds):  # rounds alternate the cases: a noisy moment hits all of them alike
        for name, cls, n in cases:
            runs[name].append(closed_loop(cls, n))
    rows = {name: sorted(found)[len(found) // 2] for name, found in runs.items()}  # the median round by rate
    ideal = STREAMS / args.wait
    print(f"{STREAMS} closed-loop streams, debug runtime, median of {args.rounds} rounds; I/O waits {args.wait * 1000:g} ms (ideal with concurrency 8: {ideal:.0f}/s)")
    print("| case | requests/s | mean latency |\n| --- | ---: | ---: |")
    for name, (rate, latency) in rows.items():
        print(f"| {name} | {rate:,.0f} | {latency * 1e6:,.0f} µs |")
    sync_t, async_t = rows["trivial, def call"], rows["trivial, async def call"]
    print(
        f"ratios: trivial async/sync latency {async_t[1] / sync_t[1]:.2f} "
        f"(+{(async_t[1] - sync_t[1]) * 1e6:.0f} µs per call through the event loop); "
        f"I/O async c8 / sync c8 rate {rows['I/O, async def call, concurrency 8'][0] / rows['I/O, def call, concurrency 8'][0]:.2f}; "
        f"I/O async c8 / sync c1 rate {rows['I/O, async def call, concurrency 8'][0] / rows['I/O, def call, concurrency 1'][0]:.2f}; "
        f"async c8 at {rows['I/O, async def call, concurrency 8'][0] / ideal:.0%} of ideal"
    )



if __name__ == "__main__":
    main()
