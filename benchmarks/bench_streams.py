"""Thousands of streams: does the cost per request stay flat as streams in flight grow? (issue 21)

N closed-loop streams, each with its own sid, send their next request from the
completion callback of the previous one (as the drivers do: a
``RestrictedInferenceProcess.submit`` of validated inputs), into a pipeline of
one zero-cost *stateful* cell (it counts the stream's requests in its state):

- ``plain``: an ordinary cell (``call``);
- ``batched``: a ``call_batch`` cell (``max_batch_size`` 64, ``max_batch_wait`` 5 ms).

For every stream count it measures, over a window after a warm-up: req/s, the
client-side p50/p99 latency, what Little's law gives for the latency at that
throughput (N / req/s: in a closed loop with no think time this is the mean
latency), the resident memory (RSS) of each process and the CPU each process
spent per request (client: this process; inference: the inference process on
``local``, each replica on ``ray``).

This process plays the driver host: its garbage collector is set as the SDK sets
it in driver processes and inference processes (``tune_for_serving``);
``--client-gc default`` keeps Python's defaults, as in a user's own process.

``--profile N`` samples the inference process with py-spy (from the virtualenv)
while N streams run and prints where its time goes (self time by function, and
the hot-path frames by cumulative time); ``--profile-client`` does the same for
the client process.

Goals (issue 21), per runtime and cell, in one run:

- req/s at 4,096 streams >= 90% of the best req/s at any smaller count;
- p99 at 4,096 streams <= 1.5 x Little's law (N / measured req/s);
- on ray with 4 replicas, the same at 10,000 streams.

    python benchmarks/bench_streams.py [--quick] [--runtimes local,ray] [--cells plain,batched]
        [--streams 1,16,256,1024,4096] [--window 3] [--profile 256,4096] [--write docs/performance.md]
    python benchmarks/bench_streams.py --before DIR [--runtimes ray] [--rounds 3] [--before-gc default]

``--before DIR`` runs another checkout (``PYTHONPATH``; on ray its replicas run it too) and this
tree in alternating child processes and prints the medians side by side, with the serving side's
CPU per request (the inference process, or the 4 replicas together).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.cell import Cell, cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters, State  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import RUNTIMES, Inference, init  # noqa: E402
from rvai_sdk.types import Integer  # noqa: E402

THROUGHPUT_GOAL = 0.90
LITTLE_GOAL = 1.5
GOAL_STREAMS = {"local": 4096, "ray": 10_000}
RAY_REPLICAS = 4


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


@dataclass
class Counter(State):
    n: Integer = State.field(default=Integer(0))


@cell(state=Counter)
class Plain(Cell):
    """Zero-cost stateful cell: counts its stream's requests."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        context.state.n = Integer(context.state.n + 1)
        return Out(y=context.state.n)


@cell(state=Counter, max_batch_size=64, max_batch_wait=0.005)
class Batched(Cell):
    """Zero-cost stateful batched cell: counts each stream's requests."""

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: Parameters, inputs_list: Sequence[In]
    ) -> list[Out]:
        out = []
        for context in contexts:
            context.state.n = Integer(context.state.n + 1)
            out.append(Out(y=context.state.n))
        return out


def pipeline(kind: str) -> Pipeline:
    pf = PipelineFactory(name=f"bench-streams-{kind}")
    c = pf.add_cell(ref="count", cell=Plain() if kind == "plain" else Batched())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    return pf.build()


# -- the load -----------------------------------------------------------------------------------


@dataclass
class Window:
    streams: int
    completions: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]  # process name -> CPU seconds in the window
    rss: dict[str, float]  # process name -> MiB at the end of the window
    by_sid: dict[str, list[float]] = field(default_factory=dict)  # sid -> its latencies in the window

    @property
    def rate(self) -> float:
        return self.completions / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    def stream_means(self) -> tuple[float, float]:
        """The lowest and highest mean latency of one stream (equal when every stream is served alike)."""
        means = [sum(v) / len(v) for v in self.by_sid.values() if v]
        return (min(means), max(means)) if means else (float("nan"), float("nan"))

    @property
    def little(self) -> float:
        """The mean latency Little's law gives for N streams in flight at the measured rate."""
        return self.streams / self.rate


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system
    return out


def _rss(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    return {name: psutil.Process(pid).memory_info().rss / 2**20 for name, pid in pids.items()}


def closed_loop(
    submit: Callable[[dict[str, Any], str], Future[Any]],
    streams: int,
    pids: dict[str, int],
    *,
    window: float,
    min_rounds: int,
    max_seconds: float,
    during: Callable[[], None] | None = None,
) -> Window:
    """``streams`` closed-loop streams; measure completions over a window after a warm-up.

    Warm-up: until every stream completed one request (bounded by ``max_seconds``). Window:
    at least ``window`` seconds and ``min_rounds`` completions per stream (bounded by
    ``max_seconds``). Then the streams stop sending and the requests in flight drain.
    ``during`` runs (in this thread) once the window opened, e.g. a profiler.
    """
    lock = threading.Lock()
    inputs = {"x": Integer(1)}
    errors: list[BaseException] = []
    stop = [False]
    measuring = [False]
    inflight = [0]
    warmed: set[str] = set()
    warm = threading.Event()
    drained = threading.Event()
    latencies: list[float] = []
    by_sid: dict[str, list[float]] = {f"stream-{i}": [] for i in range(streams)}
    count = [0]

    def send(sid: str) -> None:
        with lock:
            inflight[0] += 1
        sent = time.perf_counter()
        try:
            future = submit(inputs, sid)
        except BaseException as exc:
            errors.append(exc)
            done_one()
            return
        future.add_done_callback(lambda f: done(sid, sent, f))

    def done_one() -> None:
        with lock:
            inflight[0] -= 1
            if stop[0] and not inflight[0]:
                drained.set()

    def done(sid: str, sent: float, future: Future[Any]) -> None:
        now = time.perf_counter()
        exc = future.exception()
        if exc is not None:
            errors.append(exc)
        if measuring[0]:
            latencies.append(now - sent)  # list.append is atomic: no lock on the hot path
            by_sid[sid].append(now - sent)
            count[0] += 1
        elif not warm.is_set():
            with lock:
                warmed.add(sid)
                if len(warmed) == streams:
                    warm.set()
        again = not stop[0] and exc is None
        done_one()
        if again:
            send(sid)

    deadline = time.monotonic() + max_seconds
    for i in range(streams):
        send(f"stream-{i}")
    warm.wait(timeout=max(0.0, deadline - time.monotonic()))
    if errors:
        stop[0] = True
        raise errors[0]
    time.sleep(0.2)  # let the first wave's burst settle
    before = _cpu(pids)
    start = time.perf_counter()
    measuring[0] = True
    if during is not None:
        during()
    while time.monotonic() < deadline and not errors:
        elapsed = time.perf_counter() - start
        if elapsed >= window and count[0] >= min_rounds * streams:
            break
        time.sleep(0.05)
    measuring[0] = False
    seconds = time.perf_counter() - start
    after = _cpu(pids)
    rss = _rss(pids)
    completions = count[0]
    taken = list(latencies)
    with lock:
        stop[0] = True
        if not inflight[0]:
            drained.set()
    if not drained.wait(timeout=120):
        raise TimeoutError(f"{inflight[0]} requests of {streams} streams did not finish within 120 s of the stop")
    if errors:
        raise errors[0]
    return Window(
        streams=streams,
        completions=completions,
        seconds=seconds,
        latencies=taken,
        cpu={name: after[name] - before[name] for name in pids},
        rss=rss,
        by_sid=by_sid,
    )


# -- profiles ------------------------------------------------------------------------------------


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profile:
    """py-spy sampling of one process while the window runs; a summary of where its time goes."""

    def __init__(self, pid: int, seconds: float) -> None:
        self.pid = pid
        self.seconds = seconds
        self.path = Path(tempfile.mkdtemp(prefix="bench-streams-")) / "profile.txt"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        spy = _py_spy()
        if spy is None:
            print("  (py-spy not found: no profile)")
            return
        self.process = subprocess.Popen(
            [spy, "record", "--pid", str(self.pid), "--duration", str(max(1, round(self.seconds))), "--rate", "250",
             "--format", "raw", "--output", str(self.path), "--nonblocking", "--gil"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def summary(self, top: int = 14) -> str:
        if self.process is None:
            return ""
        try:
            _, err = self.process.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return "  (py-spy did not finish)"
        if not self.path.exists():
            return f"  (py-spy wrote nothing: {err.decode(errors='replace').strip()[-300:]})"
        own: collections.Counter[str] = collections.Counter()
        cumulative: collections.Counter[str] = collections.Counter()
        total = 0
        idle_names = ("wait (threading.py", "select (selectors.py", "get (queue.py", "_wait_for_tstate_lock", "recv_into",
                      "poll (", "accept (", "sleep (", "wait (concurrent", "result (concurrent", "_recv")
        for line in self.path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            frames = stack.split(";")
            leaf = frames[-1]
            if any(name in leaf for name in idle_names):
                continue  # a thread waiting: not time spent
            weight = int(n)
            total += weight
            own[_short(leaf)] += weight
            for frame in set(_short(f) for f in frames[1:]):
                cumulative[frame] += weight
        if not total:
            return "  (no busy samples)"
        lines = [f"  busy samples: {total} (threads waiting are left out)", "  self time:"]
        lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
        lines.append("  cumulative (rvai_sdk frames):")
        lines += [
            f"    {100 * n / total:5.1f}%  {name}"
            for name, n in cumulative.most_common()
            if "rvai_sdk" in name
        ][:top]
        return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    path = path or where
    marker = path.find("rvai_sdk/")
    shown = path[marker:] if marker >= 0 else os.path.basename(path)
    return f"{name} ({shown})"


# -- one runtime ----------------------------------------------------------------------------------


@dataclass
class Series:
    runtime: str
    cell: str
    windows: list[Window] = field(default_factory=list)
    profiles: dict[int, str] = field(default_factory=dict)
    per_replica: dict[int, str] = field(default_factory=dict)
    idle_state_bytes: float | None = None


def inference_pids(proc: Any, runtime: str) -> dict[str, int]:
    if runtime == "ray":
        return {f"replica {r['index']}": int(r["pid"]) for r in proc.replicas()}
    return {"inference": int(proc.pid)}


def run_series(runtime_name: str, kind: str, counts: list[int], args: argparse.Namespace) -> Series:
    series = Series(runtime_name, kind)
    options: dict[str, Any] = {"replicas": RAY_REPLICAS} if runtime_name == "ray" else {}
    with init(runtime_name, **options) as rt, rt.start_inference(Inference(pipeline=pipeline(kind))) as proc:
        port = proc.restricted()
        pids = {"client": os.getpid(), **inference_pids(proc, runtime_name)}
        for n in counts:
            profile: Profile | None = None
            if n in args.profile and (runtime_name == "local" or args.profile_client):
                target = os.getpid() if args.profile_client else int(proc.pid)
                profile = Profile(target, args.window)
            result = closed_loop(
                port.submit,
                n,
                pids,
                window=args.window,
                min_rounds=args.min_rounds,
                max_seconds=args.max_seconds,
                during=profile.start if profile is not None else None,
            )
            series.windows.append(result)
            print(row_text(series, result), flush=True)
            if runtime_name == "ray":
                series.per_replica[n] = per_replica_text(result, [int(r["index"]) for r in proc.replicas()])
                print("  " + series.per_replica[n], flush=True)
            if profile is not None:
                series.profiles[n] = profile.summary()
                print(f"  profile of the {'client' if args.profile_client else 'inference'} process at {n} streams:")
                print(series.profiles[n], flush=True)
        if runtime_name == "local" and args.idle_states:
            # A fresh process that keeps every sid (no eviction, no TTL): its RSS growth per kept idle state.
            keep_all = Inference(pipeline=pipeline(kind), max_states=2 * args.idle_states, state_ttl=None)
            with rt.start_inference(keep_all) as fresh:
                series.idle_state_bytes = idle_state_memory(fresh.restricted(), int(fresh.pid), args.idle_states)
            print(f"  memory per kept idle state: {series.idle_state_bytes:.0f} bytes "
                  f"(inference RSS growth over {args.idle_states:,} fresh sids)", flush=True)
    return series


def idle_state_memory(port: Any, pid: int, sids: int) -> float:
    """RSS growth of the inference process per kept idle state, over ``sids`` fresh sids (one request each)."""
    base = "camera-0000"  # sids of a realistic length: "camera-0000-0001234"
    inputs = {"x": Integer(1)}
    for i in range(256):  # warm-up: the process's allocator pools exist before the baseline
        port.submit(inputs, f"warm-{i}").result(timeout=60)
    before = _rss({"p": pid})["p"]
    pending: collections.deque[Future[Any]] = collections.deque()
    for i in range(sids):
        pending.append(port.submit(inputs, f"{base}-{i:07d}"))
        if len(pending) >= 512:
            pending.popleft().result(timeout=60)
    while pending:
        pending.popleft().result(timeout=60)
    after = _rss({"p": pid})["p"]
    return (after - before) * 2**20 / sids


# -- report ---------------------------------------------------------------------------------------


def per_replica_text(w: Window, indices: list[int]) -> str:
    """Per replica: its streams, req/s and mean latency (a replica that gets less CPU has slower streams)."""
    from rvai_sdk.transport.ray_link import rendezvous

    groups: dict[int, list[list[float]]] = {i: [] for i in indices}
    for sid, lats in w.by_sid.items():
        groups[rendezvous(sid, indices)].append(lats)
    parts = []
    for i in indices:
        lats = sorted(x for stream in groups[i] for x in stream)
        if not lats:
            parts.append(f"replica {i}: {len(groups[i])} streams, none completed")
            continue
        mean = sum(lats) / len(lats)
        p99 = lats[min(len(lats) - 1, round(0.99 * len(lats)) - 1)]
        parts.append(
            f"replica {i}: {len(groups[i])} streams, {len(lats) / w.seconds:,.0f} req/s, "
            f"mean {1e3 * mean:.0f} ms, p99 {1e3 * p99:.0f} ms ({p99 / mean:.2f} x its mean)"
        )
    return "; ".join(parts)




def row_text(series: Series, w: Window) -> str:
    cpu = "  ".join(f"{name} {1e6 * seconds / max(1, w.completions):.0f}" for name, seconds in w.cpu.items())
    rss = "  ".join(f"{name} {mib:.0f}" for name, mib in w.rss.items())
    return (
        f"{series.runtime:5} {series.cell:7} {w.streams:>6} streams: {w.rate:>8.0f} req/s  "
        f"p50 {1e3 * w.percentile(50):7.1f} ms  p99 {1e3 * w.percentile(99):7.1f} ms  "
        f"Little {1e3 * w.little:7.1f} ms (p99/L {w.percentile(99) / w.little:4.2f})  "
        f"stream means {1e3 * w.stream_means()[0]:.1f}-{1e3 * w.stream_means()[1]:.1f} ms  "
        f"CPU us/req: {cpu}  RSS MiB: {rss}"
    )


def goals(series: Series) -> list[str]:
    """The goal lines of one series (met or not)."""
    target = GOAL_STREAMS[series.runtime] if series.runtime in GOAL_STREAMS else 4096
    at = [w for w in series.windows if w.streams == target]
    smaller = [w for w in series.windows if w.streams < target]
    if not at or not smaller:
        return [f"{series.runtime}/{series.cell}: no goal row ({target} streams and a smaller count needed)"]
    w = at[0]
    best = max(smaller, key=lambda s: s.rate)
    ratio = w.rate / best.rate
    little = w.percentile(99) / w.little
    return [
        f"{series.runtime}/{series.cell}: req/s at {target} streams = {ratio:.2f} x best smaller "
        f"({best.streams} streams) (goal >= {THROUGHPUT_GOAL:.2f}: {'met' if ratio >= THROUGHPUT_GOAL else 'NOT met'})",
        f"{series.runtime}/{series.cell}: p99 at {target} streams = {little:.2f} x Little's law "
        f"(goal <= {LITTLE_GOAL}: {'met' if little <= LITTLE_GOAL else 'NOT met'})",
    ]


def markdown(all_series: list[Series], command: str) -> str:
    lines = [
        f"Measured by `{command}` on {machine()} (one run; the machine is shared, so compare rows of one run).",
        "",
        "| runtime | cell | streams | req/s | p50 ms | p99 ms | Little ms | p99 / Little | one stream's mean ms (lowest-highest) "
        "| CPU µs/req (per process) | RSS MiB (per process) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in all_series:
        for w in s.windows:
            cpu = ", ".join(f"{n} {1e6 * c / max(1, w.completions):.0f}" for n, c in w.cpu.items())
            rss = ", ".join(f"{n} {m:.0f}" for n, m in w.rss.items())
            lines.append(
                f"| {s.runtime} | {s.cell} | {w.streams:,} | {w.rate:,.0f} | {1e3 * w.percentile(50):.1f} | "
                f"{1e3 * w.percentile(99):.1f} | {1e3 * w.little:.1f} | {w.percentile(99) / w.little:.2f} | "
                f"{1e3 * w.stream_means()[0]:.1f}-{1e3 * w.stream_means()[1]:.1f} | {cpu} | {rss} |"
            )
    per_replica = [(s, n, text) for s in all_series for n, text in s.per_replica.items() if n >= 1024]
    if per_replica:
        lines += ["", "Ray, per replica (streams stay on their replica; a replica that gets less CPU is slower for its streams):", ""]
        lines += [f"- {s.cell}, {n:,} streams: {text}" for s, n, text in per_replica]
    lines += ["", "Goals:", ""]
    lines += [f"- {g}" for s in all_series for g in goals(s)]
    idle = [s for s in all_series if s.idle_state_bytes is not None]
    if idle:
        lines += ["", "Memory per kept idle state (inference RSS growth / fresh sids): "
                  + ", ".join(f"{s.cell} {s.idle_state_bytes:.0f} bytes" for s in idle)]
    return "\n".join(lines)


def series_json(s: Series) -> dict[str, Any]:
    return {
        "runtime": s.runtime,
        "cell": s.cell,
        "rows": [
            {
                "streams": w.streams,
                "rate": w.rate,
                "p50": w.percentile(50),
                "p99": w.percentile(99),
                "little": w.little,
                "cpu": {n: c / max(1, w.completions) for n, c in w.cpu.items()},
                "rss": w.rss,
            }
            for w in s.windows
        ],
    }


def _server_cpu(row: dict[str, Any]) -> float:
    """CPU seconds per request of the serving side: the inference process, or every Ray replica together."""
    return sum(seconds for name, seconds in row["cpu"].items() if name != "client")


def compare(args: argparse.Namespace, argv: list[str]) -> None:
    """Run the code before (``--before DIR``) and this tree side by side in alternating child processes."""
    passed: list[str] = []
    skip = False
    for arg in argv:  # this run's options, minus those that concern the comparison
        if skip:
            skip = False
            continue
        if arg in ("--before", "--rounds", "--write", "--json", "--before-gc"):
            skip = True
            continue
        if arg.startswith(("--before=", "--rounds=", "--write=", "--json=", "--before-gc=")):
            continue
        passed.append(arg)
    if not any(arg == "--runtimes" or arg.startswith("--runtimes=") for arg in argv):
        passed += ["--runtimes", "local"]  # both runtimes side by side take long: ask for ray by name
    passed += ["--idle-states", "0"]
    results: dict[str, list[list[dict[str, Any]]]] = {"before": [], "after": []}
    for round_ in range(args.rounds):
        for side in ("before", "after"):
            out = Path(tempfile.mkdtemp(prefix="bench-streams-")) / "rows.json"
            env = dict(os.environ)
            extra = ["--client-gc", args.before_gc] if side == "before" and args.before_gc else []
            if side == "before":
                # Ray's workers inherit the environment: the replicas run the before tree too.
                env["PYTHONPATH"] = str(args.before.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
            print(f"round {round_ + 1}/{args.rounds}: {side}", flush=True)
            subprocess.run(
                [sys.executable, __file__, *passed, *extra, "--json", str(out)], env=env, check=True, timeout=3600
            )
            results[side].append(json.loads(out.read_text()))
    lines = [
        f"`python benchmarks/bench_streams.py {' '.join(argv)}` on {machine()}: before = {args.before}"
        + (f" (client collector: {args.before_gc})" if args.before_gc else "")
        + f", after = this tree; {args.rounds} alternating rounds, the median of each.",
        "",
        "| runtime | cell | streams | req/s before | req/s after | after/before | p99/Little before | p99/Little after "
        "| server CPU µs/req before | after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    import statistics

    for i, series in enumerate(results["after"][0]):
        for j, row in enumerate(series["rows"]):
            def med(side: str, key: Callable[[dict[str, Any]], float]) -> float:
                return statistics.median(key(run[i]["rows"][j]) for run in results[side])

            rate_b, rate_a = med("before", lambda r: r["rate"]), med("after", lambda r: r["rate"])
            lit_b, lit_a = med("before", lambda r: r["p99"] / r["little"]), med("after", lambda r: r["p99"] / r["little"])
            cpu_b = med("before", lambda r: 1e6 * _server_cpu(r))
            cpu_a = med("after", lambda r: 1e6 * _server_cpu(r))
            lines.append(
                f"| {series['runtime']} | {series['cell']} | {row['streams']:,} | {rate_b:,.0f} | {rate_a:,.0f} | {rate_a / rate_b:.2f} | "
                f"{lit_b:.2f} | {lit_a:.2f} | {cpu_b:.0f} | {cpu_a:.0f} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "streams-before-after", text)


def main(argv: list[str] | None = None) -> list[Series]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: local, batched, 1/64/256 streams, short windows")
    parser.add_argument("--runtimes", default="local,ray")
    parser.add_argument("--cells", default="plain,batched")
    parser.add_argument("--streams", default="1,16,256,512,1024,2048,4096", help="stream counts (ray adds 10000)")
    parser.add_argument("--window", type=float, default=3.0, help="least seconds measured per count")
    parser.add_argument("--min-rounds", type=int, default=3, help="least completed requests per stream in the window")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="most seconds of warm-up plus window per count")
    parser.add_argument("--profile", default="", help="stream counts to profile the inference process at (local), e.g. 256,4096")
    parser.add_argument("--profile-client", action="store_true", help="profile this (client) process instead")
    parser.add_argument("--idle-states", type=int, default=100_000, help="fresh sids for the memory per kept idle state (0: skip)")
    parser.add_argument(
        "--client-gc",
        choices=("driver", "default"),
        default="driver",
        help="this (client) process's garbage collector: as the SDK sets it in driver hosts (default), or Python's defaults",
    )
    parser.add_argument("--write", type=Path, help="replace the bench:streams section of this markdown file")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of the code before (e.g. /work/wt-base): run it (PYTHONPATH) and this tree in alternating "
        "child processes, and print them side by side (the local runtime unless --runtimes is given)",
    )
    parser.add_argument(
        "--before-gc",
        choices=("driver", "default"),
        help="with --before: the before side's client collector (default: as this run's --client-gc)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side with --before")
    args = parser.parse_args(argv)
    if args.before is not None:
        compare(args, argv if argv is not None else sys.argv[1:])
        return []
    counts = [int(c) for c in args.streams.split(",") if c]
    args.profile = {int(c) for c in args.profile.split(",") if c}
    runtimes = [r for r in args.runtimes.split(",") if r]
    cells = [c for c in args.cells.split(",") if c]
    if args.quick:
        runtimes, cells, counts = ["local"], ["batched"], [1, 64, 256]
        args.window, args.min_rounds, args.max_seconds, args.idle_states = 0.5, 2, 20.0, 5000
    if args.client_gc == "driver":
        from rvai_sdk.execution.gc_tuning import tune_for_serving

        tune_for_serving()
    all_series = []
    for runtime_name in runtimes:
        if runtime_name not in RUNTIMES:
            print(f"runtime {runtime_name!r} not available here: skipped")
            continue
        runtime_counts = counts
        if runtime_name == "ray" and not args.quick:
            runtime_counts = sorted(set(counts) | {GOAL_STREAMS["ray"]})
        for kind in cells:
            all_series.append(run_series(runtime_name, kind, runtime_counts, args))
    print("\ngoals (issue 21):")
    for s in all_series:
        for g in goals(s):
            print(f"  {g}")
    if args.json:
        args.json.write_text(json.dumps([series_json(s) for s in all_series]))
    if args.write:
        command = "python benchmarks/bench_streams.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(args.write, "streams", markdown(all_series, command.strip()))
    return all_series


if __name__ == "__main__":
    main()
