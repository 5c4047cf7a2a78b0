"""Drivers feed an inference process: the base class, its parameters, its port onto the process, sources and sinks.

Example:
    >>> from rvai_sdk.drivers import PipelineDriver, DriverParameters
    >>> issubclass(PipelineDriver, object) and issubclass(DriverParameters, object)
    True
"""

from rvai_sdk.drivers.driver import DriverParameters, PipelineDriver, service_record
from rvai_sdk.drivers.port import RestrictedInferenceProcess

__all__ = ["PipelineDriver", "DriverParameters", "service_record", "RestrictedInferenceProcess"]

from rvai_sdk.drivers.sink import Record, RecordError, Sink, SinkContext, SinkMap, SinkParameters, WriteResult  # noqa: E402
from rvai_sdk.drivers.source import (  # noqa: E402
    Source,
    SourceContext,
    SourceItem,
    SourceMap,
    SourceParameters,
)

__all__ += ["Source", "SourceItem", "SourceContext", "SourceParameters", "SourceMap"]
__all__ += ["Sink", "Record", "RecordError", "WriteResult", "SinkContext", "SinkParameters", "SinkMap"]
