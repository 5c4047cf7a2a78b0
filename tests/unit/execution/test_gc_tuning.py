"""A serving process's garbage collector: frozen after load, thresholds raised, RVAI_SERVING_GC to opt out or choose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

PROBE = """
import gc, json
from rvai_sdk.execution.gc_tuning import tune_for_serving
before = gc.get_threshold()
try:
    done = tune_for_serving()
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"done": done, "thresholds": gc.get_threshold(), "before": before, "frozen": gc.get_freeze_count()}))
"""


def probe(setting: str | None) -> dict[str, object]:
    """Run tune_for_serving in a fresh interpreter (never in this one) with RVAI_SERVING_GC set to ``setting``."""
    env = {k: v for k, v in os.environ.items() if k != "RVAI_SERVING_GC"}
    if setting is not None:
        env["RVAI_SERVING_GC"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=50, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_serving_process_freezes_what_it_loaded_and_raises_the_thresholds() -> None:
    result = probe(None)
    assert result["done"] is True
    assert result["thresholds"] == [100_000, 50, 100]
    assert isinstance(result["frozen"], int) and result["frozen"] > 1000, "the loaded modules are in the permanent generation"


def test_rvai_serving_gc_0_keeps_pythons_defaults_and_three_numbers_set_the_thresholds() -> None:
    kept = probe("0")
    assert kept["done"] is False and kept["frozen"] == 0
    assert kept["thresholds"] == kept["before"], "Python's own thresholds"
    assert probe("5000,20,50")["thresholds"] == [5000, 20, 50]


def test_a_bad_rvai_serving_gc_is_an_error_naming_the_variable() -> None:
    result = probe("lots")
    assert result["error"] == "ParameterError"
    assert "RVAI_SERVING_GC" in str(result["message"]) and "'lots'" in str(result["message"])


CYCLES = """
import gc, json, threading
import numpy as np
from rvai_sdk.cell import Cell
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.runtime.inference import Inference, build_executor
from rvai_sdk.drivers.port import check_request
from rvai_sdk.types import Integer, Tensor
from tests.conftest import single
from dataclasses import dataclass

@dataclass
class FrameIn(Inputs):
    x: Tensor[np.uint8, (None,)]

@dataclass
class CountOut(Outputs):
    y: Integer

class Refuse(Cell):
    @classmethod
    def call(cls, context, parameters: Parameters, inputs: FrameIn) -> CountOut:
        raise ValueError("poison frame")

pipeline = single(Refuse)
executor = build_executor(Inference(pipeline=pipeline))
executor.start()
inputs = check_request(pipeline, {"x": np.zeros(1 << 20, np.uint8)}, None, 256)

def fail_once(sid):
    # as the inference server does: wait through a callback, read the exception, drop the future
    done = threading.Event()
    future = executor.submit(inputs, sid, 30.0)
    future.add_done_callback(lambda _: done.set())
    done.wait(30)
    assert "poison frame" in str(future.exception())

for i in range(5):
    fail_once(f"warm-{i}")
gc.collect()
gc.disable()
for i in range(100):
    fail_once(f"s-{i}")
found = gc.collect()
executor.stop()
print(json.dumps({"unreachable": found}))
"""


def test_failing_requests_leave_no_reference_cycles_for_the_collector() -> None:
    # A failed call's exception holds its traceback, whose frames held the request and its inputs:
    # if they formed a cycle, every failing request's inputs would stay alive until a collection,
    # which the serving thresholds make rare (a burst of poison frames would pile up in memory).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CYCLES], env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"unreachable": 0}
