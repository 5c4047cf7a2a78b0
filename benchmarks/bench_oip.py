"""Open Inference Protocol (V2) over gRPC and over HTTP vs the driver's own JSON route, side by side in one run.

One inference process on the ``local`` runtime serves a pipeline that answers the height
of an ``Image`` (or, for the small request, echoes an ``Integer``), so the input path is
what is measured; a FastAPIDriver and a GrpcDriver serve it. For a 224x224 and a
1920x1080 RGB frame (a gradient with noise, as a camera frame compresses) and a small
scalar request, in alternated rounds, from this process, at concurrency 1 and 32:

(a) ``POST /predict`` with the frame as a base64 PNG in JSON (``FastAPIClient.predict``:
    the client encodes the PNG, as a user of that route must); at concurrency 32, from
    32 threads sharing one client;
(b) ``POST /v2/models/{name}/infer`` with the frame as binary data (``tritonclient.http``;
    at concurrency 32, 32 threads with a client each: its gevent-based ``async_infer``
    reached about 70 requests/s here whatever the concurrency, even for a scalar that
    its plain ``infer`` sends at 350/s, so it would measure the client, not the server);
(c) ``ModelInfer`` over gRPC with the frame in ``raw_input_contents`` (``tritonclient.grpc``;
    at concurrency 32 its ``async_infer`` with a callback, 32 requests in flight).

Prints requests/s, p50 and p99 latency of each, and the ratio of each to (a); with
``--write docs/performance.md`` the table replaces the ``bench:oip`` section there.

    python benchmarks/bench_oip.py [--requests 200] [--rounds 2] [--max-seconds 8] [--write docs/performance.md]
    python benchmarks/bench_oip.py --quick     # a few requests of each, to check the script runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from _report import machine, write_section  # noqa: E402

from rvai_sdk.cell import Cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver  # noqa: E402
from rvai_sdk.extensions.drivers.grpc_driver import GrpcDriver  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402
from rvai_sdk.types import Image, Integer  # noqa: E402

MODEL = "frame-height"
PREDICT, HTTP, GRPC = "/predict JSON (frame: base64 PNG)", "V2 HTTP binary data", "V2 gRPC raw contents"
SCALAR = "small scalar request"


@dataclass
class In(Inputs):
    image: Image | None = Inputs.field(default=None)
    x: Integer | None = Inputs.field(default=None)


@dataclass
class Out(Outputs):
    height: Integer = Outputs.field()


class Height(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        if inputs.image is not None:
            return Out(height=Integer(inputs.image.shape[0]))
        return Out(height=Integer(inputs.x if inputs.x is not None else -1))


def pipeline() -> Pipeline:
    pf = PipelineFactory(name=MODEL)
    cell = pf.add_cell(ref="h", cell=Height())
    pf.declare_input(ref="image", input=cell.inputs.image)
    pf.declare_input(ref="x", input=cell.inputs.x)
    pf.declare_output(ref="height", output=cell.outputs.height)
    return pf.build()


def frame(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)


@dataclass
class Run:
    """One measurement: each request's latency and the wall time of them all."""

    latencies: list[float]
    wall: float


def sequential(call: Callable[[], int], expected: int, requests: int, seconds: float) -> Run:
    """Concurrency 1: one request after the other (bounded in count and in time)."""
    assert call() == expected  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(requests):
        if time.perf_counter() - start > seconds:
            break
        begin = time.perf_counter()
        assert call() == expected
        times.append(time.perf_counter() - begin)
    return Run(times, time.perf_counter() - start)


def threaded(call: Callable[[], int], expected: int, requests: int, seconds: float, concurrency: int) -> Run:
    """``concurrency`` threads, each one request after the other (``call`` picks the client of its thread)."""
    assert call() == expected
    times: list[float] = []
    lock = threading.Lock()
    started = 0
    start = time.perf_counter()

    def worker() -> None:
        nonlocal started
        for _ in range(requests):  # bounded: the shared count and the time stop it long before
            with lock:
                if started >= requests or time.perf_counter() - start > seconds:
                    return
                started += 1
            begin = time.perf_counter()
            assert call() == expected
            with lock:
                times.append(time.perf_counter() - begin)

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return Run(times, time.perf_counter() - start)


def grpc_async(client: Any, inputs: Callable[[], list[Any]], expected: int, requests: int, seconds: float, concurrency: int) -> Run:
    """tritonclient.grpc's ``async_infer``: ``concurrency`` requests in flight, each callback frees a slot."""
    outputs = [grpcclient.InferRequestedOutput("height")]
    assert int(client.infer(MODEL, inputs(), outputs=outputs).as_numpy("height")[0]) == expected
    slots = threading.Semaphore(concurrency)
    times: list[float] = []
    errors: list[Any] = []
    lock = threading.Lock()
    start = time.perf_counter()
    sent = 0
    for _ in range(requests):
        if time.perf_counter() - start > seconds:
            break
        if not slots.acquire(timeout=120):
            raise TimeoutError("no answer from the gRPC server within 120 s")
        begin = time.perf_counter()

        def done(result: Any, error: Any, begin: float = begin) -> None:
            with lock:
                if error is not None or int(result.as_numpy("height")[0]) != expected:
                    errors.append(error or result)
                times.append(time.perf_counter() - begin)
            slots.release()

        client.async_infer(MODEL, inputs(), done, outputs=outputs)
        sent += 1
    for _ in range(concurrency):  # every slot back: every answer in
        if not slots.acquire(timeout=120):
            raise TimeoutError("no answer from the gRPC server within 120 s")
    assert not errors, errors[:3]
    return Run(times, time.perf_counter() - start)


def summary(run: Run) -> tuple[float, float, float]:
    ordered = sorted(run.latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return len(ordered) / run.wall, statistics.median(ordered) * 1e3, p99 * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="most requests per way, size, concurrency and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=8.0, help="stop each measurement after this long")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--quick", action="store_true", help="a few requests of each, no 1080p: checks the script runs")
    parser.add_argument("--write", type=Path, default=None, help="replace the bench:oip section of this Markdown file")
    args = parser.parse_args()
    cases: list[tuple[str, np.ndarray | None]] = [("224x224 RGB frame", frame(224, 224)), ("1920x1080 RGB frame", frame(1080, 1920)), (SCALAR, None)]
    if args.quick:
        args.requests, args.rounds, args.max_seconds, args.concurrency = 5, 1, 5.0, [1, 4]
        cases = [cases[0], cases[2]]
    print(machine())
    rows: list[tuple[str, int, str, float, float, float, float]] = []
    with init("local") as rt, rt.start_inference(Inference(pipeline=pipeline())) as proc:
        web = proc.add_driver("webapi", FastAPIDriver)
        rpc = proc.add_driver("grpc", GrpcDriver)
        grpc_url = f"127.0.0.1:{rpc.get_service('grpc')['port']}"
        channel = grpc.insecure_channel(grpc_url)
        grpc.channel_ready_future(channel).result(timeout=60)
        channel.close()
        with FastAPIClient(process=web, timeout=120) as client:
            client.wait(timeout=60)
            http_url = client.base_url.removeprefix("http://")
            local = threading.local()
            http_clients: list[Any] = []

            def http_client() -> Any:
                """This thread's tritonclient.http client (it is not thread-safe)."""
                if not hasattr(local, "client"):
                    local.client = httpclient.InferenceServerClient(url=http_url, network_timeout=120)
                    http_clients.append(local.client)
                return local.client

            triton_grpc = grpcclient.InferenceServerClient(url=grpc_url)
            for case, image in cases:
                expected = 7 if image is None else image.shape[0]

                def http_inputs(image: np.ndarray | None = image) -> list[Any]:
                    value = image if image is not None else np.array([7], np.int64)
                    tensor = httpclient.InferInput("image" if image is not None else "x", list(value.shape), "UINT8" if image is not None else "INT64")
                    tensor.set_data_from_numpy(value, binary_data=True)
                    return [tensor]

                def grpc_inputs(image: np.ndarray | None = image) -> list[Any]:
                    value = image if image is not None else np.array([7], np.int64)
                    tensor = grpcclient.InferInput("image" if image is not None else "x", list(value.shape), "UINT8" if image is not None else "INT64")
                    tensor.set_data_from_numpy(value)
                    return [tensor]

                def predict(image: np.ndarray | None = image) -> int:
                    inputs = {"image": Image(image), "x": None} if image is not None else {"image": None, "x": 7}
                    return int(client.predict(inputs)["height"])

                def http_call() -> int:
                    out = [httpclient.InferRequestedOutput("height")]
                    return int(http_client().infer(MODEL, http_inputs(), outputs=out).as_numpy("height")[0])

                def grpc_call() -> int:
                    out = [grpcclient.InferRequestedOutput("height")]
                    return int(triton_grpc.infer(MODEL, grpc_inputs(), outputs=out).as_numpy("height")[0])

                for concurrency in args.concurrency:
                    ways: dict[str, Callable[[], Run]]
                    n, secs = args.requests, args.max_seconds
                    if concurrency == 1:
                        ways = {
                            PREDICT: lambda: sequential(predict, expected, n, secs),
                            HTTP: lambda: sequential(http_call, expected, n, secs),
                            GRPC: lambda: sequential(grpc_call, expected, n, secs),
                        }
                    else:
                        c = concurrency
                        ways = {
                            PREDICT: lambda: threaded(predict, expected, n, secs, c),
                            HTTP: lambda: threaded(http_call, expected, n, secs, c),
                            GRPC: lambda: grpc_async(triton_grpc, grpc_inputs, expected, n, secs, c),
                        }
                    runs: dict[str, list[Run]] = {name: [] for name in ways}
                    for _ in range(args.rounds):  # alternated rounds: a noisy minute hits every way alike
                        for name, measure in ways.items():
                            runs[name].append(measure())
                    merged = {
                        name: Run([t for r in rs for t in r.latencies], sum(r.wall for r in rs)) for name, rs in runs.items()
                    }
                    base = summary(merged[PREDICT])[0]
                    print(f"\n{case}, concurrency {concurrency}, {args.rounds} rounds (at most {n} requests or {secs:g} s each)")
                    print(f"{'way':<28} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs /predict':>12}")
                    for name, run in merged.items():
                        rate, p50, p99 = summary(run)
                        rows.append((case, concurrency, name, rate, p50, p99, rate / base))
                        print(f"{name:<28} {len(run.latencies):8d} {rate:8.1f} {p50:8.2f} {p99:8.2f} {rate / base:11.2f}x")
            for http in http_clients:
                http.close()
            triton_grpc.close()
        proc.remove_driver(rpc.pid)
        proc.remove_driver(web.pid)
    if args.write is not None:
        lines = [
            f"`python benchmarks/bench_oip.py --requests {args.requests} --rounds {args.rounds} --max-seconds {args.max_seconds:g}` "
            f"({machine()}; FastAPIDriver and GrpcDriver on one inference process of the local runtime; a pipeline that "
            "answers the frame's height, so the input path is measured; each row: alternated rounds of at most "
            f"{args.requests} requests or {args.max_seconds:g} s):",
            "",
            "| request | concurrency | way | req/s | p50 ms | p99 ms | req/s vs `/predict` |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for case, concurrency, name, rate, p50, p99, ratio in rows:
            ratio_text = "1.00×" if name == PREDICT else f"**{ratio:.2f}×**"
            lines.append(f"| {case} | {concurrency} | {name} | {rate:,.1f} | {p50:.2f} | {p99:.2f} | {ratio_text} |")
        write_section(args.write, "oip", "\n".join(lines))
        print(f"\nwrote the bench:oip section of {args.write}")


if __name__ == "__main__":
    main()
