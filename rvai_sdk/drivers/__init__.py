"""Drivers feed an inference process: the base class, its parameters, sources and sinks.

Example:
    >>> from rvai_sdk.drivers import PipelineDriver, DriverParameters
    >>> issubclass(PipelineDriver, object) and issubclass(DriverParameters, object)
    True
"""

from rvai_sdk.drivers.driver import DriverParameters, PipelineDriver, service_record

__all__ = ["PipelineDriver", "DriverParameters", "service_record"]
