"""The replica's side of :class:`~rvai_sdk.transport.ray_link.RayLink`: an async Ray actor holding an executor.

The class is plain Python; ``rvai_sdk.runtime.ray`` turns it into a Ray actor
(``ray.remote(ReplicaActor)``), so this module imports without Ray.

Every method returns an ``(ok, value)`` pair instead of raising, so that a
:class:`~rvai_sdk.exc.CellError` reaches the caller as itself, not wrapped in a
``RayTaskError``. That pair (``Outcome``, :func:`failed`), the per-caller outbox that holds
finished results until the caller's next :meth:`ReplicaActor.poll` (``_Outbox``) and
:func:`node_ip` live in :mod:`~rvai_sdk.transport._ray_outbox`; this module re-exports
``Outcome``, ``failed`` and ``node_ip``, which the driver actor imports from here. The routing it
shares with the caller's link (:func:`~rvai_sdk.transport.ray_link.rendezvous`, ``Route``,
``SidMoved``, ``unwrap``) comes from :mod:`~rvai_sdk.transport._ray_routes`.

Hand-over (``set_replicas``): the runtime gives every replica the new replica set and
its epoch (:meth:`ReplicaActor.set_routes`). From then on a replica refuses a request of
a sid it does not own (:class:`~rvai_sdk.transport.ray_link.SidMoved`: the caller sends
it again to the owner), and a replica that now owns a sid another replica owned before
pulls the sid's state from it (:meth:`ReplicaActor.handoff`: the old owner waits for the
sid's requests there to finish, exports the state and forgets it) before it runs the
sid's first request; the sid's requests meanwhile wait, in order. :meth:`take_over`
pulls every moved sid at once (the runtime calls it on every replica before
``set_replicas`` returns, so idle sids move too, and removed replicas are emptied
before they stop); :meth:`settle` ends the hand-over.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rvai_sdk import _tracing
from rvai_sdk.exc import ProcessError
from rvai_sdk.execution.gc_tuning import tune_for_serving
from rvai_sdk.transport._ray_outbox import Outcome, _Outbox, failed, node_ip
from rvai_sdk.transport._ray_routes import Route, SidMoved, rendezvous, unwrap

if TYPE_CHECKING:
    from rvai_sdk.execution.executor import Executor

__all__ = ["ReplicaActor", "GAP_TIMEOUT", "EPOCH_WAIT", "HANDOFF_CHUNK", "Outcome", "failed", "node_ip"]

logger = logging.getLogger(__name__)

GAP_TIMEOUT = 5.0
"""Seconds a request waits for an earlier request of the same caller that has not arrived yet."""
EPOCH_WAIT = 30.0
"""Seconds a batch (or a hand-over) from a caller that knows a newer replica set waits for this replica to learn it."""
HANDOFF_CHUNK = 256
"""Most sids pulled from one replica in one call while taking over."""

_DRAIN_SECONDS = 5.0
"""Seconds ``stop`` waits for callers to collect results that are ready."""
_CALLER_TTL = 600.0
"""Seconds after its last poll a caller's (empty) outbox is forgotten."""


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
        # the replica set (see set_routes) and the hand-over of sids between replicas
        self._epoch = 0
        self._routes: list[Route] = []
        self._indices: tuple[int, ...] = ()
        self._owners: dict[str, int] = {}
        self._epoch_changed: asyncio.Event | None = None
        self._previous: dict[int, Any] | None = None
        """Index → handle of the replicas of the previous set while sids are handed over; ``None`` otherwise."""
        self._previous_indices: tuple[int, ...] = ()
        self._drain_wait: float | None = 10.0
        self._running: dict[str, int] = {}
        """Sid → its requests accepted here and not finished (deferred ones included)."""
        self._drained: dict[str, asyncio.Event] = {}
        self._pulls: dict[str, asyncio.Future[None]] = {}
        """Sid → done once its state was pulled from its previous replica."""
        self._deferred: dict[str, list[tuple[_Outbox, int, dict[str, Any], float | None, str | None]]] = {}
        self._settled: set[str] = set()
        """Sids that need no pull any more in this hand-over."""
        self.handed = {"exported": 0, "imported": 0, "refused": 0, "pull_failures": 0}
        """Hand-over counters of this replica since it started: states it exported to and imported from
        other replicas, requests it refused for a sid it no longer owns (``SidMoved``), sids whose pull
        failed (they continued from the durable store, or fresh); in ``stats()["handover"]``."""

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
        self,
        caller: str,
        seq: int,
        batch: list[tuple[Any, ...]],
        epoch: int = 0,
    ) -> Outcome:
        """Submit a batch of requests ``(request id, inputs, sid, timeout[, traceparent])`` in order; their results come from :meth:`poll`.

        Returns as soon as the batch is submitted, so one slow request never holds back another's result.
        ``epoch``: the replica set the caller knows; a newer one than this replica's is waited for.
        A request of a sid this replica does not own is refused with
        :class:`~rvai_sdk.transport.ray_link.SidMoved`; one of a sid whose state is still on its
        previous replica waits (in order) until it is pulled here.
        """
        await self._turn(caller, seq)
        try:
            if epoch > self._epoch:
                await self._await_epoch(epoch)
            box = self._outbox(caller)
            indices = self._indices
            for rid, inputs, sid, timeout, *traced in batch:
                trace = traced[0] if traced else None  # the caller's traceparent, when it traces
                if sid is not None and indices:
                    if self._owner(sid) != self.index:
                        self.handed["refused"] += 1
                        box.put(rid, (False, self._moved(sid)))
                        continue
                    if sid in self._pulls or self._needs_pull(sid):
                        self._running[sid] = self._running.get(sid, 0) + 1
                        self._deferred.setdefault(sid, []).append((box, rid, inputs, timeout, trace))
                        if sid not in self._pulls:
                            self._start_pulls([sid], rendezvous(sid, self._previous_indices))
                        continue
                self._run(box, rid, inputs, sid, timeout, trace)
        finally:
            self._advance(caller, seq)
        return (True, None)

    def _run(
        self, box: _Outbox, rid: int, inputs: dict[str, Any], sid: str | None, timeout: float | None, trace: str | None
    ) -> None:
        try:
            executor = self._executor
            if executor is None:
                raise ProcessError(f"replica {self.index} is not started")
            if trace is None:
                future = executor.submit(inputs, sid, timeout)
            else:  # traced by the caller: its traceparent
                future = _tracing.serve(executor.submit, inputs, sid, timeout, trace, "ray")
        except BaseException as exc:
            box.put(rid, failed(exc))
            return
        if sid is not None:
            self._running[sid] = self._running.get(sid, 0) + 1
        future.add_done_callback(functools.partial(box.done, rid, sid))

    def _finished(self, sid: str) -> None:
        """A request of ``sid`` accepted here finished (on the event loop)."""
        left = self._running.get(sid, 0) - 1
        if left > 0:
            self._running[sid] = left
            return
        self._running.pop(sid, None)
        drained = self._drained.pop(sid, None)
        if drained is not None:
            drained.set()

    # -- the replica set and the hand-over of sids -----------------------------------------

    def _owner(self, sid: str) -> int:
        owner = self._owners.get(sid)
        if owner is None:
            if len(self._owners) >= 100_000:
                self._owners.clear()
            owner = self._owners[sid] = rendezvous(sid, self._indices)
        return owner

    def _moved(self, sid: str) -> SidMoved:
        return SidMoved(
            f"sid {sid!r} belongs to replica {self._owner(sid)}, not to replica {self.index} (epoch {self._epoch}); "
            "its request is sent there",
            self._epoch,
            self._routes,
        )

    def _needs_pull(self, sid: str) -> bool:
        previous = self._previous
        if previous is None or sid in self._settled:
            return False
        before = rendezvous(sid, self._previous_indices)
        return before != self.index and before in previous

    async def _await_epoch(self, epoch: int) -> None:
        deadline = time.monotonic() + EPOCH_WAIT
        while self._epoch < epoch:
            if self._epoch_changed is None:
                self._epoch_changed = asyncio.Event()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # go on with the set known here: a stale request is refused and sent again
            try:
                await asyncio.wait_for(self._epoch_changed.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def set_routes(
        self, epoch: int, routes: list[Route], previous: list[Route] | None, drain_wait: float | None = 10.0
    ) -> Outcome:
        """Take the replica set of ``epoch`` (an older one is ignored).

        Args:
            epoch: the set's epoch (the runtime counts them up).
            routes: the replicas of the set.
            previous: the replicas of the set before, when sids move between them (their
                state is pulled from there); ``None`` when no sid moves.
            drain_wait: seconds :meth:`handoff` waits for a sid's requests to finish here.
        """
        if epoch <= self._epoch:
            return (True, None)
        if previous is not None and self._previous is not None:
            await self._finish_pulls()  # a hand-over still under way finishes before the next begins
        self._epoch = epoch
        self._routes = list(routes)
        self._indices = tuple(sorted(route.index for route in routes))
        self._owners = {}
        self._drain_wait = drain_wait
        if previous is not None:
            self._previous = {route.index: route.handle for route in previous}
            self._previous_indices = tuple(sorted(self._previous))
            self._settled = set()
        changed, self._epoch_changed = self._epoch_changed, None
        if changed is not None:
            changed.set()
        return (True, None)

    async def owned_by(self, index: int, epoch: int) -> Outcome:
        """The sids whose state is in memory here and which replica ``index`` owns in ``epoch``."""
        await self._await_epoch(epoch)
        executor = self._executor
        if executor is None:
            return (True, [])

        def listing() -> list[str]:
            assert executor is not None
            executor.flush_checkpoints()  # an interval policy: what the new owner may read from the store is current
            return [sid for sid in executor.sids() if sid not in self._deferred and self._owner(sid) == index]

        return await self._blocking(listing)

    async def handoff(self, sids: list[str], epoch: int) -> Outcome:
        """Give up the state of ``sids`` (now owned elsewhere): ``{sid: (sequence number, pickled states) or None}``.

        Waits (up to the drain wait of :meth:`set_routes`) for each sid's requests here to
        finish, then exports its state and forgets it. ``None`` for a sid with no state in
        memory here (the new owner restores it from the durable store, if any, or starts it fresh).
        """
        await self._await_epoch(epoch)
        deadline = None if self._drain_wait is None else time.monotonic() + self._drain_wait
        mine = [sid for sid in sids if not (self._indices and self._owner(sid) == self.index)]
        for sid in mine:
            while self._running.get(sid):
                drained = self._drained.setdefault(sid, asyncio.Event())
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    logger.warning(
                        "replica %d hands sid %r over with requests still running after %g s; they finish with "
                        "the old state and their updates are not handed over", self.index, sid, self._drain_wait,
                    )
                    break
                try:
                    await asyncio.wait_for(drained.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        executor = self._executor

        def export() -> dict[str, tuple[int, dict[str, bytes]] | None]:
            out: dict[str, tuple[int, dict[str, bytes]] | None] = {}
            if executor is None:
                return out
            for sid in mine:
                try:
                    out[sid] = executor.export_state(sid)
                except Exception as exc:  # a State field pickle refuses: the sid starts fresh on its new replica
                    logger.error("replica %d could not hand sid %r over: %s", self.index, sid, exc)
                    out[sid] = None
            return out

        result = await self._blocking(export)
        if result[0]:
            self.handed["exported"] += sum(1 for v in result[1].values() if v is not None)
        return result

    def _start_pulls(self, sids: list[str], source: int) -> asyncio.Task[None]:
        loop = asyncio.get_running_loop()
        for sid in sids:
            self._pulls[sid] = loop.create_future()
        return loop.create_task(self._pull(sids, source))

    async def _pull(self, sids: list[str], source: int) -> None:
        """Pull the state of ``sids`` from replica ``source`` of the previous set, then run their waiting requests."""
        try:
            previous = self._previous or {}
            handle = previous.get(source)
            if handle is None:
                raise ProcessError(f"replica {source} of the previous set is unknown")
            exported = unwrap(await handle.handoff.remote(sids, self._epoch))
            states = {sid: item for sid, item in exported.items() if item is not None}
            executor = self._executor
            if states and executor is not None:

                def load() -> None:
                    assert executor is not None
                    for sid, (seq, blobs) in states.items():
                        executor.import_state(sid, seq, blobs)

                await asyncio.get_running_loop().run_in_executor(None, load)
                self.handed["imported"] += len(states)
        except BaseException as exc:  # the old replica died or failed: its sids continue from the store, or fresh
            self.handed["pull_failures"] += len(sids)
            logger.warning(
                "replica %d could not pull the state of %d sid(s) from replica %d (%s: %s); they continue from "
                "the durable state store if there is one, else with fresh state",
                self.index, len(sids), source, type(exc).__name__, exc,
            )
        finally:
            for sid in sids:
                self._settled.add(sid)
                future = self._pulls.pop(sid, None)
                if future is not None and not future.done():
                    future.set_result(None)
                for box, rid, inputs, timeout, trace in self._deferred.pop(sid, []):
                    self._finished(sid)  # counted when deferred; _run counts it again once it is submitted
                    self._run(box, rid, inputs, sid, timeout, trace)

    async def _finish_pulls(self) -> None:
        while self._pulls:
            await asyncio.gather(*self._pulls.values())

    async def take_over(self) -> Outcome:
        """Pull every sid this replica owns now whose state is in memory on another replica of the previous set.

        Returns ``(True, how many sids were pulled)``; a replica that cannot be reached is
        skipped (its sids continue from the durable store, or fresh).
        """
        previous = self._previous
        if previous is None:
            return (True, 0)
        sources = [index for index in sorted(previous) if index != self.index]
        listings = await asyncio.gather(
            *(previous[index].owned_by.remote(self.index, self._epoch) for index in sources), return_exceptions=True
        )
        tasks: list[asyncio.Task[None]] = []
        count = 0
        for index, listing in zip(sources, listings):
            try:
                if isinstance(listing, BaseException):
                    raise listing
                sids = [sid for sid in unwrap(listing) if sid not in self._settled and sid not in self._pulls]
            except BaseException as exc:
                logger.warning("replica %d could not list the sids of replica %d: %s", self.index, index, exc)
                continue
            count += len(sids)
            for start in range(0, len(sids), HANDOFF_CHUNK):
                tasks.append(self._start_pulls(sids[start : start + HANDOFF_CHUNK], index))
        if tasks:
            await asyncio.gather(*tasks)
        await self._finish_pulls()
        return (True, count)

    async def settle(self, epoch: int) -> Outcome:
        """The hand-over of ``epoch`` is complete: pull nothing more."""
        await self._finish_pulls()
        if epoch == self._epoch:
            self._previous = None
            self._previous_indices = ()
            self._settled = set()
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
            box = self._outboxes[caller] = _Outbox(loop, self._finished)
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

    async def set_parameters(self, parameters: Mapping[str, Any], timeout: float | None = None) -> Outcome:
        """Change parameters (reloading models whose ``load_model`` read a changed field; see ``Executor.set_parameters``)."""
        return await self._blocking(lambda: self._require().set_parameters(parameters, timeout))

    async def get_models(self) -> Outcome:
        """Cell ref → the model path in force."""
        return await self._blocking(lambda: self._require().get_models())

    async def set_models(self, models: Mapping[str, Any], timeout: float | None = None) -> Outcome:
        """Give cells new model paths (their ``load_model`` runs again; see ``Executor.set_models``)."""
        return await self._blocking(lambda: self._require().set_models(models, timeout))

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
        return await self._blocking(lambda: {**self._require().stats(), "handover": dict(self.handed)})

    async def ready(self) -> Outcome:
        """Whether this replica serves: its executor is running, not broken, with no stuck call."""
        executor = self._executor
        return (True, executor is not None and executor.ready())
