"""``async def`` cells on every runtime: they call a real HTTP service, overlap up to their declared
concurrency, and keep per-sid order and state rules; ``await proc.apredict(...)``; a cell in ``__main__``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.runtime import Inference, InferenceProcess, Runtime
from tests.conftest import require_extra
from tests.integration._async_cells import CONCURRENCY, Service, service_pipeline

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
SIDS = [f"cam-{i}" for i in range(6)]  # more streams than the cell's concurrency
PER_SID = 3


@pytest.fixture
def service() -> Iterator[Service]:
    require_extra("httpx")
    server = Service(gate=CONCURRENCY)
    thread = threading.Thread(target=server.serve_forever, name="async-test-service", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_async_cell_calls_a_service_concurrently_in_sid_order_on_every_runtime(runtime: Runtime, service: Service) -> None:
    inference = Inference(pipeline=service_pipeline(), parameters={"call": {"url": service.url}})
    requests = [(i, sid, k) for k in range(PER_SID) for i, sid in enumerate(SIDS)]  # round-robin; each sid in order

    async def send_all(proc: InferenceProcess) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(proc.apredict({"x": 100 * i + k}, sid=sid) for i, sid, k in requests)))

    with runtime.start_inference(inference) as proc:
        results = asyncio.run(send_all(proc))
        stats = proc.stats()

    for (i, sid, k), outputs in zip(requests, results):
        assert outputs["y"] == 10 * (100 * i + k)  # the service's answer reached the outputs
        assert outputs["n"] == k + 1, f"{sid}: its request {k} ran as number {outputs['n']}"  # arrival order per sid
    assert service.requests == len(requests)
    assert service.peak == CONCURRENCY  # the calls overlapped, up to the declared concurrency and no more
    assert service.sid_peak == 1  # never two calls of one sid at once
    assert stats["requests"]["succeeded"] == len(requests) and stats["requests"]["failed"] == 0


MAIN_SCRIPT = textwrap.dedent(
    '''
    import asyncio
    import json
    import sys
    from dataclasses import dataclass

    from rvai_sdk.cell import Cell, cell
    from rvai_sdk.data import Inputs, Outputs, Parameters, State
    from rvai_sdk.pipeline import PipelineFactory
    from rvai_sdk.runtime import Inference, init
    from rvai_sdk.types import Integer, String


    @dataclass
    class In(Inputs):
        x: Integer = Inputs.field()


    @dataclass
    class Out(Outputs):
        y: Integer = Outputs.field()
        n: Integer = Outputs.field()


    @dataclass
    class Params(Parameters):
        url: String = Parameters.field(default=String("http://127.0.0.1:9"))


    @dataclass
    class Seen(State):
        n: Integer = State.field(default=Integer(0))


    @cell(state=Seen, concurrency=2)
    class MainCall(Cell):
        @classmethod
        def load_model(cls, context, parameters: Params, model_path):
            import httpx

            return httpx.AsyncClient(base_url=str(parameters.url), timeout=30.0)

        @classmethod
        async def call(cls, context, parameters: Params, inputs: In) -> Out:
            context.state.n = n = Integer(context.state.n + 1)
            response = await context.model.get("/times10", params={"x": int(inputs.x), "sid": context.sid})
            return Out(y=Integer(response.json()["y"]), n=n)


    pf = PipelineFactory(name="main-async")
    c = pf.add_cell(ref="c", cell=MainCall())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    pf.declare_output(ref="n", output=c.outputs.n)
    inference = Inference(pipeline=pf.build(), parameters={"c": {"url": sys.argv[2]}})


    async def main(proc):
        return await asyncio.gather(*(proc.apredict({"x": x}, sid=f"s{x % 2}") for x in range(6)))


    with init(sys.argv[1]) as rt, rt.start_inference(inference) as proc:
        results = asyncio.run(main(proc))
    print(json.dumps([{"y": int(r["y"]), "n": int(r["n"])} for r in results]))
    '''
)


@pytest.mark.slow
def test_async_cell_defined_in_main_runs_on_the_local_runtime(tmp_path: Path) -> None:
    require_extra("httpx")
    server = Service(gate=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script = tmp_path / "user_script.py"
        script.write_text(MAIN_SCRIPT)
        result = subprocess.run(
            [sys.executable, str(script), "local", server.url], capture_output=True, text=True, timeout=80, cwd=ROOT
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    assert [o["y"] for o in outputs] == [10 * x for x in range(6)]
    assert [o["n"] for o in outputs] == [1, 1, 2, 2, 3, 3]  # per sid (x % 2), in arrival order
    assert server.peak == 2 and server.sid_peak == 1


@pytest.mark.slow
def test_the_async_benchmark_runs_and_reports_its_ratios() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_async.py"), "--quick", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=80,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "| I/O, async def call, concurrency 8 |" in result.stdout and "ratios: trivial async/sync latency" in result.stdout
