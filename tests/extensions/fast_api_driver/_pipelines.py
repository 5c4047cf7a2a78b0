"""Cells and pipelines of the HTTP driver tests (an importable module, so they travel to any runtime)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Image, Integer
from tests.conftest import Count, FailNegative, XIn, YOut


@dataclass
class ImageIn(Inputs):
    image: Image = Inputs.field(name="Image", description="any picture")


@dataclass
class ImageOut(Outputs):
    width: Integer = Outputs.field(name="Width")
    height: Integer = Outputs.field(name="Height")
    flipped: Image = Outputs.field(name="Flipped", description="the picture, mirrored left to right")


class ImageInfo(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: ImageIn) -> ImageOut:
        image = np.asarray(inputs.image)
        return ImageOut(
            width=Integer(image.shape[1]),
            height=Integer(image.shape[0]),
            flipped=Image(np.ascontiguousarray(image[:, ::-1])),
        )


def http_pipeline() -> Pipeline:
    """Inputs ``x`` (Integer) and ``image``; outputs ``count`` (per-sid counter), ``checked`` (fails for x < 0),
    ``width``, ``height`` and ``flipped``."""
    pf = PipelineFactory(name="http-test")
    count = pf.add_cell(ref="count", cell=Count())
    check = pf.add_cell(ref="check", cell=FailNegative())
    info = pf.add_cell(ref="info", cell=ImageInfo())
    pf.declare_input(ref="x", input=count.inputs.x)
    pf.declare_input(ref="x", input=check.inputs.x)
    pf.declare_input(ref="image", input=info.inputs.image)
    pf.declare_output(ref="count", output=count.outputs.y)
    pf.declare_output(ref="checked", output=check.outputs.y)
    pf.declare_output(ref="width", output=info.outputs.width)
    pf.declare_output(ref="height", output=info.outputs.height)
    pf.declare_output(ref="flipped", output=info.outputs.flipped)
    return pf.build()


class Gated(Cell):
    """``load_model`` waits until the file ``<model_path>/open`` exists (at most 60 s): a slow warm-up on demand."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Any, model_path: str | None) -> Any:
        gate = Path(str(model_path)) / "open"
        deadline = time.monotonic() + 60
        pause = threading.Event()
        while not gate.exists():  # bounded poll of a file another process creates
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gate} did not appear within 60 s")
            pause.wait(0.01)
        return None

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return YOut(y=Integer(inputs.x + 1))


def gated_pipeline() -> Pipeline:
    pf = PipelineFactory(name="gated")
    gated = pf.add_cell(ref="gated", cell=Gated())
    pf.declare_input(ref="x", input=gated.inputs.x)
    pf.declare_output(ref="y", output=gated.outputs.y)
    return pf.build()
