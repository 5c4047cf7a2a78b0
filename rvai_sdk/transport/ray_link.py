"""The Ray link: send a request to the Ray actor replica that owns its sid.

A :class:`RayLink` (a :class:`~rvai_sdk.transport.link.Link`) lives wherever requests are made: in the user's process (behind
``InferenceProcess.predict`` on the ray runtime) and in every driver actor (behind its
``RestrictedInferenceProcess``). It never goes through the runtime: requests go
straight from the caller to the replica actor, results straight back.

Routing:

- a sid goes to the replica with the highest rendezvous score
  ``blake2b(index:sid)``, so it sticks to one replica while the replica set is
  stable, and scaling from n to n+1 replicas moves only about 1/(n+1) of the sids;
- ``sid=None`` goes to the replica with the fewest requests in flight from this caller.

Coalescing: at most :data:`MAX_SENDS` batches are on their way to a replica at
once; requests made meanwhile wait in the route's outbox and leave together in
the next batch (``submit_many``). Results come back through one long ``poll``
per replica that returns every result finished since the last one, so under
load both directions carry many requests per Ray call, and a slow request never
holds back another's result. A lone request costs two Ray calls (send, poll).

Ordering: every batch carries this caller's sequence number for that replica;
the replica submits batches in that order (see :mod:`~rvai_sdk.transport.ray_replica`), because Ray
does not promise that an async actor starts calls in the order they were sent.

Rescaling (``set_replicas``) hands sids over without breaking their order. Every
replica set has an *epoch*; batches carry the caller's. When a sid's owner changes,
this link holds the sid's new requests until its requests still in flight on the old
replica have finished (a client-side drain), then sends them to the new owner. A
replica that receives a request for a sid it no longer owns (a caller that has not
heard of the change yet) refuses it with :class:`SidMoved`, which carries the new
routes: the link takes them and sends the request again, before any later request
of that sid. The new owner pulls the sid's state from the old one before running it.

What the link shares with the replica lives in :mod:`~rvai_sdk.transport._ray_routes`:
:func:`rendezvous`, :class:`Route` (and the request record it keeps), :class:`SidMoved`,
:func:`unwrap` and :func:`translate_ray_error`. This module re-exports those names; import
them from here.

Ray imports only happen in functions, so this module can be imported without Ray.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk._delivery import LinkFuture, delivered, delivering, refuse_wait
from rvai_sdk.exc import ProcessError, RvaiError
from rvai_sdk.execution.stats import merge_stats
from rvai_sdk.transport._ray_routes import Route, SidMoved, _Req, _is_death, rendezvous, translate_ray_error, unwrap
from rvai_sdk.transport.link import CONTROL_METHODS, Link

__all__ = ["Route", "RayLink", "SidMoved", "rendezvous", "translate_ray_error", "unwrap"]

MAX_SENDS = 2
"""Batches of requests on their way to one replica at once; more requests wait and leave together."""
POLL_SECONDS = 10.0
"""Longest a result poll waits on the replica before it is renewed."""
_CACHE_LIMIT = 100_000
"""Most sids whose replica a router remembers (the cache is cleared when it is full)."""
MAX_MOVES = 16
"""Times one request may be refused by a replica that no longer owns its sid before it fails."""


class RayLink(Link):
    """Sends requests to the replica that owns their sid; thread-safe.

    Control calls fan out as the process's contract needs: ``set_parameters``, ``sids``,
    ``stats`` and ``ready`` go to every replica (values merged), ``drop_state`` and
    ``get_state`` to the sid's replica, ``get_parameters`` to the first. Ray's errors
    become :class:`~rvai_sdk.exc.RvaiError`\\ s here (:func:`translate_ray_error`), once.

    Args:
        pipeline_name: for error messages.
        routes: the replicas, one :class:`Route` per index.
    """

    def __init__(self, pipeline_name: str, routes: Sequence[Route] = (), epoch: int = 0) -> None:
        self.pipeline_name = pipeline_name
        self.caller = uuid.uuid4().hex
        self._rids = itertools.count(1)
        self._lock = threading.Lock()
        self._routes: dict[int, Route] = {}
        self._indices: tuple[int, ...] = ()
        self._owner: dict[str, Route] = {}
        self._closed_reason: str | None = None
        self._epoch = 0
        self._flying: dict[str, list[Any]] = {}
        """Sid → [the route its requests in flight went to, how many]."""
        self._held: dict[str, list[_Req]] = {}
        """Sid → its requests waiting for those in flight on its previous replica (request id order)."""
        self.update(routes, epoch)

    # -- the replica set ----------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the replica set this link sends to (0 until one was given)."""
        return self._epoch

    def update(self, routes: Sequence[Route], epoch: int | None = None) -> None:
        """Replace the replica set; a replica whose generation changed starts a fresh sequence.

        Args:
            routes: the replicas.
            epoch: the replica set's epoch; a set older than the one in use is ignored.
                ``None``: take it whatever it is.
        """
        with self._lock:
            self._update(routes, epoch)

    def _update(self, routes: Sequence[Route], epoch: int | None) -> None:
        if epoch is not None:
            if epoch < self._epoch:
                return
            self._epoch = epoch
        fresh: dict[int, Route] = {}
        for route in routes:
            current = self._routes.get(route.index)
            if current is not None and current.generation == route.generation:
                fresh[route.index] = current
            else:
                fresh[route.index] = Route(route.index, route.handle, route.generation, route.node)
        self._routes = fresh
        self._indices = tuple(sorted(fresh))
        self._owner = {}
        if fresh:
            self._closed_reason = None

    def close(self, reason: str | None = None) -> None:
        """Refuse requests from now on with a :class:`ProcessError` saying ``reason``."""
        with self._lock:
            self._closed_reason = reason or f"the link to the inference process of pipeline {self.pipeline_name!r} is closed"
            self._routes = {}
            self._indices = ()
            self._owner = {}

    def routes(self) -> list[Route]:
        """The current replicas, by index."""
        with self._lock:
            return [self._routes[i] for i in self._indices]

    def replica_for(self, sid: str) -> Route:
        """The replica that owns ``sid``.

        Raises:
            ProcessError: there is no replica (the process is stopped or restarting).
        """
        with self._lock:
            return self._route_for(sid)

    def _route_for(self, sid: str | None) -> Route:
        if not self._indices:
            raise ProcessError(
                self._closed_reason
                or f"the inference process of pipeline {self.pipeline_name!r} has no replica to send to"
            )
        if sid is None:  # the least busy live replica (a dead one has nothing in flight: it would win)
            return min(self._routes.values(), key=lambda r: (r.dead is not None, r.in_flight))
        route = self._owner.get(sid)
        if route is None:
            if len(self._owner) >= _CACHE_LIMIT:
                self._owner.clear()
            route = self._routes[rendezvous(sid, self._indices)]
            self._owner[sid] = route
        return route

    def is_ready(self) -> bool:
        """Whether there is a replica to send to and every replica reports itself ready (no stuck call)."""
        if not self._indices:
            return False
        try:
            return all(self.call_all("ready", timeout=5.0))
        except Exception:  # a replica cannot be reached or did not answer: not ready
            return False

    # -- requests -----------------------------------------------------------------------

    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> Future[dict[str, Any]]:
        """Send validated inputs to the sid's replica; a future of the outputs.

        ``timeout`` is the request's deadline in seconds (enforced by the replica's executor).

        The future fails with the cell's :class:`~rvai_sdk.exc.CellError`, or with a
        :class:`ProcessError` naming the replica when it dies or cannot be reached.

        Requests are coalesced: at most :data:`MAX_SENDS` batches per replica are on
        their way at once; requests made meanwhile leave together in the next batch.
        Results come back, also coalesced, through one long poll per replica, so a
        slow request never holds back another's result. A request of a sid whose
        replica changed waits until the sid's requests on the old replica finished.

        Raises:
            ProcessError: there is no replica to send to.
        """
        out: Future[dict[str, Any]] = LinkFuture()
        out._token, out._name = self, self.pipeline_name  # type: ignore[attr-defined]  # see _delivered
        out.set_running_or_notify_cancel()
        trace = None if _tracing.TRACER is None else _tracing.hop(out, "ray", self.pipeline_name, sid)
        with self._lock:
            route = self._route_for(sid)
            if route.dead is not None:  # the sid's replica died; its replacement is not published yet
                raise self._death(route, route.dead, sid)
            req = _Req(next(self._rids), out, sid, inputs, timeout, trace)
            if sid is not None:
                held = self._held.get(sid)
                if held is not None:
                    held.append(req)
                    return out
                flying = self._flying.get(sid)
                if flying is not None and flying[0] is not route:  # the sid moved: drain the old replica first
                    self._held[sid] = [req]
                    return out
            self._put(route, req)
            sends, poll = self._kick(route)
        self._act(route, sends, poll)
        return out

    def _put(self, route: Route, req: _Req) -> None:
        """Add ``req`` to ``route``'s outbox (caller holds the lock)."""
        route.pending[req.rid] = req
        if req.trace is None:
            route.outbox.append((req.rid, req.inputs, req.sid, req.timeout))
        else:
            route.outbox.append((req.rid, req.inputs, req.sid, req.timeout, req.trace))
        sid = req.sid
        if sid is not None:
            flying = self._flying.get(sid)
            if flying is None:
                self._flying[sid] = [route, 1]
            else:
                flying[1] += 1

    def _landed(self, req: _Req, release: set[str]) -> None:
        """``req`` left its route (result, failure or refusal; caller holds the lock); ``release`` gets its
        sid when held requests of it may go now."""
        sid = req.sid
        if sid is None:
            return
        flying = self._flying.get(sid)
        if flying is None:
            return
        flying[1] -= 1
        if flying[1] <= 0:
            del self._flying[sid]
            if sid in self._held:
                release.add(sid)

    def _kick(self, route: Route) -> tuple[tuple[Future[Any], int, list[int]] | None, Future[Any] | None]:
        """Send a batch if fewer than :data:`MAX_SENDS` are on their way, and start the poll (caller holds the lock)."""
        sends = self._flush(route) if route.sending < MAX_SENDS else None
        return sends, self._start_poll(route)

    def _act(
        self, route: Route, sends: tuple[Future[Any], int, list[int]] | None, poll: Future[Any] | None
    ) -> None:
        if sends is not None:
            self._watch_send(route, sends)
        if poll is not None:
            poll.add_done_callback(lambda done: self._delivered(self._polled, route, done))

    def _delivered(self, method: Callable[..., None], *args: Any) -> None:
        """Run ``method`` (it resolves our futures) marked as delivering our answers.

        Ray runs the callbacks of its futures on its own thread: a completion callback that
        waited there for another answer of ours would wait forever, so such a wait raises.
        """
        previous = delivering(self)
        try:
            method(*args)
        finally:
            delivered(previous)

    def _release(self, sids: set[str]) -> None:
        """Send the held requests of ``sids`` (none in flight any more) to the sids' replicas now."""
        for sid in sorted(sids):
            failures: list[tuple[_Req, RvaiError]] = []
            route: Route | None = None
            sends: tuple[Future[Any], int, list[int]] | None = None
            poll: Future[Any] | None = None
            with self._lock:
                if sid in self._flying or sid not in self._held:
                    continue
                held = self._held.pop(sid)
                try:
                    route = self._route_for(sid)
                except ProcessError as exc:
                    failures = [(req, exc) for req in held]
                else:
                    if route.dead is not None:
                        failures = [(req, self._death(route, route.dead, sid)) for req in held]
                    else:
                        for req in held:
                            self._put(route, req)
                        sends, poll = self._kick(route)
            for req, error in failures:
                if not req.out.done():
                    req.out.set_exception(error)
            if route is not None:
                self._act(route, sends, poll)

    def _watch_send(self, route: Route, sends: tuple[Future[Any], int, list[int]]) -> None:
        future, seq, rids = sends
        future.add_done_callback(lambda done: self._delivered(self._sent, route, done, seq, rids))

    def _flush(self, route: Route) -> tuple[Future[Any], int, list[int]] | None:
        """Send the outbox as one batch (caller holds the lock): the send's future, sequence number and request ids."""
        if not route.outbox:
            return None
        batch, route.outbox = route.outbox, []
        seq = next(route.seq)
        route.sending += 1
        try:
            ref = route.handle.submit_many.remote(self.caller, seq, batch, self._epoch)
        except BaseException as exc:  # e.g. inputs Ray cannot serialise: fail this batch, keep the sequence whole
            route.sending -= 1
            self._skip(route, seq)
            error = translate_ray_error(exc, self._where(route), "sending requests")
            error.__cause__ = exc
            release: set[str] = set()
            for rid, *_ in batch:
                req = route.pending.pop(rid, None)
                if req is not None:
                    self._landed(req, release)
                    req.out.set_exception(error)
            if release:  # the lock is held: the held requests leave from a thread of their own
                threading.Thread(target=self._release, args=(release,), daemon=True).start()
            return None
        future: Future[Any] = ref.future()
        return future, seq, [item[0] for item in batch]

    def _start_poll(self, route: Route) -> Future[Any] | None:
        """Start the route's long poll unless one runs (caller holds the lock)."""
        if route.polling or not route.pending:
            return None
        route.polling = True
        future: Future[Any] = route.handle.poll.remote(self.caller, POLL_SECONDS).future()
        return future

    def _sent(self, route: Route, done: Future[Any], seq: int, rids: list[int]) -> None:
        error = done.exception()
        if error is not None and _is_death(error):
            self._bury(route, error)
            return
        release: set[str] = set()
        failed: list[_Req] = []
        with self._lock:
            route.sending -= 1
            if error is not None:
                for rid in rids:
                    req = route.pending.pop(rid, None)
                    if req is not None:
                        failed.append(req)
                        self._landed(req, release)
            sends = self._flush(route) if route.sending < MAX_SENDS else None
        if error is not None:  # the batch never ran (e.g. an input the replica could not unpickle)
            self._skip(route, seq)
            for req in failed:
                req.out.set_exception(self._death(route, error, req.sid))
        if sends is not None:
            self._watch_send(route, sends)
        if release:
            self._release(release)

    def _polled(self, route: Route, done: Future[Any]) -> None:
        error = done.exception()
        if error is not None:
            if _is_death(error):
                self._bury(route, error)
            else:
                release: set[str] = set()
                with self._lock:
                    route.polling = False
                    pending, route.pending = route.pending, {}
                    for req in pending.values():
                        self._landed(req, release)
                for req in pending.values():
                    req.out.set_exception(self._death(route, error, req.sid))
                self._release(release)
            return
        _, results = done.result()
        delivered: list[tuple[Future[dict[str, Any]], tuple[bool, Any]]] = []
        refused: list[tuple[_Req, SidMoved]] = []
        release = set()
        with self._lock:
            for rid, outcome in results:
                got = route.pending.pop(rid, None)
                if got is None:
                    continue
                self._landed(got, release)
                if not outcome[0] and isinstance(outcome[1], SidMoved) and got.sid is not None:
                    refused.append((got, outcome[1]))
                else:
                    delivered.append((got.out, outcome))
            for req, moved in refused:
                if moved.epoch > self._epoch:
                    self._update(moved.routes, moved.epoch)
                req.moves += 1
                if req.moves > MAX_MOVES:
                    delivered.append((req.out, (False, moved)))
                    continue
                assert req.sid is not None
                held = self._held.setdefault(req.sid, [])
                bisect.insort(held, req, key=lambda r: r.rid)  # before the requests made after it
                if req.sid not in self._flying:
                    release.add(req.sid)
            route.polling = False
            poll = self._start_poll(route)
        if poll is not None:
            poll.add_done_callback(lambda again: self._delivered(self._polled, route, again))
        for out, (ok, value) in delivered:
            if ok:
                out.set_result(value)
            else:
                out.set_exception(value)
        if release:
            self._release(release)

    def _bury(self, route: Route, error: BaseException) -> None:
        """The replica is gone: fail every request sent to it, now and later."""
        release: set[str] = set()
        with self._lock:
            route.dead = route.dead or error
            pending, route.pending = route.pending, {}
            route.outbox = []
            for req in pending.values():
                self._landed(req, release)
        for req in pending.values():
            if not req.out.done():
                req.out.set_exception(self._death(route, error, req.sid))
        if release:
            self._release(release)

    def _death(self, route: Route, error: BaseException, sid: str | None) -> RvaiError:
        death = translate_ray_error(error, self._where(route), f"a request (sid {sid!r})")
        death.__cause__ = error
        return death

    def _skip(self, route: Route, seq: int) -> None:
        try:
            route.handle.skip.remote(self.caller, seq)
        except Exception:  # the replica is gone: its successor starts a new sequence anyway
            pass

    def _where(self, route: Route) -> str:
        return f"replica {route.index} of the inference process of pipeline {self.pipeline_name!r}"

    # -- calls on every replica ---------------------------------------------------------

    def call(self, method: str, *args: Any, timeout: float | None = 30.0) -> Any:
        """Run a control call on the replicas that hold what it concerns (see the class docstring)."""
        refuse_wait(self, f"{method}()", self.pipeline_name)  # from a callback we deliver: Ray's thread would wait on itself
        if method not in CONTROL_METHODS:
            raise ValueError(f"unknown control method {method!r}; valid: {', '.join(sorted(CONTROL_METHODS))}")
        if method in ("drop_state", "get_state"):
            return self.call_route(self.replica_for(args[0]), method, *args, timeout=timeout)
        if method == "get_parameters":
            routes = self.routes()
            if not routes:
                self._call_routes(routes, method, timeout=timeout)  # raises: no replica
            return self.call_route(routes[0], method, timeout=timeout)
        if method == "stats":
            return self.stats(timeout=timeout)
        if method == "sids":
            return [sid for part in self.call_all("sids", timeout=timeout) for sid in part]
        if method == "ping":
            self.call_all("ready", timeout=timeout)
            return True
        values = self.call_all(method, *args, timeout=timeout)
        return all(values) if method == "ready" else None

    def call_route(self, route: Route, method: str, *args: Any, timeout: float | None = 30.0) -> Any:
        """Call ``method`` on one replica and return its value (or raise its error, translated)."""
        import ray

        try:
            return unwrap(ray.get(getattr(route.handle, method).remote(*args), timeout=timeout))
        except RvaiError:
            raise
        except Exception as exc:
            raise translate_ray_error(exc, self._where(route), f"{method}()") from exc

    def call_all(self, method: str, *args: Any, timeout: float | None = 30.0) -> list[Any]:
        """Call ``method`` on every replica at once; their values by index (the first error is raised)."""
        return self._call_routes(self.routes(), method, *args, timeout=timeout)

    def _call_routes(self, routes: list[Route], method: str, *args: Any, timeout: float | None) -> list[Any]:
        import ray

        if not routes:
            raise ProcessError(
                self._closed_reason or f"the inference process of pipeline {self.pipeline_name!r} has no replica"
            )
        refs = [getattr(route.handle, method).remote(*args) for route in routes]
        values: list[Any] = []
        first: BaseException | None = None
        for route, ref in zip(routes, refs):
            try:
                values.append(unwrap(ray.get(ref, timeout=timeout)))
            except RvaiError as exc:
                first = first or exc
            except Exception as exc:
                error = translate_ray_error(exc, self._where(route), f"{method}()")
                error.__cause__ = exc
                first = first or error
        if first is not None:
            raise first
        return values

    def stats(self, timeout: float | None = 30.0) -> dict[str, Any]:
        """The replicas' counters summed, plus ``replicas``: each replica's index, node and request counts."""
        routes = self.routes()
        parts = self._call_routes(routes, "stats", timeout=timeout)
        merged = merge_stats(parts)
        merged["replicas"] = [
            {"index": route.index, "node": route.node, "generation": route.generation, "requests": part["requests"]}
            for route, part in zip(routes, parts)
        ]
        return merged
