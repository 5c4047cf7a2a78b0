"""What timing each HTTP request for ``/metrics`` costs: the FastAPIDriver's ``LatencyMiddleware``, in-process.

Calls a minimal ASGI app (it sends a 200 with a small JSON body) directly, without a
server, ``--requests`` times bare and ``--requests`` times wrapped in
``LatencyMiddleware`` (and, as a yardstick, in the driver's ``CountingMiddleware``
that was there before), alternating in ``--rounds`` rounds in one run. Prints the
median CPU microseconds per request of each and what the wrapper adds; compare that
with a whole ``POST /predict`` through the driver (``bench_http.py``: hundreds of
microseconds), so the ratio is what the histogram costs a request at most.

    python benchmarks/bench_latency_middleware.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from rvai_sdk.drivers.metrics import LatencyHistogram
from rvai_sdk.extensions.drivers.http.latency import LatencyMiddleware
from rvai_sdk.extensions.drivers.http.middleware import CountingMiddleware
from rvai_sdk.extensions.drivers.http.parameters import FastAPIDriverParameters, LiveState


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"outputs":{"y":2}}'})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b'{"inputs":{"x":1}}', "more_body": False}


async def send(message: dict[str, Any]) -> None:
    return None


async def cpu_us_per_request(asgi: Any, requests: int) -> float:
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    began = time.process_time()
    for _ in range(requests):
        await asgi(dict(scope), receive, send)
    return (time.process_time() - began) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    state = LiveState(parameters=FastAPIDriverParameters())
    stacks = {
        "bare app": app,
        "LatencyMiddleware(app)": LatencyMiddleware(app, LatencyHistogram()),
        "CountingMiddleware(app), for scale": CountingMiddleware(app, state),
    }
    results: dict[str, list[float]] = {name: [] for name in stacks}
    for _ in range(args.rounds):
        for name, asgi in stacks.items():
            results[name].append(asyncio.run(cpu_us_per_request(asgi, args.requests)))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"{args.requests} requests x {args.rounds} alternated rounds, median CPU us per request:")
    for name, value in medians.items():
        print(f"  {name:40s} {value:7.2f} us")
    added = medians["LatencyMiddleware(app)"] - medians["bare app"]
    print(f"  LatencyMiddleware adds {added:.2f} us per request "
          f"({medians['LatencyMiddleware(app)'] / medians['bare app']:.2f}x the bare app); "
          f"CountingMiddleware adds {medians['CountingMiddleware(app), for scale'] - medians['bare app']:.2f} us")
    for whole in (250.0, 500.0):
        print(f"  on a {whole:.0f} us POST /predict through the driver that is {added / whole * 100:.2f}%")


if __name__ == "__main__":
    main()
