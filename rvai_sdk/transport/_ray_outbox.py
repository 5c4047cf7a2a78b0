"""How a Ray actor answers its callers: ``(ok, value)`` outcomes, and the outbox that holds them until a poll.

Every method of the replica and driver actors returns an :data:`Outcome` instead of raising, so
that a :class:`~rvai_sdk.exc.CellError` reaches the caller as itself, not wrapped in a
``RayTaskError``; :func:`failed` makes the failed one (the caller reads it with
:func:`~rvai_sdk.transport.ray_link.unwrap`). ``_Outbox`` holds the finished results of one caller
of a :class:`~rvai_sdk.transport.ray_replica.ReplicaActor` until its next ``poll``, handing
results from the executor's threads to the actor's event loop with one wake-up per burst.
:func:`node_ip` is the node's address as Ray knows it, for an actor to say where it runs.

:mod:`~rvai_sdk.transport.ray_replica` re-exports ``Outcome``, ``failed`` and ``node_ip``, which
are imported from there. Ray imports only happen in functions, so this module imports without Ray.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from rvai_sdk.exc import ProcessError

__all__ = ["Outcome", "failed", "node_ip"]

Outcome = tuple[bool, Any]
"""An actor method's answer: ``(True, value)``, or ``(False, error)`` for the caller to raise."""


def node_ip() -> str:
    """This node's address as Ray knows it."""
    import ray.util

    get: Any = ray.util.get_node_ip_address
    return str(get())


def failed(exc: BaseException) -> Outcome:
    """The ``(False, error)`` outcome of ``exc`` (a non-``Exception`` becomes a ``ProcessError`` with its traceback)."""
    if isinstance(exc, Exception):
        return (False, exc)
    return (False, ProcessError(f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"))


class _Outbox:
    """Finished results of one caller, waiting for its next :meth:`~rvai_sdk.transport.ray_replica.ReplicaActor.poll`.

    Executor futures finish on worker threads; ``done`` hands results to the event
    loop with one wake-up per burst, not one per result.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, finished: Callable[[str], None]) -> None:
        self.loop = loop
        self.results: list[tuple[int, Outcome]] = []
        self.ready = asyncio.Event()
        self.polled = time.monotonic()
        self._finished = finished
        self._lock = threading.Lock()
        self._incoming: list[tuple[int, Outcome, str | None]] = []

    def pending(self) -> bool:
        """Whether results wait for the caller to collect them."""
        return bool(self.results or self._incoming)

    def put(self, rid: int, outcome: Outcome) -> None:
        """Add a result (on the event loop)."""
        self.results.append((rid, outcome))
        self.ready.set()

    def done(self, rid: int, sid: str | None, future: Future[Any]) -> None:
        """Executor callback (any thread): queue the request's outcome."""
        try:
            outcome: Outcome = (True, future.result())
        except BaseException as exc:
            outcome = failed(exc)
        with self._lock:
            self._incoming.append((rid, outcome, sid))
            first = len(self._incoming) == 1
        if first:
            self.loop.call_soon_threadsafe(self._move)

    def _move(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        if incoming:
            finished = self._finished
            for rid, outcome, sid in incoming:
                self.results.append((rid, outcome))
                if sid is not None:
                    finished(sid)
            self.ready.set()
