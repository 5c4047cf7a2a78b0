"""The cost of ``set_replicas`` handing sids over on the ray runtime (issue 15, item 3).

One run, one machine, one local Ray instance. A one-cell counting pipeline holds a
state for each of ``--sids`` sids on one replica; then, for the state in memory and in
an SQLite state store:

- ``set_replicas(3)`` and ``set_replicas(1)`` with those sids idle, side by side with the
  same changes with no sid kept: the whole call, and its hand-over phase alone (from the
  new set's publication to the end of the take-over; about 2/3 of the sids move each way);
- the pause a sid sees: ``--streams`` closed-loop streams (each sends its sid's next
  request when the previous one answered) run through 1 -> 3 -> 1; for each stream, the
  longest gap between two of its responses that overlaps the hand-over phase, for the
  sids that move and for those that stay, against the median gap at steady state.

    python benchmarks/bench_rescale.py [--quick] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.cell import Cell, cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters, State  # noqa: E402
from rvai_sdk.execution.state_store import SqliteStateStore  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402
from rvai_sdk.types import Integer  # noqa: E402


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    count: Integer = Outputs.field()


@dataclass
class Tally(State):
    n: Integer = State.field(default=Integer(0))


@cell(state=Tally)
class Count(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        context.state.n = Integer(context.state.n + 1)
        return Out(count=context.state.n)


def counting() -> Pipeline:
    pf = PipelineFactory(name="bench-rescale")
    c = pf.add_cell(ref="c", cell=Count())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="count", output=c.outputs.count)
    return pf.build()


def fill(proc: Any, sids: int) -> None:
    """One request for each of ``sids`` sids, 512 in flight at a time."""
    for start in range(0, sids, 512):
        futures = [proc.predict({"x": 0}, sid=f"s{i}") for i in range(start, min(sids, start + 512))]
        for future in futures:
            future.result(timeout=120)


def timed_rescale(rt: Any, inference: Inference, sids: int) -> list[tuple[float, float]]:
    """(whole call, hand-over phase) seconds of set_replicas(3), then set_replicas(1), with ``sids`` idle sids kept."""
    out = []
    with rt.start_inference(inference) as proc:
        fill(proc, sids)
        for n in (3, 1):
            start = time.perf_counter()
            proc.set_replicas(n)
            out.append((time.perf_counter() - start, proc._backend.last_rescale["hand_over"]))
        if sids:
            assert len(proc.sids()) == sids, "a sid was lost"
            assert int(proc.predict({"x": 0}, sid="s0").result(timeout=60)["count"]) == 2
    return out


class Streams:
    """Closed-loop streams, one sid each; records each sid's response times."""

    def __init__(self, proc: Any, streams: int) -> None:
        self.proc = proc
        self.times: dict[str, list[float]] = {f"live{i}": [] for i in range(streams)}
        self.counts: dict[str, int] = {sid: 0 for sid in self.times}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.idle = threading.Semaphore(0)
        self.lock = threading.Lock()

    def start(self) -> None:
        for sid in self.times:
            self._send(sid)

    def _send(self, sid: str) -> None:
        if self.stop.is_set() or len(self.times[sid]) >= 200_000:
            self.idle.release()
            return
        self.proc.predict({"x": 0}, sid=sid).add_done_callback(lambda f, sid=sid: self._done(sid, f))

    def _done(self, sid: str, future: Any) -> None:
        try:
            count = int(future.result()["count"])
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{sid}: {exc}")
            self.idle.release()
            return
        with self.lock:
            self.counts[sid] += 1
            if count != self.counts[sid]:
                self.errors.append(f"{sid}: counted {count}, expected {self.counts[sid]}")
            self.times[sid].append(time.perf_counter())
        self._send(sid)

    def finish(self) -> None:
        self.stop.set()
        for _ in self.times:
            if not self.idle.acquire(timeout=60):
                raise RuntimeError("a stream did not finish")


def pauses(rt: Any, inference: Inference, streams: int, steady: float) -> dict[str, float]:
    """Steady median gap and, over the two hand-overs, each stream's longest gap: median and worst, moved or not (ms)."""
    from rvai_sdk.transport.ray_link import rendezvous

    with rt.start_inference(inference) as proc:
        load = Streams(proc, streams)
        load.start()
        time.sleep(steady)  # a benchmark: steady state before the change
        windows = []
        for n in (3, 1):
            proc.set_replicas(n)
            timing = proc._backend.last_rescale
            windows.append((timing["hand_over_began"], timing["hand_over_ended"]))
            time.sleep(steady)
        load.finish()
        if load.errors:
            raise RuntimeError(f"a stream failed or counted wrong: {load.errors[:3]}")
        gaps: list[float] = []
        longest: dict[bool, list[float]] = {True: [], False: []}
        for sid, stamps in load.times.items():
            moves = rendezvous(sid, [0, 1, 2]) != 0  # it moves 1 -> 3 and back 3 -> 1
            steps = list(zip(stamps, stamps[1:]))
            gaps += [b - a for a, b in steps if b < windows[0][0]]
            for begin, end in windows:
                during = [b - a for a, b in steps if b >= begin and a <= end]
                if during:
                    longest[moves].append(max(during))
    ms = 1e3
    return {
        "steady": statistics.median(gaps) * ms,
        "moved_median": statistics.median(longest[True]) * ms,
        "moved_max": max(longest[True]) * ms,
        "stayed_median": statistics.median(longest[False]) * ms if longest[False] else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sids and streams (a smoke run)")
    parser.add_argument("--sids", type=int, default=None, help="idle sids kept before the changes (default 5000)")
    parser.add_argument("--streams", type=int, default=None, help="closed-loop streams for the pause (default 32)")
    parser.add_argument("--write", type=Path, default=None, help="write the table into this markdown file")
    args = parser.parse_args(argv)
    sids = args.sids or (300 if args.quick else 5000)
    streams = args.streams or (8 if args.quick else 32)
    steady = 1.0 if args.quick else 3.0
    folder = Path(tempfile.mkdtemp(prefix="bench-rescale-"))
    rows = []
    rt = init("ray", num_cpus=4, log_to_driver=False)
    try:
        for name, store in (("memory", None), ("SQLite", "sqlite")):

            def inference(tag: str, store: str | None = store) -> Inference:
                state_store = None if store is None else SqliteStateStore(folder / f"{tag}.db")
                return Inference(pipeline=counting(), state_store=state_store)

            empty = timed_rescale(rt, inference("empty"), 0)
            full = timed_rescale(rt, inference("full"), sids)
            pause = pauses(rt, inference("live"), streams, steady)
            rows.append((name, empty, full, pause))
            print(f"{name}: without sids {empty}, with {sids} sids {full} (whole call, hand-over) s; pause (ms) {pause}",
                  flush=True)
    finally:
        rt.stop()
    lines = [
        f"`set_replicas` with {sids} idle sids kept (about 2/3 of them move each way) against the same change with "
        "none: the whole call (1 -> 3 includes starting two replicas) and its hand-over phase (publishing the new "
        "set, the take-over of every moved sid, the end of the hand-over). Then the pause a sid sees with "
        f"{streams} closed-loop streams running through 1 -> 3 -> 1: each stream's longest gap between two of its "
        "responses overlapping a hand-over phase (median and worst over the streams whose sid moves; median over "
        f"those whose sid stays), against the median gap at steady state. {machine()}; "
        f"`python benchmarks/bench_rescale.py{' --quick' if args.quick else ''}`.",
        "",
        "| state | 1 -> 3, no sids | 1 -> 3, with sids | 3 -> 1, no sids | 3 -> 1, with sids "
        "| steady gap | longest gap: moved, median | moved, worst | stayed, median |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(whole: float, hand_over: float) -> str:
        return f"{whole:.2f} s (hand-over {hand_over * 1e3:.0f} ms)"

    for name, empty, full, pause in rows:
        lines.append(
            f"| {name} | {cell(*empty[0])} | {cell(*full[0])} | {cell(*empty[1])} | {cell(*full[1])} "
            f"| {pause['steady']:.1f} ms | {pause['moved_median']:.0f} ms | {pause['moved_max']:.0f} ms "
            f"| {pause['stayed_median']:.0f} ms |"
        )
    text = "\n".join(lines)
    print(text)
    if args.write is not None:
        write_section(args.write, "rescale", f"## Rescaling with hand-over (ray)\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
