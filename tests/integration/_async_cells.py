"""Async cells of the asyncio tests (an importable module, so they travel to any runtime), and the HTTP
service they call: a real server on a loopback port that records how many calls overlapped."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Integer, String

CONCURRENCY = 4


@dataclass
class CallIn(Inputs):
    x: Integer = Inputs.field()


@dataclass
class CallOut(Outputs):
    y: Integer = Outputs.field(description="what the service answered: 10 * x")
    n: Integer = Outputs.field(description="the how-manieth request of its sid this was")


@dataclass
class ServiceParams(Parameters):
    url: String = Parameters.field(default=String("http://127.0.0.1:9"))


@dataclass
class Seen(State):
    n: Integer = State.field(default=Integer(0))


@cell(state=Seen, concurrency=CONCURRENCY)
class CallService(Cell):
    """Asks the service for 10 * x; counts its sid's requests; checks no other call touched the state meanwhile."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: ServiceParams, model_path: str | None) -> Any:
        import httpx

        return httpx.AsyncClient(base_url=str(parameters.url), timeout=30.0)

    @classmethod
    async def call(cls, context: InferenceContext, parameters: ServiceParams, inputs: CallIn) -> CallOut:
        context.state.n = n = Integer(context.state.n + 1)
        response = await context.model.get("/times10", params={"x": int(inputs.x), "sid": context.sid})
        response.raise_for_status()
        if context.state.n != n:
            raise AssertionError(f"sid {context.sid}: another call changed the state while this one awaited")
        return CallOut(y=Integer(response.json()["y"]), n=n)


def service_pipeline() -> Pipeline:
    """Input ``x``; outputs ``y`` (from the service) and ``n`` (per-sid count)."""
    pf = PipelineFactory(name="async-service")
    call = pf.add_cell(ref="call", cell=CallService())
    pf.declare_input(ref="x", input=call.inputs.x)
    pf.declare_output(ref="y", output=call.outputs.y)
    pf.declare_output(ref="n", output=call.outputs.n)
    return pf.build()


class Service(ThreadingHTTPServer):
    """``GET /times10?x=&sid=`` → ``{"y": 10 * x}``.

    The first ``gate`` requests are held until that many are in at once (or ``hold``
    seconds passed), so overlapping calls do overlap here; later ones answer at once.
    ``peak`` is the most requests in at once, ``sid_peak`` the most of one sid.
    """

    daemon_threads = True

    def __init__(self, gate: int = CONCURRENCY, hold: float = 10.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.gate = gate
        self.hold = hold
        self.cv = threading.Condition()
        self.in_flight = 0
        self.peak = 0
        self.opened = False
        self.per_sid: dict[str, int] = defaultdict(int)
        self.sid_peak = 0
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Service

    def do_GET(self) -> None:  # noqa: N802
        service = self.server
        query = parse_qs(urlsplit(self.path).query)
        x = int(query["x"][0])
        sid = query.get("sid", [""])[0]
        with service.cv:
            service.requests += 1
            service.in_flight += 1
            service.per_sid[sid] += 1
            service.peak = max(service.peak, service.in_flight)
            service.sid_peak = max(service.sid_peak, service.per_sid[sid])
            if service.in_flight >= service.gate:
                service.opened = True
                service.cv.notify_all()
            service.cv.wait_for(lambda: service.opened, timeout=service.hold)
            service.opened = True  # held long enough: never hold a later request
            service.in_flight -= 1
            service.per_sid[sid] -= 1
        body = json.dumps({"y": 10 * x}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass
