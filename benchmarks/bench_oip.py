"""Open Inference Protocol (V2) over HTTP vs the driver's own JSON route, for a camera frame, side by side in one run.

One FastAPIDriver on the ``local`` runtime serves a pipeline that takes an ``Image`` and
answers its height (so the input path is what is measured). For a 224x224 and a
1920x1080 RGB frame (a gradient with noise, as a camera frame compresses), one after
the other, in alternated rounds, from this process, at concurrency 1:

(a) ``POST /predict`` with the frame as a base64 PNG in JSON (``FastAPIClient.predict``:
    the client encodes the PNG, as a user of that route must);
(b) ``POST /v2/models/{name}/infer`` with the frame as binary data (``tritonclient.http``);
(c) ``POST /v2/models/{name}/infer`` with the frame as a JSON list of numbers (224x224 only:
    a 1080p frame as JSON text is six million numbers).

Prints requests/s, p50 and p99 latency of each, and the ratio of each to (a).

    python benchmarks/bench_oip.py [--requests 30] [--rounds 3] [--max-seconds 60]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tritonclient.http as httpclient  # noqa: E402
from _report import machine  # noqa: E402

from rvai_sdk.cell import Cell  # noqa: E402
from rvai_sdk.context import InferenceContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver  # noqa: E402
from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: E402
from rvai_sdk.runtime import Inference, init  # noqa: E402
from rvai_sdk.types import Image, Integer  # noqa: E402

MODEL = "frame-height"


@dataclass
class In(Inputs):
    image: Image = Inputs.field()


@dataclass
class Out(Outputs):
    height: Integer = Outputs.field()


class Height(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        return Out(height=Integer(inputs.image.shape[0]))


def pipeline() -> Pipeline:
    pf = PipelineFactory(name=MODEL)
    cell = pf.add_cell(ref="h", cell=Height())
    pf.declare_input(ref="image", input=cell.inputs.image)
    pf.declare_output(ref="height", output=cell.outputs.height)
    return pf.build()


def frame(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)


def measure(call: Callable[[], int], expected: int, requests: int, deadline: float) -> list[float]:
    call()  # warm-up
    times = []
    for _ in range(requests):  # bounded in count and in time
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        assert call() == expected
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="requests per way, per size, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop each measurement after this long")
    args = parser.parse_args()
    print(machine())
    with init("local") as rt, rt.start_inference(Inference(pipeline=pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=60)
            triton = httpclient.InferenceServerClient(url=client.base_url.removeprefix("http://"), network_timeout=120)
            for height, width in ((224, 224), (1080, 1920)):
                image = frame(height, width)

                def predict_json() -> int:
                    return int(client.predict({"image": Image(image)})["height"])

                def v2(binary: bool) -> Callable[[], int]:
                    def call() -> int:
                        tensor = httpclient.InferInput("image", list(image.shape), "UINT8")
                        tensor.set_data_from_numpy(image, binary_data=binary)
                        out = [httpclient.InferRequestedOutput("height", binary_data=binary)]
                        return int(triton.infer(MODEL, [tensor], outputs=out).as_numpy("height")[0])

                    return call

                ways = {"/predict JSON (base64 PNG)": predict_json, "V2 binary data": v2(True)}
                if height * width <= 224 * 224:
                    ways["V2 JSON tensor"] = v2(False)
                samples: dict[str, list[float]] = {name: [] for name in ways}
                for _ in range(args.rounds):
                    for name, call in ways.items():
                        samples[name] += measure(call, height, args.requests, time.monotonic() + args.max_seconds)
                print(f"\n{width}x{height} RGB frame, concurrency 1, {args.rounds} rounds x {args.requests} requests")
                print(f"{'way':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s vs /predict':>18}")
                base = len(samples["/predict JSON (base64 PNG)"]) / sum(samples["/predict JSON (base64 PNG)"])
                for name, times in samples.items():
                    rate = len(times) / sum(times)
                    ordered = sorted(times)
                    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
                    print(
                        f"{name:<28} {rate:8.1f} {statistics.median(times) * 1e3:8.2f} {p99 * 1e3:8.2f} "
                        f"{rate / base:17.2f}x"
                    )
            triton.close()
        proc.remove_driver(handle.pid)


if __name__ == "__main__":
    main()
