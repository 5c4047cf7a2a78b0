"""The data-plane interface: how a caller reaches an inference process, whatever runtime runs it.

A :class:`Link` is to an inference process what httpx's ``BaseTransport`` is to a
server: one small interface with implementations side by side, each mapping its
own library's errors to :class:`~rvai_sdk.exc.RvaiError`\\ s once.

- :class:`~rvai_sdk.transport.inproc.InProcessLink`: the executor is in this process (debug runtime).
- :class:`~rvai_sdk.transport.client.UnixLink`: a Unix socket plus shared memory for large arrays
  (local runtime; :mod:`~rvai_sdk.transport.channel`, :mod:`~rvai_sdk.transport.shm`,
  :mod:`~rvai_sdk.transport.server`).
- :class:`~rvai_sdk.transport.ray_link.RayLink`: Ray actor replicas, a sid sticking to one of them
  (ray runtime; :mod:`~rvai_sdk.transport.ray_replica` is the replica's side).

Process handles (``InferenceProcess``) and the driver's port
(:class:`~rvai_sdk.drivers.port.RestrictedInferenceProcess`) talk to a ``Link`` only.
A link carries inputs that were already validated: validation happens once, in
the handle or the port, before ``submit``.
"""

from __future__ import annotations

import abc
from concurrent.futures import Future
from typing import Any

__all__ = ["Link", "CONTROL_METHODS"]

CONTROL_METHODS = frozenset(
    {"get_parameters", "set_parameters", "drop_state", "get_state", "sids", "stats", "ping", "ready"}
    | {"get_models", "set_models"}
)
"""The control calls every link answers besides ``submit`` (the executor's methods of those names).

``ping`` answers ``True``; ``ready`` is what :meth:`Link.is_ready` asks.
"""


class Link(abc.ABC):
    """One caller's connection to one inference process: requests, control calls, readiness.

    Implementations are thread-safe: many threads submit at once. Errors that reach a
    caller are :class:`~rvai_sdk.exc.RvaiError`\\ s: a cell's own error as itself
    (:class:`~rvai_sdk.exc.CellError`, :class:`~rvai_sdk.exc.DeadlineExceededError`...),
    an unreachable or dead process as :class:`~rvai_sdk.exc.ProcessError` naming it.
    """

    @abc.abstractmethod
    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> Future[dict[str, Any]]:
        """Send one request whose inputs are already validated; a future of its outputs.

        Args:
            inputs: pipeline input ref → typed value (validated by the caller).
            sid: the state id, or ``None`` for fresh state that is not kept.
            timeout: the request's deadline in seconds from now (enforced by the executor), or ``None``.

        Raises:
            ProcessError: the process cannot be reached now (the future is not made).
        """

    @abc.abstractmethod
    def call(self, method: str, *args: Any, timeout: float | None = 60.0) -> Any:
        """Run one of :data:`CONTROL_METHODS` in the inference process; its value.

        Raises:
            ProcessError: unreachable, or no answer within ``timeout`` seconds.
            RvaiError: what the method raised there (e.g. ``ParameterError``, ``UnknownSidError``).
        """

    def is_ready(self) -> bool:
        """Whether the process answers and reports itself ready (loaded, not broken, no stuck call)."""
        try:
            return bool(self.call("ready", timeout=5.0))
        except Exception:  # unreachable, or no answer: not ready
            return False

    @abc.abstractmethod
    def close(self) -> None:
        """Stop using the link: requests still pending fail with ``ProcessError``. Idempotent."""
