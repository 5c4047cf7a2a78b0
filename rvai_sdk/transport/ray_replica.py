"""The replica's side of :class:`~rvai_sdk.transport.ray_link.RayLink`: an async Ray actor holding an executor.

The class is plain Python; ``rvai_sdk.runtime.ray`` turns it into a Ray actor
(``ray.remote(ReplicaActor)``), so this module imports without Ray.

Every method returns an ``(ok, value)`` pair instead of raising, so that a
:class:`~rvai_sdk.exc.CellError` reaches the caller as itself, not wrapped in a
``RayTaskError``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
import time
import traceback
from concurrent.futures import Future
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rvai_sdk import _tracing
from rvai_sdk.exc import ProcessError
from rvai_sdk.execution.gc_tuning import tune_for_serving

if TYPE_CHECKING:
    from rvai_sdk.execution.executor import Executor

__all__ = ["ReplicaActor", "GAP_TIMEOUT", "Outcome", "failed", "node_ip"]

GAP_TIMEOUT = 5.0
"""Seconds a request waits for an earlier request of the same caller that has not arrived yet."""

Outcome = tuple[bool, Any]


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


_DRAIN_SECONDS = 5.0
"""Seconds ``stop`` waits for callers to collect results that are ready."""
_CALLER_TTL = 600.0
"""Seconds after its last poll a caller's (empty) outbox is forgotten."""


class _Outbox:
    """Finished results of one caller, waiting for its next :meth:`ReplicaActor.poll`.

    Executor futures finish on worker threads; ``done`` hands results to the event
    loop with one wake-up per burst, not one per result.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.results: list[tuple[int, Outcome]] = []
        self.ready = asyncio.Event()
        self.polled = time.monotonic()
        self._lock = threading.Lock()
        self._incoming: list[tuple[int, Outcome]] = []

    def pending(self) -> bool:
        """Whether results wait for the caller to collect them."""
        return bool(self.results or self._incoming)

    def put(self, rid: int, outcome: Outcome) -> None:
        """Add a result (on the event loop)."""
        self.results.append((rid, outcome))
        self.ready.set()

    def done(self, rid: int, future: Future[Any]) -> None:
        """Executor callback (any thread): queue the request's outcome."""
        try:
            outcome: Outcome = (True, future.result())
        except BaseException as exc:
            outcome = failed(exc)
        with self._lock:
            self._incoming.append((rid, outcome))
            first = len(self._incoming) == 1
        if first:
            self.loop.call_soon_threadsafe(self._move)

    def _move(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        if incoming:
            self.results.extend(incoming)
            self.ready.set()


class ReplicaActor:
    """A replica: runs the pipeline for the requests routed to it, keeps its sids' state.

    Callers send batches of requests (:meth:`submit_many`) and collect results with
    a long :meth:`poll`. Batches from one caller are submitted in the caller's
    sequence order (``seq``), whatever order Ray delivers them in; a batch waits at
    most :data:`GAP_TIMEOUT` seconds for a missing earlier one.

    Args:
        index: the replica's index in its inference process.
        build: makes the executor (not started) in the actor's process; it must end the
            process when the executor breaks, so the replica is reported dead.
    """

    def __init__(self, index: int, build: Callable[[], Executor]) -> None:
        self.index = index
        self._build_executor = build
        self._executor: Executor | None = None
        self._next: dict[str, int] = {}
        self._waiting: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outboxes: dict[str, _Outbox] = {}

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> Outcome:
        """Build the executor and run every ``load_model``; ``(True, where)`` once ready to serve."""
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._build)
        except BaseException as exc:
            return failed(exc)
        return (True, self.where())

    def _build(self) -> None:
        executor = self._build_executor()
        executor.start()
        tune_for_serving()  # the actor's process serves this replica only
        self._executor = executor

    def where(self) -> dict[str, Any]:
        """Where this replica runs: ``pid``, ``host`` and Ray ``node`` id."""
        import ray

        return {
            "pid": os.getpid(),
            "host": node_ip(),
            "hostname": socket.gethostname(),
            "node": ray.get_runtime_context().get_node_id(),
        }

    async def watch(self) -> Outcome:
        """Returns once the replica is stopped; fails (with a Ray error) when its process dies."""
        if self._stopped is None:
            self._stopped = asyncio.Event()
        await self._stopped.wait()
        return (True, None)

    async def stop(self, timeout: float | None) -> Outcome:
        """Stop taking requests, finish those in flight for up to ``timeout`` seconds, fail the rest."""
        executor = self._executor
        try:
            if executor is not None:
                await asyncio.get_running_loop().run_in_executor(None, executor.stop, timeout)
            deadline = time.monotonic() + _DRAIN_SECONDS
            while any(box.pending() for box in self._outboxes.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # bounded: callers collect their last results with poll()
        except BaseException as exc:
            return failed(exc)
        finally:
            if self._stopped is not None:
                self._stopped.set()
            if _tracing.TRACER is not None:  # the replica is about to go: export its last spans
                _tracing.flush()
        return (True, None)

    # -- requests -------------------------------------------------------------------------

    async def skip(self, caller: str, seq: int) -> Outcome:
        """``caller`` could not send request ``seq``: do not wait for it."""
        await self._turn(caller, seq)
        self._advance(caller, seq)
        return (True, None)

    async def submit_many(
        self, caller: str, seq: int, batch: list[tuple[Any, ...]]
    ) -> Outcome:
        """Submit a batch of requests ``(request id, inputs, sid, timeout[, traceparent])`` in order; their results come from :meth:`poll`.

        Returns as soon as the batch is submitted, so one slow request never holds back another's result.
        """
        await self._turn(caller, seq)
        try:
            box = self._outbox(caller)
            executor = self._executor
            for rid, inputs, sid, timeout, *trace in batch:
                try:
                    if executor is None:
                        raise ProcessError(f"replica {self.index} is not started")
                    if not trace:
                        future = executor.submit(inputs, sid, timeout)
                    else:  # traced by the caller: its traceparent
                        future = _tracing.serve(executor.submit, inputs, sid, timeout, trace[0], "ray")
                except BaseException as exc:
                    box.put(rid, failed(exc))
                    continue
                future.add_done_callback(functools.partial(box.done, rid))
        finally:
            self._advance(caller, seq)
        return (True, None)

    async def poll(self, caller: str, wait: float) -> Outcome:
        """The results of ``caller``'s requests finished since the last poll, ``[(request id, outcome), ...]``.

        Waits up to ``wait`` seconds for at least one.
        """
        box = self._outbox(caller)
        box.polled = time.monotonic()
        if not box.results:
            box.ready.clear()
            try:
                await asyncio.wait_for(box.ready.wait(), wait)
            except asyncio.TimeoutError:
                pass
        results, box.results = box.results, []
        box.polled = time.monotonic()
        return (True, results)

    def _outbox(self, caller: str) -> _Outbox:
        box = self._outboxes.get(caller)
        if box is None:
            loop = self._loop or asyncio.get_running_loop()
            box = self._outboxes[caller] = _Outbox(loop)
            now = time.monotonic()
            for other, old in list(self._outboxes.items()):  # forget callers that stopped polling long ago
                if now - old.polled > _CALLER_TTL and not old.results:
                    del self._outboxes[other]
        return box

    async def _turn(self, caller: str, seq: int) -> None:
        expected = self._next.setdefault(caller, 0)
        if seq <= expected:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[(caller, seq)] = waiter
        try:
            await asyncio.wait_for(waiter, GAP_TIMEOUT)
        except asyncio.TimeoutError:  # an earlier request was lost on the way: go on without it
            self._next[caller] = max(self._next[caller], seq)
        finally:
            self._waiting.pop((caller, seq), None)

    def _advance(self, caller: str, seq: int) -> None:
        if seq >= self._next.get(caller, 0):
            self._next[caller] = seq + 1
        waiter = self._waiting.get((caller, self._next[caller]))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _require(self) -> Executor:
        if self._executor is None:
            raise ProcessError(f"replica {self.index} is not started")
        return self._executor

    # -- state, parameters, counters --------------------------------------------------------

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Outcome:
        try:
            return (True, await asyncio.get_running_loop().run_in_executor(None, fn, *args))
        except BaseException as exc:
            return failed(exc)

    async def get_parameters(self) -> Outcome:
        """Cell ref → the parameters in force."""
        return await self._blocking(lambda: self._require().get_parameters())

    async def set_parameters(self, parameters: Mapping[str, Any]) -> Outcome:
        """Change parameters (reloading models whose ``load_model`` read a changed field)."""
        return await self._blocking(lambda: self._require().set_parameters(parameters))

    async def drop_state(self, sid: str) -> Outcome:
        """Forget ``sid``'s state (``UnknownSidError`` when none is kept)."""
        return await self._blocking(lambda: self._require().drop_state(sid))

    async def drop_states(self, sids: list[str]) -> Outcome:
        """Forget the state of each of ``sids`` that has one; how many were dropped."""

        def drop() -> int:
            executor = self._require()
            kept = set(executor.sids())
            dropped = 0
            for sid in sids:
                if sid in kept:
                    try:
                        executor.drop_state(sid)
                        dropped += 1
                    except LookupError:  # expired meanwhile
                        pass
            return dropped

        return await self._blocking(drop)

    async def get_state(self, sid: str) -> Outcome:
        """A copy of ``sid``'s state."""
        return await self._blocking(lambda: self._require().get_state(sid))

    async def sids(self) -> Outcome:
        """The sids whose state this replica keeps, least recently used first."""
        return await self._blocking(lambda: self._require().sids())

    async def stats(self) -> Outcome:
        """This replica's executor counters."""
        return await self._blocking(lambda: self._require().stats())

    async def ready(self) -> Outcome:
        """Whether this replica serves: its executor is running, not broken, with no stuck call."""
        executor = self._executor
        return (True, executor is not None and executor.ready())
