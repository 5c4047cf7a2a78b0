"""Runtimes start inference processes: ``init("debug")`` in-process, more backends to come.

Example:
    >>> from rvai_sdk.runtime import init
    >>> init("nope")
    Traceback (most recent call last):
    ...
    rvai_sdk.exc.UnknownRuntimeError: unknown runtime 'nope'; valid runtimes: debug, local, ray
"""

from __future__ import annotations

import importlib
from typing import Any

from rvai_sdk.exc import UnknownRuntimeError
from rvai_sdk.execution.executor import BatchingPolicy
from rvai_sdk.runtime._backend import Runtime
from rvai_sdk.runtime.inference import Inference
from rvai_sdk.runtime.driver_process import PipelineDriverProcess
from rvai_sdk.runtime.process import InferenceProcess
from rvai_sdk.drivers.port import RestrictedInferenceProcess
from rvai_sdk.runtime.status import ProcessStatus

__all__ = [
    "init",
    "Runtime",
    "Inference",
    "InferenceProcess",
    "RestrictedInferenceProcess",
    "PipelineDriverProcess",
    "ProcessStatus",
    "BatchingPolicy",
    "RUNTIMES",
]

RUNTIMES: dict[str, str] = {
    "debug": "rvai_sdk.runtime.debug",
    "local": "rvai_sdk.runtime.local",
    "ray": "rvai_sdk.runtime.ray",
}
"""Runtime name → the module implementing it; a backend is imported only when chosen."""


def init(name: str = "debug", **options: Any) -> Runtime:
    """Create a runtime by name.

    Args:
        name: one of :data:`RUNTIMES` (``"debug"``: the executor runs in this process).
        **options: backend options.

    Returns:
        The runtime; use it as a context manager or call ``stop()`` when done.

    Raises:
        UnknownRuntimeError: no runtime has that name; the message lists the valid ones.
    """
    module = RUNTIMES.get(name)
    if module is None:
        raise UnknownRuntimeError(f"unknown runtime {name!r}; valid runtimes: {', '.join(RUNTIMES)}")
    backend = importlib.import_module(module)
    runtime: Runtime = backend.create(**options)
    return runtime
