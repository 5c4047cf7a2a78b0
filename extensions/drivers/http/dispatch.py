"""Getting a decoded request to the inference process and its result back to the event loop, with few thread hops.

``RestrictedInferenceProcess.predict`` writes to the inference process from the calling
thread, and the transport's reader thread completes the returned future. A request
crosses threads only where it must:

- idle server: the event loop submits itself (no hop), the reader thread wakes the loop (1 hop back);
- busy server: one submitting thread sends, in arrival order, while the loop goes on
  (loop → submitter, reader → loop): sending on the loop under load stalls every connection;
- a large body (an image): one worker thread parses, decodes *and* submits it
  (loop → worker, reader → loop), instead of handing the decoded request back to the loop first;
- image outputs: PNG encoding takes milliseconds, so the reader thread hands the outputs
  straight to a worker that encodes them and wakes the loop (reader → worker → loop),
  instead of waking the loop only to send them to a worker and back.

Handoffs from one thread to another per request (the reply crossing from the inference
process to the reader is not counted), before this module → now:

====================================  ======  ===
request                               before  now
====================================  ======  ===
small JSON, idle server               1       1
small JSON, busy server               2       2
large body                            3-4     2
image outputs                         +2      +1
large body and image outputs, busy    6       3
====================================  ======  ===
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rvai_sdk import _tracing

from .logs import note_sid

if TYPE_CHECKING:
    from rvai_sdk.drivers import RestrictedInferenceProcess

    from .codec import Codec

__all__ = ["Dispatcher"]

Parse = Callable[[], "tuple[dict[str, Any], str | None]"]
"""Parses and decodes a request body: () -> (typed inputs, sid)."""

_Job = tuple[dict[str, Any], "str | None", "float | None", "asyncio.Future[Any]", "contextvars.Context | None"]


class Dispatcher:
    """Submits decoded requests to the inference process; results come back encoded, on the loop.

    Args:
        inference: the driver's port onto the inference process.
        codec: encodes the outputs.
    """

    def __init__(self, inference: RestrictedInferenceProcess, codec: Codec) -> None:
        self.inference = inference
        self.codec = codec
        self.in_flight = 0
        self._waiting: set[asyncio.Future[Any]] = set()  # the loop futures of the requests in flight
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._submitter: threading.Thread | None = None
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the submitting thread and the workers, for ``loop``."""
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._workers = concurrent.futures.ThreadPoolExecutor(min(8, (os.cpu_count() or 1) + 2), "rvai-http-worker")
        self._submitter = threading.Thread(target=self._submit_forever, name="rvai-http-submit", daemon=True)
        self._submitter.start()

    def stop(self) -> None:
        """Stop the submitting thread and the workers (requests still in flight are dropped)."""
        if self._submitter is not None:
            self._queue.put(None)
            self._submitter.join(10)
            self._submitter = None
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None

    def offload(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``function(*args)`` on a worker thread (a blocking call that must not stall the loop)."""
        assert self.loop is not None
        return self.loop.run_in_executor(self._workers, function, *args)

    async def run_task(self, inputs: dict[str, Any], sid: str | None, timeout: float | None) -> dict[str, Any]:
        """:meth:`run` for a task: not answered by :meth:`drain` (a stop reports the task interrupted instead)."""
        return await self.run(inputs, sid, timeout, drain=False)

    async def run(self, inputs: dict[str, Any], sid: str | None, timeout: float | None, *, drain: bool = True) -> dict[str, Any]:
        """Predict on decoded inputs; the JSON form of the outputs.

        Raises:
            InputValidationError, DeadlineExceededError, CellError, ProcessError: as ``predict`` does.
        """
        assert self.loop is not None
        note_sid(sid)  # for the access log line
        self.in_flight += 1
        try:
            future = self.loop.create_future()
            if self.in_flight == 1:  # idle: send from here, the lowest latency
                self._chain(self._submit(inputs, sid, timeout), future)
            else:  # busy: the submitting thread sends, in arrival order, while the loop goes on
                # (traced: with the request's context, for its spans on the submitting thread)
                self._queue.put((inputs, sid, timeout, future, None if _tracing.TRACER is None else contextvars.copy_context()))
            return await self._outputs(future, drain)
        finally:
            self.in_flight -= 1

    async def run_parsed(self, parse: Parse, timeout: float | None) -> tuple[dict[str, Any], str | None]:
        """Parse, decode and submit a large body on a worker thread; the JSON form of the outputs, and the sid."""
        assert self.loop is not None and self._workers is not None
        self.in_flight += 1
        try:
            future = self.loop.create_future()
            sid: list[str | None] = []  # set by the worker before it submits
            work = self._parse_and_submit if _tracing.TRACER is None else _tracing.carry(self._parse_and_submit)
            self._workers.submit(work, parse, timeout, future, sid)
            return await self._outputs(future), sid[0]
        finally:
            self.in_flight -= 1
            if sid:
                note_sid(sid[0])  # for the access log line

    # -- threads -----------------------------------------------------------------------------------

    def _submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None) -> concurrent.futures.Future[Any]:
        """The one place a request leaves the driver (any thread).

        The inputs were decoded and validated by the codec (what ``Pipeline.validate_inputs``
        returns), so they go out through the port's ``submit``, which checks only the sid and
        the timeout: inputs are validated once per request.
        """
        return self.inference.submit(inputs, sid, timeout=timeout)

    async def _outputs(self, future: asyncio.Future[Any], drain: bool = True) -> dict[str, Any]:
        if drain:
            self._waiting.add(future)
        try:
            outputs: dict[str, Any] = await future
        finally:
            self._waiting.discard(future)
        return outputs if self.codec.image_outputs else self.codec.encode(outputs)  # encoded on a worker already

    async def drain(self, grace: float, failure: Callable[[], BaseException]) -> int:
        """Wait up to ``grace`` seconds for the requests in flight, then answer those left with ``failure()``
        (on the loop); how many were left. The server is closing: this runs before it cancels its handlers,
        which would answer a bare ``500 Internal Server Error`` in plain text."""
        assert self.loop is not None
        deadline = self.loop.time() + grace
        while self._waiting and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        left = [future for future in self._waiting if not future.done()]
        for future in left:
            future.set_exception(failure())
        if left:
            await asyncio.sleep(0)  # their handlers answer before the server goes on closing
        return len(left)

    def _parse_and_submit(
        self, parse: Parse, timeout: float | None, future: asyncio.Future[Any], sid_box: list[str | None]
    ) -> None:
        """On a worker: parse, decode and submit; the outcome reaches ``future`` on the loop."""
        assert self.loop is not None
        try:
            inputs, sid = parse()
            sid_box.append(sid)
            done = self._submit(inputs, sid, timeout)
        except BaseException as exc:
            self._wake(_settle_error, future, exc)
            return
        self._chain(done, future)

    def _submit_forever(self) -> None:
        get, submit = self._queue.get, self._submit
        while True:
            job = get()
            if job is None:
                return
            inputs, sid, timeout, future, context = job
            try:
                done = submit(inputs, sid, timeout) if context is None else context.run(submit, inputs, sid, timeout)
            except BaseException as exc:
                self._wake(_settle_error, future, exc)
                continue
            self._chain(done, future)

    def _chain(self, done: concurrent.futures.Future[dict[str, Any]], future: asyncio.Future[Any]) -> None:
        done.add_done_callback(functools.partial(self._finished, future))

    def _finished(self, future: asyncio.Future[Any], done: concurrent.futures.Future[dict[str, Any]]) -> None:
        """On the thread that completed ``done`` (the transport's reader): hand the outcome on."""
        exc = done.exception()
        if exc is not None:
            self._wake(_settle_error, future, exc)
        elif self.codec.image_outputs:
            try:
                self._workers.submit(self._encode, future, done.result())  # type: ignore[union-attr]
            except (AttributeError, RuntimeError):  # the workers stopped: the server is going away
                pass
        else:
            self._wake(_settle_value, future, done.result())

    def _encode(self, future: asyncio.Future[Any], outputs: dict[str, Any]) -> None:
        try:
            encoded = self.codec.encode(outputs)
        except BaseException as exc:
            self._wake(_settle_error, future, exc)
            return
        self._wake(_settle_value, future, encoded)

    def _wake(self, settle: Callable[[asyncio.Future[Any], Any], None], future: asyncio.Future[Any], value: Any) -> None:
        assert self.loop is not None
        if threading.get_ident() == self._loop_thread:  # answered at once, on the loop: no wake-up needed
            settle(future, value)
            return
        try:
            self.loop.call_soon_threadsafe(settle, future, value)
        except RuntimeError:  # the loop is closed: the server stopped
            pass


def _settle_value(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _settle_error(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
