"""What a driver sees of an inference process: predict and the pipeline's spec, nothing more."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from rvai_sdk.exc import InputValidationError
from rvai_sdk.pipeline.graph import InputSpec, OutputSpec, Pipeline

__all__ = ["RestrictedInferenceProcess", "check_request"]


def check_request(pipeline: Pipeline, inputs: Mapping[str, Any], sid: str | None) -> dict[str, Any]:
    """Validate one request's sid and inputs; the typed inputs.

    Raises:
        InputValidationError: a bad sid, or a missing, unknown or wrongly typed input.
    """
    if sid is not None and not isinstance(sid, str):
        raise InputValidationError(f"sid must be a str or None, got {type(sid).__name__} {sid!r}", field="sid")
    return pipeline.validate_inputs(inputs)


class RestrictedInferenceProcess:
    """The inference process as a driver sees it: ``predict`` and the pipeline's spec.

    The runtime hands one to :meth:`PipelineDriver.run`. It can send requests and
    describe the pipeline; it cannot stop, restart or reconfigure the process. On
    the local runtime it lives in the driver process and talks to the inference
    process directly; it reconnects by itself after ``proc.restart()``.

    Attributes:
        pipeline: the pipeline (its ``inputs``/``outputs`` specs, schemas, ``describe()``).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        predict: Callable[[dict[str, Any], str | None], Future[dict[str, Any]]],
        is_ready: Callable[[], bool],
        stats: Callable[[], dict[str, Any]],
    ) -> None:
        self.pipeline = pipeline
        self._predict = predict
        self._is_ready = is_ready
        self._stats = stats

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self.pipeline.name

    @property
    def inputs(self) -> Mapping[str, InputSpec]:
        """Pipeline input ref → its spec (type, title, description)."""
        return self.pipeline.inputs

    @property
    def outputs(self) -> Mapping[str, OutputSpec]:
        """Pipeline output ref → its spec."""
        return self.pipeline.outputs

    def predict(self, inputs: Mapping[str, Any], sid: str | None = None) -> Future[dict[str, Any]]:
        """Run the pipeline on one request; same contract as ``InferenceProcess.predict``.

        Raises:
            InputValidationError: a missing, unknown or wrongly typed input (here, not in the future).
            ProcessError: the inference process cannot be reached (it died or is restarting).
        """
        return self._predict(check_request(self.pipeline, inputs, sid), sid)

    def is_ready(self) -> bool:
        """Whether the inference process is reachable, with every model loaded."""
        return self._is_ready()

    def stats(self) -> dict[str, Any]:
        """The inference process's counters (see ``InferenceProcess.stats``).

        Raises:
            ProcessError: the inference process cannot be reached.
        """
        return self._stats()

    def __repr__(self) -> str:
        return f"<RestrictedInferenceProcess pipeline={self.pipeline.name!r}>"
