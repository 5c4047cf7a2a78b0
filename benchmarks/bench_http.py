"""HTTP serving: FastAPIDriver on the local runtime, before and after, side by side with other servers.

Loads, one after the other in one run and with the same load generator, each server
in its own process:

(a) ``FastAPIDriver`` on the ``local`` runtime (driver process → inference process),
    serving a trivial 1-cell pipeline (``y = x + 1``): this tree ("after");
(b) with ``--before PATH`` (or ``RVAI_BENCH_BEFORE``): the same from another checkout with its
    own ``.venv`` (e.g. ``git worktree add /tmp/before <commit>`` and ``make venv`` there), "before";
(c) a bare FastAPI + uvicorn app: one ``POST /predict`` endpoint with a pydantic body
    model doing the same arithmetic in-process, with the same uvicorn settings (uvloop
    and httptools when installed, no access log);
(d) a raw ASGI app (no framework): the same endpoint on uvicorn, reading the body and
    writing the JSON answer by hand, the floor any framework adds to;
(e) with ``--litserve-python PATH`` (default ``/tmp/litserve-venv/bin/python`` when it
    exists; a Python whose own virtualenv has ``litserve``: ``python -m venv
    /tmp/litserve-venv && /tmp/litserve-venv/bin/pip install litserve``): the same logic
    as a LitServe ``LitAPI`` (its inference runs in a worker process, like the driver's);
(f) with ``--ray-serve-python PATH`` (a Python whose own virtualenv has ``ray[serve]``):
    the same logic as a Ray Serve deployment behind Serve's HTTP proxy, on a fresh local Ray.

Each at concurrency 1 and 32 (keep-alive connections, closed loop) for ``--duration``
seconds, in ``--rounds`` alternated rounds (medians reported). The load generator is
``wrk`` (Debian package ``wrk``) when it is on PATH, else a built-in asyncio HTTP/1.1
client in its own process. Prints requests/s, p50 and p99 latency, and the ratios of
the driver's requests/s to each other server's, and to its own "before" (issue 14:
the driver stays >= 1.0x the bare FastAPI app, and no slower than before).

    python benchmarks/bench_http.py [--duration 10] [--rounds 3] [--runtime local] [--loadgen wrk|python]
                                    [--before DIR] [--litserve-python PY] [--ray-serve-python PY] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from rvai_sdk.cell import Cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.types import Integer  # noqa: E402

BODY = b'{"inputs":{"x":1}}'


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


class Inc(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        return Out(y=Integer(inputs.x + 1))


def pipeline() -> Pipeline:
    pf = PipelineFactory(name="inc")
    inc = pf.add_cell(ref="inc", cell=Inc())
    pf.declare_input(ref="x", input=inc.inputs.x)
    pf.declare_output(ref="y", output=inc.outputs.y)
    return pf.build()


# -- (b) the bare app ------------------------------------------------------------------------------


class BareInputs(BaseModel):
    x: int


class BareRequest(BaseModel):
    inputs: BareInputs
    sid: str | None = None


def serve_bare(port: int) -> None:
    """A bare FastAPI app: what a user would write by hand for the same endpoint."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/predict")
    async def predict(request: BareRequest) -> dict[str, Any]:
        return {"outputs": {"y": request.inputs.x + 1}, "sid": request.sid}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, server_header=False)


# -- (d) a raw ASGI app, no framework ----------------------------------------------------------------


async def raw_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``POST /predict`` and ``GET /ready`` by hand: the floor under any framework."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/ready":
        body = b'{"status":"ready"}'
    else:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        request = json.loads(b"".join(chunks))
        body = json.dumps({"outputs": {"y": int(request["inputs"]["x"]) + 1}, "sid": request.get("sid")}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_raw(port: int) -> None:
    import uvicorn

    uvicorn.run(raw_asgi, host="127.0.0.1", port=port, log_level="warning", access_log=False, server_header=False, lifespan="off")


# -- (a), (b) the driver, in a process of its own -------------------------------------------------------


def serve_driver(port: int, runtime: str) -> None:
    """FastAPIDriver on ``runtime`` at ``port`` until SIGTERM (run by this tree's or the "before" tree's Python)."""
    import signal
    import threading

    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIDriver
    from rvai_sdk.runtime import Inference, init

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    bench = importlib.import_module("bench_http")  # the cell travels by reference (module bench_http)
    with init(runtime) as rt, rt.start_inference(Inference(pipeline=bench.pipeline())) as proc:
        proc.add_driver("http", FastAPIDriver, {"listen_port": port})
        done.wait()
        proc.remove_driver("http")


# -- (e) LitServe, in its own environment ----------------------------------------------------------------

LITSERVE_APP = """
import sys
import litserve as ls


class Inc(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request

    def predict(self, request):
        return {"outputs": {"y": int(request["inputs"]["x"]) + 1}, "sid": request.get("sid")}

    def encode_response(self, output):
        return output


if __name__ == "__main__":
    ls.LitServer(Inc(), accelerator="cpu", workers_per_device=1).run(
        host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False
    )
"""
"""The same logic as a LitServe ``LitAPI`` (run with ``--litserve-python``)."""


# -- (c) Ray Serve, in its own environment ------------------------------------------------------------

RAY_SERVE_APP = """
import signal, sys, threading
import ray
from ray import serve
from starlette.requests import Request

port = int(sys.argv[1])
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": port})


@serve.deployment(max_ongoing_requests=256)
class Inc:
    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return {"outputs": {"y": int(body["inputs"]["x"]) + 1}, "sid": body.get("sid")}


serve.run(Inc.bind(), route_prefix="/predict")
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
serve.shutdown()
ray.shutdown()
"""
"""The same logic as a Ray Serve deployment behind Serve's HTTP proxy (run with ``--ray-serve-python``)."""


# -- load generators ---------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def run_wrk(port: int, connections: int, duration: float) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = '{BODY.decode()}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", script.name,
             f"http://127.0.0.1:{port}/predict"],
            capture_output=True, text=True, timeout=duration + 60, check=True,
        ).stdout
    finally:
        os.unlink(script.name)

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match is None:
            raise RuntimeError(f"cannot read the {label}th percentile from wrk:\n{out}")
        return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return Result(rps, ms("50"), ms("99"), errors)


async def _python_load(port: int, connections: int, duration: float) -> tuple[int, list[float], int]:
    request = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return len(latencies), latencies, errors


def _python_load_child(port: int, connections: int, duration: float, queue: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    count, latencies, errors = asyncio.run(_python_load(port, connections, duration))
    latencies.sort()
    queue.put((count / duration, latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3, errors))


def run_python(port: int, connections: int, duration: float) -> Result:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_python_load_child, args=(port, connections, duration, queue))
    child.start()
    rps, p50, p99, errors = queue.get(timeout=duration + 60)
    child.join(10)
    return Result(rps, p50, p99, errors)


# -- harness -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling a server that is starting; bounded by the deadline
    raise TimeoutError(f"nothing ready on port {port} within {timeout} s")


def wait_answer(port: int, timeout: float = 120.0) -> None:
    """Poll ``POST /predict`` until it answers 200 (Ray Serve and LitServe have no /ready)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/predict", content=BODY, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a server that is starting; bounded by the deadline
    raise TimeoutError(f"nothing answered POST /predict on port {port} within {timeout} s")


def check_answer(port: int) -> None:
    import httpx

    answer = httpx.post(f"http://127.0.0.1:{port}/predict", content=BODY, headers={"content-type": "application/json"})
    assert answer.status_code == 200 and answer.json()["outputs"] == {"y": 2}, answer.text


# -- the driver's own cost per request, in-process (no network, no inference process) ------------------


def asgi_overhead(requests: int) -> float:
    """Median CPU microseconds per ``POST /predict`` through the driver's ASGI app, its port answering from a thread.

    Runs in this tree's or the "before" tree's Python (it reaches into each one's
    internals to build the app without a server): what the driver itself costs per
    request, without the machine's network and process noise.
    """
    import concurrent.futures

    import rvai_sdk.extensions.drivers.fast_api_driver as module
    from rvai_sdk.runtime import RestrictedInferenceProcess

    bench = importlib.import_module("bench_http")

    reader = concurrent.futures.ThreadPoolExecutor(1, "reader")  # answers from a thread, as the transport does

    def predict(inputs: dict[str, Any], sid: str | None, timeout: float | None) -> concurrent.futures.Future[Any]:
        return reader.submit(lambda: {"y": Integer(inputs["x"] + 1)})

    import inspect

    if "link" in inspect.signature(RestrictedInferenceProcess).parameters:  # since the Link rework
        from rvai_sdk.transport.link import Link

        class ThreadLink(Link):
            """Answers from the reader thread; no inference process."""

            def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> Any:
                return predict(inputs, sid, timeout)

            def call(self, method: str, *args: Any, timeout: float | None = 60.0) -> Any:
                return {}

            def is_ready(self) -> bool:
                return True

            def close(self) -> None:
                pass

        port = RestrictedInferenceProcess(bench.pipeline(), ThreadLink())
    else:  # before: the port was wired from callables
        port = RestrictedInferenceProcess(bench.pipeline(), predict, lambda: True, dict)
    driver = module.FastAPIDriver()
    if hasattr(module, "_Service"):  # before: one module
        service: Any = module._Service(driver, port)  # type: ignore[attr-defined]
        driver._bound_host = "127.0.0.1"  # type: ignore[attr-defined]
        app, start = service.front, service.submitter.start
    else:
        from rvai_sdk.extensions.drivers.http.service import Service

        service = Service(driver._state, port)
        driver._state.bound_host = "127.0.0.1"
        app, start = service.asgi, service.dispatcher.start
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
    }
    message = {"type": "http.request", "body": BODY, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            statuses.append(event["status"])

    async def measure() -> float:
        start(asyncio.get_running_loop())
        rounds = []
        for _ in range(5):
            began = time.process_time()  # CPU time of this process: other work on the machine counts less
            for _ in range(requests):
                await app(dict(scope), receive, send)
            rounds.append((time.process_time() - began) / requests * 1e6)
        return statistics.median(rounds)

    micros = asyncio.run(measure())
    assert set(statuses) == {200}, set(statuses)
    return micros


def _overhead_of(python: str, requests: int) -> float:
    script = str(Path(__file__).resolve())
    out = subprocess.run(
        [python, script, "--asgi-overhead", str(requests)], capture_output=True, text=True, check=True, timeout=600,
        cwd=str(Path(__file__).resolve().parent),
    ).stdout
    return float(out.strip().splitlines()[-1])


def _start(command: list[str], quiet: bool = False) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own, so that :func:`_stop` ends its worker processes too."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(
        command, stdout=out, stderr=out, cwd=str(Path(__file__).resolve().parent), start_new_session=True
    )


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """End every server and the processes it started (LitServe's workers outlived a plain terminate)."""
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the server if it outlived the 30 s, and what is left of its group
        child.wait(10)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--runtime", default="local", help="runtime of the FastAPIDriver (default local)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each, alternated; medians reported")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, 1 round (smoke test)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument(
        "--before",
        default=os.environ.get("RVAI_BENCH_BEFORE", ""),
        help="a checkout with its own .venv to measure as 'before' (default: none)",
    )
    default_litserve = "/tmp/litserve-venv/bin/python"
    parser.add_argument(
        "--litserve-python",
        default=os.environ.get("RVAI_BENCH_LITSERVE_PYTHON", default_litserve if os.path.exists(default_litserve) else None),
        help="a Python with litserve installed (its own virtualenv): adds LitServe with the same logic",
    )
    parser.add_argument(
        "--ray-serve-python",
        default=os.environ.get("RVAI_BENCH_RAY_SERVE_PYTHON"),
        help="a Python with ray[serve] installed (its own virtualenv): adds Ray Serve with the same logic",
    )
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-raw", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-driver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--asgi-overhead", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.asgi_overhead:
        print(asgi_overhead(args.asgi_overhead))
        return {}
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return {}
    if args.serve_raw:
        serve_raw(args.serve_raw)
        return {}
    if args.serve_driver:
        serve_driver(args.serve_driver, args.runtime)
        return {}
    duration = 1.0 if args.quick else args.duration
    if args.quick:
        args.rounds = 1
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    load = run_wrk if loadgen == "wrk" else run_python

    script = str(Path(__file__).resolve())
    before_python = Path(args.before, ".venv", "bin", "python") if args.before else None
    # name, label, command, polled with /ready (else POST /predict until it answers)
    servers: list[tuple[str, str, list[str], bool]] = [
        ("driver", f"FastAPIDriver ({args.runtime} runtime)", [sys.executable, script, "--runtime", args.runtime, "--serve-driver"], True)
    ]
    if before_python is not None and before_python.exists():
        command = [str(before_python), script, "--runtime", args.runtime, "--serve-driver"]
        servers.append(("before", f"FastAPIDriver before ({args.before})", command, True))
    servers.append(("bare", "bare FastAPI app", [sys.executable, script, "--serve-bare"], True))
    servers.append(("raw", "raw ASGI app (no framework)", [sys.executable, script, "--serve-raw"], True))
    if args.litserve_python:  # from a file: LitServe's worker processes import the main module again
        app = Path(tempfile.mkdtemp(prefix="bench-http-")) / "litserve_app.py"
        app.write_text(LITSERVE_APP)
        servers.append(("litserve", "LitServe (1 worker process)", [args.litserve_python, str(app)], False))
    if args.ray_serve_python:
        servers.append(("ray", "Ray Serve", [args.ray_serve_python, "-c", RAY_SERVE_APP], False))

    load_before = os.getloadavg()
    children: list[subprocess.Popen[bytes]] = []
    targets: list[tuple[str, str, int]] = []
    results: dict[tuple[str, int], Result] = {}
    try:
        for name, label, command, has_ready in servers:
            port = free_port()
            children.append(_start([*command, str(port)], quiet=name in ("litserve", "ray")))
            targets.append((name, label, port))
        for (name, _, _, has_ready), (_, _, port) in zip(servers, targets):
            if has_ready:
                wait_ready(port, timeout=120.0)
            else:
                wait_answer(port)
        for _, _, port in targets:  # same answer everywhere, then warm up
            check_answer(port)
            load(port, 8, min(1.0, duration))
        rounds: dict[tuple[str, int], list[Result]] = {}
        for _ in range(args.rounds):  # alternate them, so drifts of the machine hit all alike
            for connections in (1, 32):
                for name, _, port in targets:
                    rounds.setdefault((name, connections), []).append(load(port, connections, duration))
        for key, measured in rounds.items():
            results[key] = Result(
                statistics.median(r.rps for r in measured),
                statistics.median(r.p50_ms for r in measured),
                statistics.median(r.p99_ms for r in measured),
                sum(r.errors for r in measured),
            )
    finally:
        _stop(children)

    rows = []
    for connections in (1, 32):
        for name, label, _ in targets:
            rows.append((f"{label}, concurrency {connections}", results[(name, connections)]))
    errors = sum(r.errors for r in results.values())
    width = max(len(name) for name, _ in rows)
    print(
        f"HTTP benchmark on {machine()}; load generator: {loadgen}, {duration:g} s per measurement, "
        f"medians of {args.rounds} alternated rounds; load average before/after: "
        f"{load_before[0]:.1f}/{os.getloadavg()[0]:.1f} (other work on the machine skews the figures)"
    )
    print(f"  {'':<{width}}  {'req/s':>10}  {'p50 ms':>8}  {'p99 ms':>8}  errors")
    for name, r in rows:
        print(f"  {name:<{width}}  {r.rps:>10,.0f}  {r.p50_ms:>8.3f}  {r.p99_ms:>8.3f}  {r.errors}")
    ratios: dict[str, float] = {}
    print("  FastAPIDriver req/s / the other's req/s (same run):")
    for name, label, _ in targets[1:]:
        for connections in (1, 32):
            ratio = results[("driver", connections)].rps / results[(name, connections)].rps
            ratios[f"{name}_c{connections}"] = ratio
        print(f"    vs {label:<{width - 3}}  concurrency 1: {ratios[f'{name}_c1']:.2f}x   concurrency 32: {ratios[f'{name}_c32']:.2f}x")
    bare_ok = ratios["bare_c32"] >= 1.0
    print(f"  goal: >= 1.0x the bare FastAPI app at concurrency 32: {ratios['bare_c32']:.2f}x ({'MET' if bare_ok else 'NOT MET'})")
    if "before_c32" in ratios:
        kept = min(ratios["before_c1"], ratios["before_c32"]) >= 0.95
        print(
            f"  goal: no slower than before: {ratios['before_c1']:.2f}x at concurrency 1, {ratios['before_c32']:.2f}x at 32 "
            f"({'MET' if kept else 'NOT MET'}, within 5% noise)"
        )
    if before_python is not None and before_python.exists():
        requests = 500 if args.quick else 3000
        after_us, before_us = [], []
        for _ in range(1 if args.quick else 3):  # alternated, medians
            after_us.append(_overhead_of(sys.executable, requests))
            before_us.append(_overhead_of(str(before_python), requests))
        overhead = (statistics.median(after_us), statistics.median(before_us))
        ratios["asgi_overhead_before_over_after"] = overhead[1] / overhead[0]
        print(
            f"  the driver's own CPU time per POST /predict, in-process (its ASGI app, a port answering from a thread): "
            f"{overhead[0]:.1f} us after, {overhead[1]:.1f} us before: {overhead[1] / overhead[0]:.2f}x as fast"
        )
    figures = {
        "loadgen": loadgen,
        "duration": duration,
        "machine": machine(),
        "loadavg_before": load_before[0],
        "ratios": ratios,
        "errors": errors,
        **{f"{name}_c{c}": vars(r) for (name, c), r in results.items()},
    }
    if args.json:
        print(json.dumps(figures))
    if errors:
        print(f"  WARNING: {errors} failed requests", file=sys.stderr)
    return figures


if __name__ == "__main__":
    main()
