"""The cost of stream positions (issue 15, item 6): SourceSinkDriver throughput with a position store vs without.

Four endless ``DummySource`` streams (``rate=0``: as fast as the pipeline takes them) →
a trivial cell → a ``DummySink`` that drops each record (a sink that keeps no positions,
so the position store is the only bookkeeping), on the chosen runtime (``local`` by
default: the driver in its own process, as in production). Three variants side by side
in one run, rounds interleaved so drifting load hits all alike:

* ``none``: no position store (what every stream did before);
* ``sqlite``: ``position_store=<file>`` (defaults: a write per 100 acknowledged items or
  per second, ``synchronous=FULL``);
* ``redis``: ``position_store="redis://127.0.0.1:6379/0"`` (skipped when no server answers).

Reports the median steady-state rate (records acknowledged per second over a window after
a warm-up) and the ratio to ``none``, and how many store writes a round made.

    python benchmarks/bench_stream_positions.py [--quick] [--runtime local|debug] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.cell import Cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402
from rvai_sdk.types import FloatRange, Integer  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
SOURCES = 4


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


class Echo(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        return Out(y=inputs.x)


def pipeline(name: str) -> Pipeline:
    pf = PipelineFactory(name=name)
    echo = pf.add_cell(ref="echo", cell=Echo())
    pf.declare_input(ref="x", input=echo.inputs.x)
    pf.declare_output(ref="y", output=echo.outputs.y)
    return pf.build()


def discard(record: Any) -> None:
    """The DummySink drain: drop the record."""


def redis_available() -> bool:
    try:
        import redis
    except ImportError:
        return False
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def written(stats: dict[str, Any]) -> int:
    return sum(int(entry["written"]) for entry in stats["sources"].values())


def one_round(proc: Any, store: str | None, warmup: float, window: float, round_no: int) -> tuple[float, int]:
    """Records per second written by every sink over ``window`` seconds after ``warmup``; and the store writes made."""
    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.dummy_sink import DummySink
    from rvai_sdk.extensions.sources.dummy_source import DummySource

    sources = {
        f"s{i}-{round_no}": DummySource(params=DummySource.parameters(rate=FloatRange(0), seed=i)) for i in range(SOURCES)
    }
    handle = proc.add_driver(
        f"bench-{round_no}", SourceSinkDriver, sources=sources, sinks={"drop": DummySink(drain=discard)}, position_store=store
    )
    try:
        time.sleep(warmup)
        start_n, start_t = written(handle.stats()), time.perf_counter()
        time.sleep(window)
        stats = handle.stats()
        rate = (written(stats) - start_n) / (time.perf_counter() - start_t)
        writes = 0 if stats["positions"] is None else int(stats["positions"]["writes"])
    finally:
        proc.remove_driver(handle.pid)
    return rate, writes


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one short round each (a smoke run)")
    parser.add_argument("--runtime", default="local")
    parser.add_argument("--write", type=Path, help="write the table into this markdown file (docs/performance.md)")
    args = parser.parse_args(argv)
    rounds, warmup, window = (1, 0.5, 1.0) if args.quick else (5, 1.5, 4.0)
    workdir = Path(tempfile.mkdtemp(prefix="bench-positions-"))
    name = f"bench-positions-{uuid.uuid4().hex[:8]}"
    variants: dict[str, str | None] = {"none": None, "sqlite": str(workdir / "positions.db")}
    if redis_available():
        variants["redis"] = REDIS_URL
    else:
        print(f"redis: skipped (no server at {REDIS_URL})")
    rates: dict[str, list[float]] = {v: [] for v in variants}
    writes: dict[str, list[int]] = {v: [] for v in variants}
    n = 0
    with init(args.runtime) as rt, rt.start_inference(Inference(pipeline=pipeline(name))) as proc:
        for _ in range(rounds):
            for variant, store in variants.items():
                n += 1
                rate, made = one_round(proc, store, warmup, window, n)
                rates[variant].append(rate)
                writes[variant].append(made)
                print(f"  {variant}: {rate:,.0f} records/s, {made} store writes", flush=True)
    if "redis" in variants:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(f"rvai:positions:{name}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    base = statistics.median(rates["none"])
    lines = [
        f"Machine: {machine()}; runtime `{args.runtime}`; `python benchmarks/bench_stream_positions.py --runtime {args.runtime}`.",
        "",
        f"{SOURCES} endless DummySource streams → a trivial cell → a DummySink that drops each record; median of "
        f"{rounds} interleaved rounds of {window:g} s after {warmup:g} s of warm-up; defaults `position_every=100`, "
        "`position_interval=1`.",
        "",
        "| position store | records/s | vs none | store writes per round |",
        "| --- | ---: | ---: | ---: |",
    ]
    result: dict[str, float] = {}
    for variant in variants:
        rate = statistics.median(rates[variant])
        ratio = rate / base if base else 0.0
        result[f"ratio_{variant}"] = ratio
        lines.append(f"| {variant} | {rate:,.0f} | {ratio:.2f} | {statistics.median(writes[variant]):.0f} |")
    text = "\n".join(lines)
    print(text)
    print("ratios: " + ", ".join(f"{v} {result[f'ratio_{v}']:.2f}" for v in variants))
    if args.write is not None:
        write_section(args.write, "stream_positions", f"## Stream positions\n\nThe cost of a position store (issue 15, item 6).\n\n{text}")
    return result


if __name__ == "__main__":
    main()
