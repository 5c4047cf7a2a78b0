# requires: httpx
"""An ``async def`` cell that calls another HTTP service, and ``await proc.apredict(...)``.

Cameras read licence plates; for each plate the ``Lookup`` cell asks a vehicle
registry (another HTTP service: here a small one this script starts on a loopback
port, answering after 100 ms as a remote service would) whether the vehicle is
flagged, and keeps a per-camera count of flagged sightings.

- ``Lookup.call`` is ``async def``: it awaits the registry with ``httpx.AsyncClient``
  on the inference process's event loop, up to ``concurrency=8`` calls at once; the
  client is made once, in ``load_model``, and shared by every call.
- Per-camera state stays safe: a camera's (sid's) requests reach the cell in order and
  never two at once, so ``context.state`` needs no lock.
- The caller is asyncio code too: ``asyncio.gather`` over ``proc.apredict(...)`` keeps
  every request in flight from one task.

Run it with ``python examples/async_cell.py [--runtime debug|local|ray]``; see docs/guides/asyncio.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Boolean, Integer, String

FLAGGED = {"B-RV-42", "K-AI-7"}


@dataclass
class PlateInputs(Inputs):
    plate: String = Inputs.field(name="Licence plate", description="A plate read by the camera")


@dataclass
class LookupOutputs(Outputs):
    flagged: Boolean = Outputs.field(name="Flagged", description="Whether the registry flags this vehicle")
    flagged_seen: Integer = Outputs.field(name="Flagged sightings", description="Flagged plates this camera saw so far")


@dataclass
class LookupParameters(Parameters):
    registry_url: String = Parameters.field(
        name="Registry URL", description="Base URL of the vehicle registry service", default=String("http://127.0.0.1:8900")
    )


@dataclass
class Sightings(State):
    flagged: Integer = State.field(default=Integer(0))


@cell(state=Sightings, concurrency=8)
class Lookup(Cell):
    """Asks the registry about each plate; up to 8 lookups are awaited at once."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: LookupParameters, model_path: str | None) -> Any:
        # One client for every call: they all run on the same event loop of the inference process.
        return httpx.AsyncClient(base_url=str(parameters.registry_url), timeout=10.0)

    @classmethod
    async def call(cls, context: InferenceContext, parameters: LookupParameters, inputs: PlateInputs) -> LookupOutputs:
        response = await context.model.get(f"/vehicles/{inputs.plate}")
        response.raise_for_status()
        flagged = bool(response.json()["flagged"])
        if flagged:  # this camera's state: no other call of this sid runs meanwhile
            context.state.flagged = Integer(context.state.flagged + 1)
        return LookupOutputs(flagged=Boolean(flagged), flagged_seen=context.state.flagged)


def build_pipeline() -> Pipeline:
    """One cell: plate in, flagged and the camera's flagged count out."""
    pf = PipelineFactory(name="PlateLookup")
    lookup = pf.add_cell(ref="lookup", cell=Lookup())
    pf.declare_input(ref="plate", input=lookup.inputs.plate)
    pf.declare_output(ref="flagged", output=lookup.outputs.flagged)
    pf.declare_output(ref="flagged_seen", output=lookup.outputs.flagged_seen)
    return pf.build()


class Registry(ThreadingHTTPServer):
    """The other service: ``GET /vehicles/<plate>`` → ``{"plate", "flagged"}`` after ``latency`` seconds."""

    daemon_threads = True

    def __init__(self, latency: float = 0.1) -> None:
        super().__init__(("127.0.0.1", 0), _RegistryHandler)
        self.latency = latency
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        """Most requests the registry was answering at once."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RegistryHandler(BaseHTTPRequestHandler):
    server: Registry

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        registry = self.server
        with registry.lock:
            registry.in_flight += 1
            registry.peak = max(registry.peak, registry.in_flight)
        try:
            threading.Event().wait(registry.latency)  # a remote service's latency
            plate = self.path.rsplit("/", 1)[-1]
            body = json.dumps({"plate": plate, "flagged": plate in FLAGGED}).encode()
        finally:
            with registry.lock:
                registry.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


SIGHTINGS = [
    ("cam-1", "B-RV-42"), ("cam-2", "M-XY-1"), ("cam-1", "S-AB-12"), ("cam-3", "K-AI-7"),
    ("cam-2", "B-RV-42"), ("cam-4", "HH-Q-3"), ("cam-1", "K-AI-7"), ("cam-3", "D-EF-9"),
    ("cam-4", "B-RV-42"), ("cam-2", "F-GH-5"), ("cam-3", "K-AI-7"), ("cam-4", "L-MN-8"),
    ("cam-1", "B-RV-42"), ("cam-2", "P-QR-4"), ("cam-3", "T-UV-6"), ("cam-4", "K-AI-7"),
]  # fmt: skip


async def stream_sightings(proc: Any) -> list[dict[str, Any]]:
    """Send every sighting at once from this task; results come back in the same order."""
    return list(await asyncio.gather(*(proc.apredict({"plate": plate}, sid=camera) for camera, plate in SIGHTINGS)))


def main(argv: list[str] | None = None) -> None:
    """Start the registry, serve the pipeline, send the sightings, print what came back."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="local", help="debug, local (default) or ray")
    args = parser.parse_args(argv)

    registry = Registry(latency=0.1)
    threading.Thread(target=registry.serve_forever, name="registry", daemon=True).start()
    inference = Inference(pipeline=build_pipeline(), parameters={"lookup": {"registry_url": registry.url}})
    try:
        with init(args.runtime) as rt, rt.start_inference(inference) as proc:
            started = time.monotonic()
            results = asyncio.run(stream_sightings(proc))
            elapsed = time.monotonic() - started
        for (camera, plate), outputs in zip(SIGHTINGS, results):
            mark = "FLAGGED" if outputs["flagged"] else "ok"
            print(f"{camera}: {plate:8} {mark:7} (flagged sightings on {camera}: {outputs['flagged_seen']})")
        print(
            f"{len(SIGHTINGS)} lookups of {registry.latency * 1000:.0f} ms each in {elapsed:.2f} s; "
            f"the registry answered up to {registry.peak} at once"
        )
    finally:
        registry.shutdown()
        registry.server_close()


if __name__ == "__main__":
    main()
