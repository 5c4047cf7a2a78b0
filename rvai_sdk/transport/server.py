"""The inference process's side of :class:`~rvai_sdk.transport.client.UnixLink`: serves an executor to every connected link."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk.execution.executor import Executor
from rvai_sdk.execution.gc_tuning import tune_for_serving
from rvai_sdk.transport.channel import Channel, Listener
from rvai_sdk.transport.link import CONTROL_METHODS
from rvai_sdk.transport.shm import SlotPool

__all__ = ["InferenceServer", "CONTROL_METHODS", "TAKEOVER_AFTER"]

TAKEOVER_AFTER = 0.01
"""Seconds a call may run on a connection's reading thread before another thread takes over the reading."""

ANSWER_EVERY = 128
"""Requests of one frame answered after which their answers leave, before the rest of the frame runs."""

_WATCH_IDLE_ROUNDS = 100
"""Checks in a row without a call on a reading thread after which the watcher sleeps until the next one."""

_INSPECT = frozenset({"stats", "ready", "ping", "sids"})
"""Control calls that only read and answer at once: run on a thread of their own, never behind a reload."""


class _Connection:
    """One client's connection: its channel, what was read of it and not handled yet, and who reads it."""

    __slots__ = ("channel", "lock", "ops", "in_flight", "running_since", "reader")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.lock = threading.Lock()
        self.ops: deque[Any] = deque()  # operations read and not handled yet, in the order they came
        self.in_flight = 0  # requests submitted and not answered yet
        self.running_since: float | None = None  # when the reading thread started running a call itself
        self.reader = 0  # the generation of the thread that reads; a takeover makes a new one


class InferenceServer:
    """Accepts clients on ``address`` and runs their requests on ``executor``.

    Each connection has a reading thread. A request whose first cells are quick (the
    scheduler's mark: recent calls under 250 µs on average) runs on that thread as
    soon as it is read, and its answer leaves with the others of its frame
    (:data:`ANSWER_EVERY` at a time): such a call is not worth a thread hand-off, and
    one thread doing the whole round (read, run, answer) costs the least CPU per
    request, as the threads no longer take turns at the interpreter lock for every
    request (measured with thousands of streams in flight, docs/performance.md).
    Requests for slower cells go to the executor's workers, and their answers go back
    from the thread that completes them, coalesced with others. Control calls
    (parameters, state) run on one separate thread so a model reload never
    stalls predictions; those that only read (stats, readiness) on another, so a
    reload never holds them up either.

    Should a call on the reading thread run longer than :data:`TAKEOVER_AFTER` (a
    quick cell that hangs, say), a watcher starts another thread that reads the
    connection from then on, beginning with the rest of the frame being handled: the
    requests behind it keep their order, answers already made leave at once, and the
    next requests, control calls and readiness checks are never held up by it. A
    request's answer is sent by a completion callback attached before its call runs,
    so the hung request's own deadline is answered on time too.
    """

    def __init__(self, executor: Executor, address: str, authkey: bytes, pool: SlotPool | None) -> None:
        self.executor = executor
        self.pool = pool
        self._listener = Listener(address, authkey)
        self._control = ThreadPoolExecutor(1, thread_name_prefix="rvai-control")
        # stats and readiness answer while a control call runs (a model reload for minutes): the supervisor
        # tells a busy process from a mute one by them
        self._inspect = ThreadPoolExecutor(1, thread_name_prefix="rvai-inspect")
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._accepter = threading.Thread(target=self._accept_loop, name="rvai-accept", daemon=True)
        self._watch = threading.Condition()
        self._watch_asleep = False
        self._watcher = threading.Thread(target=self._watch_loop, name="rvai-conn-watch", daemon=True)

    def start(self, *, tune_gc: bool = True) -> None:
        """Start accepting clients.

        Args:
            tune_gc: set this process's garbage collector for serving first
                (:func:`~rvai_sdk.execution.gc_tuning.tune_for_serving`); the server owns its process.
        """
        if tune_gc:
            tune_for_serving()
        self._watcher.start()
        self._accepter.start()

    def _accept_loop(self) -> None:
        while True:
            sock = self._listener.accept()
            if sock is None:
                return
            conn = _Connection(Channel(sock, self.pool))
            with self._lock:
                if self._closed:
                    conn.channel.close()
                    return
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn, 0), name="rvai-conn", daemon=True).start()

    def _serve(self, conn: _Connection, generation: int) -> None:
        """Read ``conn`` and handle what it sends, until it ends or another thread takes the reading over."""
        channel = conn.channel
        ops = conn.ops
        reading = True  # False once another thread took the reading over (see _watch_loop)
        if generation:  # taking over from a thread stuck in a call: send the answers it had ready
            channel.uncork()
        try:
            while reading:
                if not ops:  # (a thread taking over starts with the rest of its predecessor's frame)
                    frame = channel.recv()
                    if frame is None:
                        return
                    ops.extend(frame)
                    frame = None
                channel.cork()  # the answers of this frame leave together, ANSWER_EVERY at a time
                handled = 0
                while ops:
                    # Only the reading thread takes from ops: a takeover happens during a call (below),
                    # after which this thread takes nothing more.
                    reading = self._handle(conn, ops.popleft(), generation)
                    if not reading:
                        break
                    handled += 1
                    if handled == ANSWER_EVERY and ops:
                        # A large frame: send what is answered so far, so the client works on those
                        # answers while this thread runs the rest (the two processes overlap).
                        channel.uncork()
                        channel.cork()
                        handled = 0
                channel.uncork()
        finally:
            if reading:  # this thread was still the reader: the connection ends with it
                with self._lock:
                    self._connections.discard(conn)
                channel.close()

    def _handle(self, conn: _Connection, op: Any, generation: int) -> bool:
        """Handle one operation read from ``conn``; whether this thread (of ``generation``) still reads it."""
        kind = op[0]
        channel = conn.channel
        if kind == "p":
            rid, sid, inputs = op[1], op[2], op[3]
            timeout = op[4] if len(op) > 4 else None
            reading = True
            with conn.lock:
                conn.in_flight += 1
            try:
                if len(op) >= 6:  # traced by the caller: op[5] is its traceparent
                    future = _tracing.serve(self.executor.submit, inputs, sid, timeout, op[5], "unix")
                    future.add_done_callback(partial(_reply, conn, rid))
                else:
                    # The answer is sent by the callback, attached before the call runs: when the call
                    # hangs here, a deadline that passes meanwhile is answered on time all the same.
                    self._running(conn)
                    try:
                        self.executor.submit(inputs, sid, timeout, here=True, done=partial(_reply, conn, rid))
                    finally:
                        reading = self._ran(conn, generation)
            except Exception as exc:
                with conn.lock:
                    conn.in_flight -= 1
                channel.post(("r", rid, False, exc))
            return reading
        if kind == "x":
            if self.pool is not None:
                self.pool.release(op[1], channel)
        elif kind == "c":
            _, rid, method, args = op
            pool = self._inspect if method in _INSPECT else self._control
            pool.submit(self._call, channel.post, rid, method, args)
        return True

    def _running(self, conn: _Connection) -> None:
        """The reading thread of ``conn`` starts running a call itself: let the watcher know."""
        conn.running_since = time.monotonic()
        if self._watch_asleep:
            with self._watch:
                self._watch.notify()

    def _ran(self, conn: _Connection, generation: int) -> bool:
        """The call is over; whether this thread (of ``generation``) still reads ``conn``."""
        with conn.lock:
            conn.running_since = None
            return conn.reader == generation

    def _watch_loop(self) -> None:
        """Hand a connection's reading to a new thread when its reader runs a call for too long."""
        idle = 0
        while True:
            with self._watch:
                if self._closed:
                    return
                if idle >= _WATCH_IDLE_ROUNDS:
                    # Asleep until the next call on a reading thread (_running notifies). Said before
                    # looking, so that a call starting meanwhile either is seen here or notifies.
                    self._watch_asleep = True
                    if not self._any_running():
                        self._watch.wait()
                    self._watch_asleep = False
                    idle = 0
                    continue
                self._watch.wait(TAKEOVER_AFTER)
            with self._lock:
                connections = list(self._connections)
            now = time.monotonic()
            busy = False
            for conn in connections:
                with conn.lock:
                    since = conn.running_since
                    if since is None:
                        continue
                    busy = True
                    if now - since < TAKEOVER_AFTER:
                        continue
                    conn.running_since = None
                    conn.reader += 1
                    generation = conn.reader
                threading.Thread(target=self._serve, args=(conn, generation), name="rvai-conn", daemon=True).start()
            idle = 0 if busy else idle + 1

    def _any_running(self) -> bool:
        with self._lock:
            return any(conn.running_since is not None for conn in self._connections)

    def _call(self, post: Any, rid: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            if method not in CONTROL_METHODS:
                raise ValueError(f"unknown control method {method!r}")
            value = True if method == "ping" else getattr(self.executor, method)(*args)
        except Exception as exc:
            post(("r", rid, False, exc))
        else:
            post(("r", rid, True, value))

    def close(self) -> None:
        """Stop accepting and drop every connection (clients see the end)."""
        with self._lock:
            self._closed = True
            channels = [conn.channel for conn in self._connections]
        with self._watch:
            self._watch.notify()
        self._listener.close()
        for channel in channels:
            channel.shutdown()
        self._control.shutdown(wait=False, cancel_futures=True)
        self._inspect.shutdown(wait=False, cancel_futures=True)
        if _tracing.TRACER is not None:  # the process is about to end (os._exit): export its last spans
            _tracing.flush()


def _reply(conn: _Connection, rid: int, future: Future[dict[str, Any]]) -> None:
    """Send the answer of a finished request (its done callback, on whichever thread finished it)."""
    exc = future.exception()
    op = ("r", rid, True, future.result()) if exc is None else ("r", rid, False, exc)
    with conn.lock:
        conn.in_flight -= 1
        last = conn.in_flight == 0
    channel = conn.channel
    if last or channel.holding():
        # Nothing else is coming soon: answer now, from this thread. Or this is the reading thread,
        # which ran the request: the answer leaves with the others of its frame.
        channel.post(op)
    else:
        channel.post_soon(op)  # a worker with more answers to come: let the writer send them together
