"""Pipelines: cells wired into a validated DAG between a virtual source and sink."""

from rvai_sdk.pipeline.factory import PipelineFactory, PortLike
from rvai_sdk.pipeline.graph import SINK, SOURCE, Binding, InputSpec, OutputSpec, Pipeline, PipelineDrawing

__all__ = [
    "PipelineFactory",
    "Pipeline",
    "PipelineDrawing",
    "PortLike",
    "InputSpec",
    "OutputSpec",
    "Binding",
    "SOURCE",
    "SINK",
]
