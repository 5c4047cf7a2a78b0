"""A pipeline for the task store tests (an importable module, so it travels to the local runtime)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Integer, Tensor
from tests.conftest import Counter, XIn

GATE_ENV = "RVAI_TEST_TASK_GATE"
"""A file path: a request with x < 0 holds until that file exists (at most 60 s)."""


@dataclass
class HeldOut(Outputs):
    count: Integer = Outputs.field(name="Count", description="requests of this sid so far")
    zeros: Tensor = Outputs.field(name="Zeros", description="x (at least 0) random bytes: a result of that size")


@cell(state=Counter)
class CountHold(Cell):
    """Counts its sid's requests; x < 0 holds until the gate file exists; returns x incompressible bytes."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> HeldOut:
        context.state.n = Integer(context.state.n + 1)
        if inputs.x < 0:
            gate = Path(os.environ[GATE_ENV])
            deadline = time.monotonic() + 60
            pause = threading.Event()
            while not gate.exists() and time.monotonic() < deadline:  # bounded poll of a file the test creates
                pause.wait(0.01)
        size = max(0, int(inputs.x))
        return HeldOut(count=context.state.n, zeros=Tensor(np.random.default_rng(size).integers(0, 256, size, np.uint8)))


def held_pipeline(name: str = "task-store-test") -> Pipeline:
    pf = PipelineFactory(name=name)
    hold = pf.add_cell(ref="hold", cell=CountHold())
    pf.declare_input(ref="x", input=hold.inputs.x)
    pf.declare_output(ref="count", output=hold.outputs.count)
    pf.declare_output(ref="bytes", output=hold.outputs.zeros)
    return pf.build()
