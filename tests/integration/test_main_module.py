"""The contract with everything defined in ``__main__``: a user's script, run in a subprocess, on every runtime.

Cells, data classes (fields with and without defaults), parameters, state, a custom
driver (port ``"dummy-port"``) and the HTTP driver all live in the script's
``__main__``, so they travel to the inference and driver processes by value
(dill on local, cloudpickle on Ray), as they do from a notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rvai_sdk.runtime import RUNTIMES
from tests.conftest import require_extra

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    '''
    import json
    import sys
    import threading
    from dataclasses import dataclass

    from rvai_sdk.cell import Cell, cell
    from rvai_sdk.context import InferenceContext
    from rvai_sdk.data import Inputs, Outputs, Parameters, State
    from rvai_sdk.drivers import PipelineDriver
    from rvai_sdk.exc import CellError, InputValidationError
    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver
    from rvai_sdk.pipeline import PipelineFactory
    from rvai_sdk.resources import DriverResourcesRequest
    from rvai_sdk.runtime import Inference, init
    from rvai_sdk.types import Integer


    @dataclass
    class AddIn(Inputs):
        a: Integer = Inputs.field(name="A")  # no default
        b: Integer = Inputs.field(default=Integer(1))


    @dataclass
    class AddOut(Outputs):
        total: Integer = Outputs.field()
        seen: Integer = Outputs.field()


    @dataclass
    class AddParams(Parameters):
        scale: Integer = Parameters.field(default=Integer(1))


    @dataclass
    class Seen(State):
        count: Integer = State.field(default=Integer(0))


    @cell(state=Seen)
    class Add(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: AddParams, inputs: AddIn) -> AddOut:
            if inputs.a < 0:
                raise ValueError("a must be >= 0")
            context.state.count = Integer(context.state.count + 1)
            return AddOut(total=Integer((inputs.a + inputs.b) * parameters.scale), seen=context.state.count)


    class Once(PipelineDriver):
        """Sends one request from its own process and keeps the answer for stats()."""

        def resources_request(self) -> DriverResourcesRequest:
            return DriverResourcesRequest(ports=["dummy-port", "http"])

        def run(self, inference, resources) -> None:
            self.ports = dict(resources.ports)
            self.answer = inference.predict({"a": 5}, sid="driver").result(timeout=30)
            self.done = True
            self.wait_stopped()

        def stats(self):
            if not getattr(self, "done", False):
                return {}
            return {"total": int(self.answer["total"]), "ports": sorted(self.ports)}


    pf = PipelineFactory(name="main-module")
    add = pf.add_cell(ref="add", cell=Add())
    pf.declare_input(ref="a", input=add.inputs.a)
    pf.declare_output(ref="total", output=add.outputs.total)
    pf.declare_output(ref="seen", output=add.outputs.seen)
    pipeline = pf.build()

    report = {}
    with init(sys.argv[1]) as rt:
        with rt.start_inference(Inference(pipeline=pipeline, parameters={"add": {"scale": 2}})) as proc:
            first = proc.predict({"a": 1}, sid="s").result(timeout=30)
            second = proc.predict({"a": 2}, sid="s").result(timeout=30)
            report["predict"] = [int(first["total"]), int(first["seen"]), int(second["total"]), int(second["seen"])]
            try:
                proc.predict({"a": -1}).result(timeout=30)
            except CellError as exc:
                report["cell_error"] = exc.ref
            try:
                proc.predict({})
            except InputValidationError as exc:
                report["missing"] = str(exc).splitlines()[0]

            http = proc.add_driver("webapi", FastAPIDriver)
            client = FastAPIClient(process=http)
            client.wait(timeout=60)
            out = client.predict({"a": 3}, sid="web")
            report["http"] = [int(out["total"]), int(out["seen"])]

            once = proc.add_driver("once", Once)
            done = threading.Event()
            for _ in range(600):
                stats = once.stats()
                if stats:
                    break
                done.wait(0.05)
            report["driver"] = stats
    print("REPORT " + json.dumps(report))
    '''
)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "runtime_name", [pytest.param(n, marks=[pytest.mark.ray] if n == "ray" else []) for n in sorted(RUNTIMES)]
)
def test_cells_data_classes_and_drivers_defined_in_main_work_on_every_runtime(
    runtime_name: str, tmp_path: Path
) -> None:
    require_extra("fastapi")
    if runtime_name == "ray":
        require_extra("ray")
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    result = subprocess.run(
        [sys.executable, str(script), runtime_name],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=200,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, f"the script failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report = json.loads(lines[-1][len("REPORT ") :])
    assert report["predict"] == [4, 1, 6, 2]  # (a + the default b) * scale; the state counts per sid
    assert report["cell_error"] == "add"
    assert "'a'" in report["missing"]
    assert report["http"] == [8, 1]  # a field without a default, served over HTTP
    assert report["driver"] == {"total": 12, "ports": ["dummy-port", "http"]}
