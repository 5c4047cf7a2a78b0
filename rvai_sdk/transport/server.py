"""The inference process's side of :class:`~rvai_sdk.transport.client.UnixLink`: serves an executor to every connected link."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk.execution.executor import Executor
from rvai_sdk.execution.gc_tuning import tune_for_serving
from rvai_sdk.transport.channel import Channel, Listener
from rvai_sdk.transport.link import CONTROL_METHODS
from rvai_sdk.transport.shm import SlotPool

__all__ = ["InferenceServer", "CONTROL_METHODS"]


class InferenceServer:
    """Accepts clients on ``address`` and runs their requests on ``executor``.

    Each connection has a reader thread; results go back from the thread that
    completes the request, coalesced with others. Control calls (parameters,
    state, stats) run on one separate thread so a model reload never stalls
    predictions.
    """

    def __init__(self, executor: Executor, address: str, authkey: bytes, pool: SlotPool | None) -> None:
        self.executor = executor
        self.pool = pool
        self._listener = Listener(address, authkey)
        self._control = ThreadPoolExecutor(1, thread_name_prefix="rvai-control")
        self._channels: set[Channel] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._accepter = threading.Thread(target=self._accept_loop, name="rvai-accept", daemon=True)

    def start(self, *, tune_gc: bool = True) -> None:
        """Start accepting clients.

        Args:
            tune_gc: set this process's garbage collector for serving first
                (:func:`~rvai_sdk.execution.gc_tuning.tune_for_serving`); the server owns its process.
        """
        if tune_gc:
            tune_for_serving()
        self._accepter.start()

    def _accept_loop(self) -> None:
        while True:
            sock = self._listener.accept()
            if sock is None:
                return
            channel = Channel(sock, self.pool)
            with self._lock:
                if self._closed:
                    channel.close()
                    return
                self._channels.add(channel)
            threading.Thread(target=self._serve, args=(channel,), name="rvai-conn", daemon=True).start()

    def _serve(self, channel: Channel) -> None:
        submit = self.executor.submit
        post = channel.post
        lock = threading.Lock()
        in_flight = [0]  # this connection's requests not answered yet
        inputs: Any = None
        try:
            while True:
                ops = channel.recv()
                if ops is None:
                    return
                channel.cork()
                # A lone request with nothing else of this connection in flight runs its fast first
                # calls on this thread (no hand-off to a worker); with more in flight, they overlap.
                alone = len(ops) == 1 and not in_flight[0]
                for op in ops:
                    kind = op[0]
                    if kind == "p":
                        rid, sid, inputs = op[1], op[2], op[3]
                        try:
                            if len(op) < 6:
                                future = submit(inputs, sid, op[4] if len(op) > 4 else None, here=alone)
                            else:  # traced by the caller: op[5] is its traceparent
                                future = _tracing.serve(submit, inputs, sid, op[4], op[5], "unix")
                        except Exception as exc:
                            post(("r", rid, False, exc))
                            continue
                        with lock:
                            in_flight[0] += 1
                        future.add_done_callback(partial(_reply, channel, lock, in_flight, rid))
                    elif kind == "x":
                        if self.pool is not None:
                            self.pool.release(op[1], channel)
                    elif kind == "c":
                        _, rid, method, args = op
                        self._control.submit(self._call, post, rid, method, args)
                channel.uncork()
                # Drop references before blocking: arrays leased from the client go back once unused.
                op = ops = inputs = None
        finally:
            with self._lock:
                self._channels.discard(channel)
            channel.close()

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
            channels = list(self._channels)
        self._listener.close()
        for channel in channels:
            channel.shutdown()
        self._control.shutdown(wait=False, cancel_futures=True)
        if _tracing.TRACER is not None:  # the process is about to end (os._exit): export its last spans
            _tracing.flush()


def _reply(
    channel: Channel, lock: threading.Lock, in_flight: list[int], rid: int, future: Future[dict[str, Any]]
) -> None:
    exc = future.exception()
    op = ("r", rid, True, future.result()) if exc is None else ("r", rid, False, exc)
    with lock:
        in_flight[0] -= 1
        last = in_flight[0] == 0
    if last:
        channel.post(op)  # nothing else is coming soon: answer now, from this thread
    else:
        channel.post_soon(op)  # more replies follow: let the writer send them together
