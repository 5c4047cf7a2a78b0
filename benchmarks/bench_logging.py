"""What the HTTP driver's access log costs per request, measured in-process on the ASGI stack.

Runs, side by side in one process and in alternated rounds (medians reported), the
same trivial ASGI endpoint (``200 {"ok": true}``) called directly (no sockets: the
figures are the middleware's own cost, not the network's):

(a) bare: the endpoint alone;
(b) access log off: wrapped in ``AccessLogMiddleware`` with ``rvai_sdk.http.access``
    above INFO (what a library user who configured nothing gets: request id, headers);
(c) access log on: the same with INFO records formatted as JSON lines into a null stream
    (what ``rvai-sdk serve --log-format json`` does, less the terminal).

Prints microseconds per request and the added cost of (b) and (c) over (a), and both as
a share of a request to the driver at the throughput given with ``--driver-rps``
(default: 2,000 req/s, this machine's ``bench_http.py`` figure at concurrency 1).

    python benchmarks/bench_logging.py [--requests 20000] [--rounds 5] [--driver-rps 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine  # noqa: E402

from rvai_sdk._logging import JsonFormatter  # noqa: E402
from rvai_sdk.extensions.drivers.http.logs import AccessLogMiddleware  # noqa: E402

BODY = b'{"ok":true}'


async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
}


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    pass


async def per_request(app: Any, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        await app(dict(SCOPE), receive, send)
    return (time.perf_counter() - start) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--driver-rps", type=float, default=2000.0)
    parser.add_argument("--quick", action="store_true", help="2,000 requests, 2 rounds (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 2_000, 2

    access = logging.getLogger("rvai_sdk.http.access")
    access.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    access.addHandler(handler)
    wrapped = AccessLogMiddleware(endpoint, instance="0123456789abcdef")
    cases = {"bare": (endpoint, logging.WARNING), "log off": (wrapped, logging.WARNING), "log on (JSON)": (wrapped, logging.INFO)}
    times: dict[str, list[float]] = {name: [] for name in cases}

    async def run() -> None:
        for name, (app, level) in cases.items():  # warm up
            access.setLevel(level)
            await per_request(app, 200)
        for _ in range(args.rounds):
            for name, (app, level) in cases.items():
                access.setLevel(level)
                handler.stream = io.StringIO()
                times[name].append(await per_request(app, args.requests))

    asyncio.run(run())
    us = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    budget = 1e6 / args.driver_rps
    print(f"access log cost on {machine()}; {args.requests:,} requests x {args.rounds} alternated rounds, medians")
    for name, value in us.items():
        extra = "" if name == "bare" else (
            f"   +{value - us['bare']:.2f} us/request = {100 * (value - us['bare']) / budget:.2f}% of a driver request "
            f"at {args.driver_rps:,.0f} req/s"
        )
        print(f"  {name:16} {value:8.2f} us/request{extra}")


if __name__ == "__main__":
    main()
