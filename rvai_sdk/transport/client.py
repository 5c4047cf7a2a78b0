"""The Unix-socket link: how a process (the parent, a driver) reaches an inference process on this machine.

Frames and arrays travel as :mod:`~rvai_sdk.transport.channel` describes (shared memory for
large arrays); the other end is :class:`~rvai_sdk.transport.server.InferenceServer`. Socket
errors become :class:`~rvai_sdk.exc.ProcessError` here, once.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk._delivery import LinkFuture, delivering, refuse_wait
from rvai_sdk.exc import ProcessError
from rvai_sdk.transport.channel import Channel, connect
from rvai_sdk.transport.link import Link
from rvai_sdk.transport.shm import SlotPool

__all__ = ["UnixLink"]


class UnixLink(Link):
    """A :class:`~rvai_sdk.transport.link.Link` over a Unix socket: sends requests and control calls, resolves their futures.

    It connects lazily and reconnects on the next call after the connection was
    lost (the process died or was restarted at the same address). When the
    connection ends, every pending future fails at once with
    :class:`~rvai_sdk.exc.ProcessError`.

    Args:
        address: where the inference process listens.
        authkey: its secret.
        name: the pipeline's name, for messages.
        pool: this process's shared-memory pool for large arrays.
        explain_loss: returns why the connection was lost (e.g. the exit code), for messages.
    """

    def __init__(
        self,
        address: str,
        authkey: bytes,
        *,
        name: str,
        pool: SlotPool | None,
        explain_loss: Callable[[], str] | None = None,
    ) -> None:
        self.address = address
        self.authkey = authkey
        self.name = name
        self.pool = pool
        self._explain_loss = explain_loss or (lambda: "the connection was closed")
        self._lock = threading.Lock()
        self._channel: Channel | None = None
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count(1)
        self._closed = False

    def connect(self, timeout: float = 10.0) -> Channel:
        """Connect now (a no-op when connected).

        Raises:
            ProcessError: the inference process cannot be reached.
        """
        with self._lock:
            if self._channel is not None:
                return self._channel
            if self._closed:
                raise ProcessError(f"the client of the inference process of pipeline {self.name!r} is closed")
            try:
                sock = connect(self.address, self.authkey, timeout)
            except OSError as exc:
                raise ProcessError(
                    f"cannot reach the inference process of pipeline {self.name!r} ({type(exc).__name__}: {exc}); "
                    "it is not running, or restarting: retry once proc.status is RUNNING"
                ) from exc
            channel = Channel(sock, self.pool)
            self._channel = channel
        threading.Thread(target=self._read, args=(channel,), name="rvai-client-reader", daemon=True).start()
        return channel

    def is_connected(self) -> bool:
        """Whether a connection is up (trying to connect when none is)."""
        try:
            self.connect(timeout=2.0)
        except ProcessError:
            return False
        return True

    def _register(self) -> tuple[Channel, int, Future[Any]]:
        channel = self._channel or self.connect()
        future: Future[Any] = LinkFuture()
        future._token, future._name = self, self.name  # type: ignore[attr-defined]  # our reader delivers it
        with self._lock:
            if self._channel is not channel:  # lost in between: the reader already failed what was pending
                raise ProcessError(f"lost the connection to the inference process of pipeline {self.name!r}; retry")
            rid = next(self._ids)
            self._pending[rid] = future
        return channel, rid, future

    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> Future[dict[str, Any]]:
        """Send one validated request; its future resolves to the outputs or fails as the executor's would.

        Args:
            inputs: validated inputs.
            sid: the state id, or ``None``.
            timeout: the request's deadline in seconds from now (enforced by the executor), or ``None``.

        Raises:
            ProcessError: the inference process cannot be reached.
        """
        channel, rid, future = self._register()
        op: tuple[Any, ...]
        if _tracing.TRACER is None:
            op = ("p", rid, sid, inputs) if timeout is None else ("p", rid, sid, inputs, timeout)
        else:  # traced: the hop's span; its traceparent rides in the frame
            op = ("p", rid, sid, inputs, timeout, _tracing.hop(future, "unix", self.name, sid))
        if len(self._pending) > 1:
            channel.post_soon(op)  # others in flight: coalesce through the writer
        else:
            channel.post(op)  # alone: send now, lowest latency
        return future

    def call(self, method: str, *args: Any, timeout: float | None = 60.0) -> Any:
        """Run an executor method (``stats``, ``set_parameters``...) in the inference process; its result.

        Raises:
            ProcessError: the inference process cannot be reached or did not answer in time.
            Exception: whatever the method raised there (e.g. ParameterError).
        """
        refuse_wait(self, f"{method}()", self.name)  # from our reader (a callback), no answer could come
        channel, rid, future = self._register()
        channel.post(("c", rid, method, args))
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            with self._lock:
                self._pending.pop(rid, None)
            raise ProcessError(
                f"the inference process of pipeline {self.name!r} did not answer {method}() within {timeout} s"
            ) from exc

    def _read(self, channel: Channel) -> None:
        delivering(self)  # this thread delivers our answers: waits for them in callbacks are refused
        pending = self._pending
        pool = self.pool
        while True:
            ops = channel.recv()
            if ops is None:
                break
            channel.cork()  # requests sent from completion callbacks leave together
            for op in ops:
                if op[0] == "r":
                    future = pending.pop(op[1], None)
                    if future is None:
                        continue
                    try:
                        if op[2]:
                            future.set_result(op[3])
                        else:
                            future.set_exception(op[3])
                    except InvalidStateError:  # cancelled by its caller
                        pass
                elif op[0] == "x" and pool is not None:
                    pool.release(op[1], channel)
            channel.uncork()
        with self._lock:
            if self._channel is channel:
                self._channel = None
            lost = list(self._pending.values())
            self._pending.clear()
        channel.close()
        if lost:
            reason = self._explain_loss()
            for future in lost:
                try:
                    future.set_exception(
                        ProcessError(
                            f"lost the inference process of pipeline {self.name!r} ({reason}) before this request "
                            "finished; send it again once the process is back (proc.restart())"
                        )
                    )
                except InvalidStateError:
                    pass

    def close(self) -> None:
        """Close the connection; pending futures fail."""
        with self._lock:
            self._closed = True
            channel = self._channel
        if channel is not None:
            channel.shutdown()
        if _tracing.TRACER is not None:  # a driver process closes its link just before it ends: export its last spans
            _tracing.flush()
