"""The sink side of :class:`SourceSinkDriver`: a bounded buffer and a writer thread per sink.

A write that fails for a transient reason (connection, timeout, 5xx) is retried with
backoff while the buffer holds the records (a full buffer holds the streams back). A
write that fails because of the records themselves (:class:`~rvai_sdk.drivers.RecordError`)
is narrowed by halving the batch until the records at fault are found; the others are
written and those are dead-lettered with their error, so one poison record never
blocks a sink.
"""

from __future__ import annotations

import collections
import copy
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rvai_sdk import _tracing
from rvai_sdk.drivers import Record, RecordError, Sink, SinkContext, WriteResult
from rvai_sdk.drivers.sink import FAILED
from rvai_sdk.exc import SinkError

logger = logging.getLogger("rvai_sdk.extensions.source_sink")

LOG_EVERY = 100
"""Repeated failures of one kind are logged once, then every this many times."""


class Backoff:
    """A doubling delay between ``initial`` and ``maximum``."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.delay = initial

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.maximum, max(self.delay * 2, 0.01))
        return delay

    def reset(self) -> None:
        self.delay = self.initial


def error_text(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Outlet:
    """One running sink: a bounded buffer of records and a writer thread."""

    def __init__(
        self,
        ref: str,
        config: Sink,
        context: SinkContext,
        abort: threading.Event,
        settle: Callable[[Sequence[Record], bool], None] | None = None,
    ) -> None:
        self.ref = ref
        self.settle = settle  # told of each record acknowledged (True) or given up (False): the stream positions
        self.config = config
        self.sink = copy.copy(config)
        self.params = config.params
        self.context = context
        self.abort = abort
        self.cond = threading.Condition()
        self.io = threading.Lock()  # the sink's own calls (write, position) one at a time
        self.buffer: collections.deque[Record] = collections.deque()
        self.closing = False
        self.deadline: float | None = None
        self.opened = False
        self.state = "opening"
        self.written = 0
        self.present = 0
        self.dead_lettered = 0
        self.written_by_source: collections.Counter[str] = collections.Counter()
        self.present_by_source: collections.Counter[str] = collections.Counter()
        self.dead_by_source: collections.Counter[str] = collections.Counter()
        self.write_failures = 0
        self.lost = 0
        self.last_error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"rvai-sink-{ref}", daemon=True)

    @property
    def keeps_positions(self) -> bool:
        return bool(self.config.keeps_positions)

    def start(self) -> None:
        self.thread.start()

    def put(self, record: Record) -> bool:
        """Queue a record, waiting while the buffer is full; False if it was given up (abort)."""
        if record.status == FAILED and not bool(self.params.failed):
            self._settle([record], True)  # this sink takes no failed records: nothing to write
            return True
        capacity = int(self.params.buffer)
        with self.cond:
            while len(self.buffer) >= capacity and not self._give_up() and self.thread.is_alive():
                self.cond.wait(0.25)
            lost = len(self.buffer) >= capacity or (self.closing and not self.thread.is_alive())
            if lost:
                self.lost += 1
            else:
                self.buffer.append(record)
                self.cond.notify_all()
        if lost:
            self._settle([record], False)
            return False
        return True

    def _settle(self, records: Sequence[Record], acknowledged: bool) -> None:
        if self.settle is not None and records:
            try:
                self.settle(records, acknowledged)
            except Exception as exc:  # a bug in the bookkeeping must not stop the writes
                logger.exception("sink %r: recording acknowledgements failed: %s", self.ref, error_text(exc))

    def close(self, deadline: float | None = None) -> None:
        """No more records will come: write what is buffered until ``deadline`` (monotonic), then close."""
        with self.cond:
            self.closing = True
            if deadline is not None and (self.deadline is None or deadline < self.deadline):
                self.deadline = deadline
            self.cond.notify_all()

    def position(self, source: str, stopped: threading.Event) -> int | None:
        """The highest index the sink holds for ``source``; waits for the sink to open (retrying reads).

        Raises:
            SinkError: the stream was stopped, or the sink closed, before it could be read.
        """
        backoff = Backoff(float(self.params.retry_initial), float(self.params.retry_max))
        while True:
            with self.cond:
                while not self.opened and not stopped.is_set() and not self._give_up() and self.state != "closed":
                    self.cond.wait(0.25)
                if not self.opened:
                    raise SinkError(f"sink {self.ref!r} closed before the position of source {source!r} could be read")
            try:
                with self.io:
                    return self.sink.position(source)
            except Exception as exc:
                self.last_error = f"sink {self.ref!r}: cannot read the position of source {source!r}: {error_text(exc)}"
                logger.warning("%s; retrying", self.last_error)
                if stopped.wait(backoff.next()):
                    raise SinkError(self.last_error) from exc

    def _give_up(self) -> bool:
        return self.abort.is_set() or (self.deadline is not None and time.monotonic() > self.deadline)

    def _next_batch(self) -> list[Record] | None:
        size = int(self.params.batch_size)
        wait = float(self.params.batch_wait)
        with self.cond:
            while not self.buffer and not self.closing:
                self.cond.wait(0.5)
            if not self.buffer:
                return None
            if len(self.buffer) < size and not self.closing and wait > 0:
                self.cond.wait(wait)
            return list(itertools.islice(self.buffer, size))

    def _run(self) -> None:
        try:
            self._write_loop()
        except Exception as exc:  # a bug, not a sink failure: report it, never hide it
            self.last_error = f"sink {self.ref!r} stopped by an internal error: {error_text(exc)}"
            logger.exception("%s", self.last_error)
            with self.cond:
                self.state = "failed"
                self.lost += len(self.buffer)
                given_up = list(self.buffer)
                self.buffer.clear()
                self.cond.notify_all()
            self._settle(given_up, False)

    def _open(self) -> None:
        with self.io:
            self.state = "opening"
            self.sink.open(self.context)
        with self.cond:
            self.opened = True
            self.state = "running"
            self.cond.notify_all()

    def _write_loop(self) -> None:
        backoff = Backoff(float(self.params.retry_initial), float(self.params.retry_max))
        failures_in_a_row = 0
        try:
            while True:
                if self.opened:
                    batch = self._next_batch()
                    if batch is None:
                        break
                elif self.closing and not self.buffer:
                    break
                else:
                    batch = None  # open first (streams wait on positions), then write
                if self._give_up():
                    with self.cond:
                        self.lost += len(self.buffer)
                        left = len(self.buffer)
                        given_up = list(self.buffer)
                        self.buffer.clear()
                        self.cond.notify_all()
                    self._settle(given_up, False)
                    if left:
                        logger.error("sink %r: gave up on %d buffered records at shutdown (%s)", self.ref, left, self.last_error)
                    break
                try:
                    if not self.opened:
                        self._open()
                    if batch is not None:
                        self._write(batch)
                except Exception as exc:
                    error = exc if isinstance(exc, SinkError) else SinkError(f"sink {self.ref!r} ({type(self.sink).__name__}) failed: {error_text(exc)}")
                    self.write_failures += 1
                    failures_in_a_row += 1
                    self.last_error = str(error)
                    self.state = "retrying"
                    if failures_in_a_row == 1 or failures_in_a_row % LOG_EVERY == 0:
                        logger.warning("%s; %d records buffered, retrying with backoff (failure %d in a row)", error, len(self.buffer), failures_in_a_row)
                    if self.opened:
                        self._close_sink()
                    delay = backoff.next()
                    if self.deadline is not None:
                        delay = max(0.0, min(delay, self.deadline - time.monotonic()))
                    self.abort.wait(delay)
                    continue
                if failures_in_a_row and batch is not None:
                    logger.warning("sink %r: writing again after %d failed attempts", self.ref, failures_in_a_row)
                    failures_in_a_row = 0
                    backoff.reset()
                if batch is None:
                    backoff.reset()
                self.state = "running"
            if self.opened:
                try:
                    with self.io:
                        self.sink.flush()
                except Exception as exc:
                    self.last_error = f"flush failed: {error_text(exc)}"
                    logger.error("sink %r: %s", self.ref, self.last_error)
        finally:
            if self.opened:
                self._close_sink()
            with self.cond:
                self.state = "closed"
                self.cond.notify_all()

    def _write(self, batch: Sequence[Record]) -> None:
        """Write ``batch`` (the head of the buffer); a data failure is narrowed to the records at fault.

        Each part that succeeds leaves the buffer at once, so a transient failure part-way
        leaves only what is not written yet to be retried.
        """
        try:
            with self.io:
                if _tracing.TRACER is None:
                    result = self.sink.write(batch)
                else:  # traced: an rvai.sink.write span in the records' frames' traces
                    result = _tracing.sink_write(self.ref, batch, lambda: self.sink.write(batch))
        except RecordError as exc:
            if len(batch) > 1:
                middle = len(batch) // 2
                self._write(batch[:middle])
                self._write(batch[middle:])
                return
            record = batch[0]
            error = error_text(exc)
            with self.io:
                self.sink.dead_letter([(record, error)])  # a failure here is transient: retried
            logger.warning("sink %r: dead-lettered record %d of source %r (%s)", self.ref, record.index, record.source, error)
            self._done(batch, present=(), dead=True)
            return
        present = result.present if isinstance(result, WriteResult) else ()
        self._done(batch, present=present, dead=False)

    def _done(self, batch: Sequence[Record], *, present: Sequence[Record], dead: bool) -> None:
        held = {(r.source, r.index) for r in present}
        with self.cond:
            for _ in batch:
                self.buffer.popleft()
            for record in batch:
                if dead:
                    self.dead_lettered += 1
                    self.dead_by_source[record.source] += 1
                elif (record.source, record.index) in held:
                    self.present += 1
                    self.present_by_source[record.source] += 1
                else:
                    self.written += 1
                    self.written_by_source[record.source] += 1
            self.cond.notify_all()
        self._settle(batch, True)

    def _close_sink(self) -> None:
        with self.cond:
            self.opened = False
        try:
            with self.io:
                self.sink.close()
        except Exception as exc:  # close must not raise; keep going
            logger.warning("sink %r: close failed: %s", self.ref, error_text(exc))

    def stats(self) -> dict[str, Any]:
        with self.cond:
            own = {}
            try:
                own = dict(self.sink.stats())
            except Exception as exc:
                own = {"error": error_text(exc)}
            return {
                "state": self.state,
                "buffered": len(self.buffer),
                "written": self.written,
                "present": self.present,
                "dead_lettered": self.dead_lettered,
                "write_failures": self.write_failures,
                "lost": self.lost,
                "last_error": self.last_error,
                "sink": own,
            }
