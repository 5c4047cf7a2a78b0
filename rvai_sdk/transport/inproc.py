"""The in-process link: the executor lives in the caller's process (the debug runtime)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from rvai_sdk._delivery import refuse_wait
from rvai_sdk.exc import ProcessError
from rvai_sdk.transport.link import CONTROL_METHODS, Link

if TYPE_CHECKING:
    from rvai_sdk.execution.executor import Executor

__all__ = ["InProcessLink"]


class InProcessLink(Link):
    """A :class:`~rvai_sdk.transport.link.Link` straight onto an executor in this process.

    Nothing crosses a boundary, so nothing is translated: the executor's own errors
    (all :class:`~rvai_sdk.exc.RvaiError`\\ s) reach the caller as they are.

    Args:
        executor: a started executor.
        name: the pipeline's name, for messages.
    """

    def __init__(self, executor: Executor, name: str = "") -> None:
        self.executor = executor
        self.name = name
        self._closed = False

    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> Future[dict[str, Any]]:
        if self._closed:
            raise ProcessError(f"the link to the inference process of pipeline {self.name!r} is closed")
        return self.executor.submit(inputs, sid, timeout)

    def call(self, method: str, *args: Any, timeout: float | None = 60.0) -> Any:
        # As on the other links (where it could never end): no control call from the executor's callbacks.
        refuse_wait(self.executor, f"{method}()", self.name or self.executor.pipeline.name)
        if method not in CONTROL_METHODS:
            raise ValueError(f"unknown control method {method!r}; valid: {', '.join(sorted(CONTROL_METHODS))}")
        if method == "ping":
            return True
        return getattr(self.executor, method)(*args)

    def is_ready(self) -> bool:
        return not self._closed and self.executor.ready()

    def close(self) -> None:
        self._closed = True
