"""The driver's port onto an inference process: predict and the pipeline's spec over a :class:`Link`, nothing more.

It lives beside the driver base, not in the runtimes: drivers import it without
reaching up into ``rvai_sdk.runtime``; every runtime hands one, built on its own
:class:`~rvai_sdk.transport.link.Link`, to :meth:`PipelineDriver.run`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk.exc import InputValidationError
from rvai_sdk.pipeline.graph import InputSpec, OutputSpec, Pipeline
from rvai_sdk.transport.link import Link

__all__ = [
    "RestrictedInferenceProcess",
    "await_result",
    "check_request",
    "check_sid",
    "check_timeout",
    "DEFAULT_MAX_SID_LENGTH",
]


DEFAULT_MAX_SID_LENGTH = 256
"""Most characters in a sid unless ``Inference(max_sid_length=...)`` says otherwise."""

def check_sid(sid: str | None, max_length: int = DEFAULT_MAX_SID_LENGTH) -> None:
    """Check a request's sid: ``None`` or a str of at most ``max_length`` characters.

    Raises:
        InputValidationError: (field ``"sid"``) not a str, not valid Unicode text, or too long.
    """
    if sid is None:
        return
    if not isinstance(sid, str):
        shown = repr(sid)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InputValidationError(f"sid must be a str or None, got {type(sid).__name__} {shown}", field="sid")
    if not sid.isascii():
        try:
            sid.encode("utf-8")
        except UnicodeEncodeError:
            raise InputValidationError(
                f"sid {sid[:32]!r} is not valid Unicode text (it holds a lone surrogate), so no state store could keep it; "
                "send the sid as valid UTF-8",
                field="sid",
            ) from None
    if len(sid) > max_length:
        raise InputValidationError(
            f"sid is {len(sid)} characters long, more than the limit of {max_length} (sid starts {sid[:32]!r}); "
            "use a shorter stream id, or raise Inference(max_sid_length=...)",
            field="sid",
        )


def check_timeout(timeout: float | None) -> None:
    """Check a request deadline: ``None`` (no deadline) or a finite number of seconds > 0.

    Raises:
        InputValidationError: (field ``"timeout"``) anything else.
    """
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise InputValidationError(
            f"timeout must be a number of seconds > 0 or None (no deadline), got {timeout!r}", field="timeout"
        )


async def await_result(future: Future[dict[str, Any]]) -> dict[str, Any]:
    """Await a request's future from a coroutine, without blocking the event loop.

    The future resolves on the executor's or the link's threads; the awaiting task
    resumes on its own loop. Cancelling the task does not cancel the request (it is
    already queued or running); its result is dropped.
    """
    return await asyncio.wrap_future(future)


def check_request(
    pipeline: Pipeline, inputs: Mapping[str, Any], sid: str | None, max_sid_length: int = DEFAULT_MAX_SID_LENGTH
) -> dict[str, Any]:
    """Validate one request's sid and inputs; the typed inputs.

    Raises:
        InputValidationError: a bad or too long sid, or a missing, unknown or wrongly typed input.
    """
    check_sid(sid, max_sid_length)
    return pipeline.validate_inputs(inputs)


class RestrictedInferenceProcess:
    """The inference process as a driver sees it: ``predict`` and the pipeline's spec.

    The runtime hands one to :meth:`PipelineDriver.run`. It can send requests and
    describe the pipeline; it cannot stop, restart or reconfigure the process. It is
    a port onto a :class:`~rvai_sdk.transport.link.Link`: on the local runtime it
    lives in the driver process and talks to the inference process directly over a
    Unix socket; it reconnects by itself after ``proc.restart()``.

    Args:
        pipeline: the pipeline of the inference process.
        link: how requests reach it.
        max_sid_length: ``Inference(max_sid_length=...)``.
        request_timeout: ``Inference(request_timeout=...)``.

    Attributes:
        pipeline: the pipeline (its ``inputs``/``outputs`` specs, schemas, ``describe()``).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        link: Link,
        *,
        max_sid_length: int = DEFAULT_MAX_SID_LENGTH,
        request_timeout: float | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._link = link
        self.max_sid_length = max_sid_length
        self.request_timeout = request_timeout

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

    def predict(
        self, inputs: Mapping[str, Any], sid: str | None = None, *, timeout: float | None = None
    ) -> Future[dict[str, Any]]:
        """Run the pipeline on one request; same contract as ``InferenceProcess.predict``.

        Args:
            inputs: pipeline input ref → value.
            sid: the state id of the stream (at most ``max_sid_length`` characters), or ``None``.
            timeout: the request's deadline in seconds; ``None`` takes the inference's
                ``request_timeout``. Past it the future fails with
                :class:`~rvai_sdk.exc.DeadlineExceededError`.

        Raises:
            InputValidationError: a missing, unknown or wrongly typed input, a bad or too long
                sid, or a bad timeout (here, not in the future).
            ProcessError: the inference process cannot be reached (it died or is restarting).
        """
        check_timeout(timeout)
        checked = check_request(self.pipeline, inputs, sid, self.max_sid_length)
        if _tracing.TRACER is not None:  # traced: an rvai.predict span around the request
            return _tracing.predict(self._link.submit, checked, sid, self.request_timeout if timeout is None else timeout)
        return self._link.submit(checked, sid, self.request_timeout if timeout is None else timeout)

    async def apredict(
        self, inputs: Mapping[str, Any], sid: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """``await`` form of :meth:`predict`, for drivers written with asyncio: output ref → typed value.

        Validates and sends at once (in the calling thread, without waiting for the
        result), then awaits the result without blocking the event loop.

        Raises:
            InputValidationError: as :meth:`predict`.
            ProcessError: the inference process cannot be reached.
            CellError: a cell failed for this request.
            DeadlineExceededError: the request ran past ``timeout``.
        """
        return await await_result(self.predict(inputs, sid, timeout=timeout))

    def submit(
        self, inputs: dict[str, Any], sid: str | None = None, *, timeout: float | None = None
    ) -> Future[dict[str, Any]]:
        """Send a request whose inputs were already validated, without validating them again.

        For a driver that decodes and validates its inputs itself, with
        ``self.pipeline.validate_inputs`` (e.g. the HTTP driver): the sid and timeout are
        still checked, cheaply; the inputs must be what ``validate_inputs`` returned.

        Raises:
            InputValidationError: a bad or too long sid, or a bad timeout.
            ProcessError: the inference process cannot be reached.
        """
        check_timeout(timeout)
        check_sid(sid, self.max_sid_length)
        if _tracing.TRACER is not None:  # traced: an rvai.predict span around the request
            return _tracing.predict(self._link.submit, inputs, sid, self.request_timeout if timeout is None else timeout)
        return self._link.submit(inputs, sid, self.request_timeout if timeout is None else timeout)

    def is_ready(self) -> bool:
        """Whether the inference process is reachable, with every model loaded."""
        return self._link.is_ready()

    def drop_state(self, sid: str) -> None:
        """Forget the state kept for ``sid`` (a stream that ended), as ``InferenceProcess.drop_state``.

        Raises:
            InputValidationError: a bad or too long sid.
            UnknownSidError: no state is kept for ``sid``.
            ProcessError: the inference process cannot be reached.
        """
        check_sid(sid, self.max_sid_length)
        self._link.call("drop_state", sid)

    def stats(self) -> dict[str, Any]:
        """The inference process's counters (see ``InferenceProcess.stats``).

        Raises:
            ProcessError: the inference process cannot be reached.
        """
        stats: dict[str, Any] = self._link.call("stats")
        return stats

    def __repr__(self) -> str:
        return f"<RestrictedInferenceProcess pipeline={self.pipeline.name!r}>"
