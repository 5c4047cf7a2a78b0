"""A pipeline that passes a Tensor and Detections through a cell (importable, so it travels to any runtime)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.types import Detections, Integer, Tensor


@dataclass
class MLIn(Inputs):
    tensor: Tensor = Inputs.field(name="Tensor", description="any numeric array")
    features: Tensor[np.float32, (None, 4)] = Inputs.field(name="Features", description="one row of 4 per object")
    detections: Detections = Inputs.field(name="Detections", description="objects found upstream")


@dataclass
class MLOut(Outputs):
    tensor: Tensor = Outputs.field(name="Tensor", description="the input tensor, unchanged")
    detections: Detections = Outputs.field(name="Detections", description="the input detections, unchanged")
    rows: Integer = Outputs.field(name="Rows", description="rows of features")
    kept: Detections = Outputs.field(name="Kept", description="the detections scoring at least 0.5")


class Echo(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: MLIn) -> MLOut:
        assert type(inputs.features) is Tensor[np.float32, (None, 4)]  # coerced at the boundary
        return MLOut(
            tensor=inputs.tensor,
            detections=inputs.detections,
            rows=Integer(inputs.features.shape[0]),
            kept=inputs.detections[inputs.detections.scores >= 0.5],
        )


def ml_pipeline() -> Pipeline:
    """Inputs ``tensor``, ``features``, ``detections``; outputs ``tensor``, ``detections``, ``rows``, ``kept``."""
    pf = PipelineFactory(name="ml-values")
    echo = pf.add_cell(ref="echo", cell=Echo())
    for port in ("tensor", "features", "detections"):
        pf.declare_input(ref=port, input=getattr(echo.inputs, port))
    for port in ("tensor", "detections", "rows", "kept"):
        pf.declare_output(ref=port, output=getattr(echo.outputs, port))
    return pf.build()
