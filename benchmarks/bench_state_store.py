"""The cost of durable per-sid state (issue 15): checkpoint-every on SQLite and Redis against memory.

1. Batching with checkpoints: the batching benchmark's cell (a ``call_batch`` cell costing
   ``a + b * batch`` seconds of GIL-free waiting, 32 closed-loop streams with their own sids),
   made stateful (each call counts per sid), served with ``state_store=None`` (memory),
   ``SqliteStateStore(checkpoint="every")`` and ``RedisStateStore(checkpoint="every")``.
   Rounds alternate between the stores; the median rate of each is compared with memory's.
   Goal: >= 85% of the in-memory rate.
2. Restore: 10,000 sids checkpointed by one process; a fresh one serves one request per sid
   (each restores its sid from the store), against the same 10,000 requests starting fresh in
   memory. Reports seconds for all 10,000 and the ratio.

Runs on the debug runtime (the executor in this process) by default; ``--runtime local``
puts it in a spawned inference process.

    python benchmarks/bench_state_store.py [--quick] [--runtime debug] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402
from bench_batching import CostParameters, In, Out, closed_loop  # noqa: E402

from rvai_sdk.cell import Cell, cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Parameters, State  # noqa: E402
from rvai_sdk.execution.state_store import RedisStateStore, SqliteStateStore  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402
from rvai_sdk.types import Integer  # noqa: E402

GOAL = 0.85
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Tally(State):
    n: Integer = State.field(default=Integer(0))


@cell(state=Tally, max_batch_size=32, max_batch_wait=0.005)
class CountingLinearCost(Cell):
    """bench_batching's LinearCost, counting requests per sid."""

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: CostParameters, inputs_list: Sequence[In]
    ) -> list[Out]:
        time.sleep(parameters.a + parameters.b * len(inputs_list))
        for context in contexts:
            context.state.n = Integer(context.state.n + 1)
        return [Out(y=i.x) for i in inputs_list]


@cell(state=Tally)
class CountOne(Cell):
    """Counts requests per sid; nothing else (restores dominate)."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        context.state.n = Integer(context.state.n + 1)
        return Out(y=context.state.n)


def _single(cell_cls: type[Cell], name: str) -> Pipeline:
    pf = PipelineFactory(name=name)
    c = pf.add_cell(ref="c", cell=cell_cls())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    return pf.build()


def _stores(tmp: Path) -> dict[str, Any]:
    prefix = f"rvai-bench:{uuid.uuid4().hex}:"
    return {
        "memory": None,
        "sqlite": SqliteStateStore(tmp / f"{uuid.uuid4().hex}.db"),
        "redis": RedisStateStore(REDIS_URL, prefix=prefix),
    }


def _cleanup_redis(store: Any) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for chunk in _chunks(list(client.scan_iter(f"{store.prefix}*", count=5000)), 5000):
        client.delete(*chunk)
    client.close()


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def bench_batching(runtime: str, rounds: int, requests: int, tmp: Path) -> dict[str, float]:
    """Median closed-loop rate per store, rounds interleaved."""
    stores = _stores(tmp)
    rates: dict[str, list[float]] = {name: [] for name in stores}
    pipeline = _single(CountingLinearCost, "bench-state-batching")
    with init(runtime) as rt:
        procs = {name: rt.start_inference(Inference(pipeline=pipeline, state_store=store)) for name, store in stores.items()}
        try:
            for _ in range(rounds):
                for name, proc in procs.items():
                    rates[name].append(closed_loop(proc.predict, streams=32, rounds=requests, warmup=3).rate)
        finally:
            for proc in procs.values():
                proc.stop()
    _cleanup_redis(stores["redis"])
    return {name: statistics.median(values) for name, values in rates.items()}


def bench_restore(runtime: str, sids: int, tmp: Path) -> dict[str, float]:
    """Seconds to serve one request for each of ``sids`` sids, restored from each store (memory: fresh)."""
    stores = _stores(tmp)
    pipeline = _single(CountOne, "bench-state-restore")
    seconds: dict[str, float] = {}
    names = [f"sid-{i}" for i in range(sids)]
    for name, store in stores.items():
        if store is not None:  # the checkpoints a first process left: counter 1 for every sid
            opened = store.open(None)
            blob = {"c": __import__("rvai_sdk.execution.state_store", fromlist=["dump_state"]).dump_state(Tally(n=Integer(1)))}
            for chunk in _chunks(names, 1000):
                opened.save([(sid, 1, blob, time.time()) for sid in chunk])
            opened.close()
        with init(runtime) as rt, rt.start_inference(Inference(pipeline=pipeline, state_store=store)) as proc:
            proc.predict({"x": 0}, sid="warm-up").result()
            start = time.perf_counter()
            futures: list[Future[Any]] = [proc.predict({"x": 0}, sid=sid) for sid in names]
            values = [f.result(timeout=600)["y"] for f in futures]
            seconds[name] = time.perf_counter() - start
        expected = 1 if store is None else 2
        if any(v != expected for v in values):
            raise AssertionError(f"{name}: a sid did not continue from its checkpoint")
    _cleanup_redis(stores["redis"])
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sids (a smoke run)")
    parser.add_argument("--runtime", default="debug")
    parser.add_argument("--write", type=Path, help="write the tables into this markdown file (docs/performance.md)")
    args = parser.parse_args(argv)
    rounds, requests, sids = (1, 10, 1000) if args.quick else (3, 40, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        rates = bench_batching(args.runtime, rounds, requests, Path(tmp))
        restore = bench_restore(args.runtime, sids, Path(tmp))
    lines = [
        f"Machine: {machine()}; runtime `{args.runtime}`; `python benchmarks/bench_state_store.py"
        f"{' --quick' if args.quick else ''} --runtime {args.runtime}`.",
        "",
        f"Batching (32 closed-loop streams, stateful batched cell, median of {rounds} interleaved rounds), "
        f"checkpoint-every against memory (goal >= {GOAL:.0%}):",
        "",
        "| store | requests/s | vs memory |",
        "| --- | ---: | ---: |",
    ]
    for name, rate in rates.items():
        ratio = rate / rates["memory"]
        mark = "" if name == "memory" else (" (goal met)" if ratio >= GOAL else " (below goal)")
        lines.append(f"| {name} | {rate:,.0f} | {ratio:.2f}{mark} |")
    lines += [
        "",
        f"Restore: one request for each of {sids:,} sids in a fresh process, each restoring its sid's checkpoint "
        "and writing its new one (memory: every sid starts fresh, nothing is written):",
        "",
        "| store | seconds | µs per sid | vs memory |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, secs in restore.items():
        lines.append(f"| {name} | {secs:.2f} | {secs / sids * 1e6:,.0f} | {secs / restore['memory']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        name = "state_store" if args.runtime == "debug" else f"state_store_{args.runtime}"
        title = "## Durable state (issue 15)" if args.runtime == "debug" else f"### Durable state on `{args.runtime}`"
        write_section(args.write, name, f"{title}\n\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
