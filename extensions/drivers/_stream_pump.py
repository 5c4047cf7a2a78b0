"""The source side of :class:`SourceSinkDriver`: per stream, a reader thread and a pump thread.

The reader pulls items from the source into a bounded queue (blocking or dropping by
the source's drop policy). The pump keeps up to ``max_in_flight`` requests in flight
and hands the results to the sinks in source order. When the inference process cannot
be reached (killed, restarting) the pump stops sending, waits until it is ready again
and sends the same requests again, in order: an item is written as failed only for its
own error (or after the source's ``give_up`` time).
"""

from __future__ import annotations

import collections
import copy
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

import attrs

from rvai_sdk import _tracing
from rvai_sdk.drivers import Record, Source, SourceContext, SourceItem
from rvai_sdk.drivers.sink import COMPLETE, FAILED
from rvai_sdk.exc import DriverError, MissingExtraError, ProcessError, SinkError, SourceError
from rvai_sdk.drivers import RestrictedInferenceProcess

from ._stream_outlet import LOG_EVERY, Backoff, Outlet, error_text
from ._stream_positions import Recorder, Tracker

logger = logging.getLogger("rvai_sdk.extensions.source_sink")



class Host(Protocol):
    """What a stream needs from its driver."""

    abort: threading.Event
    keep_inputs: bool
    limit: int | None
    positions: Recorder | None
    acks: dict[str, Acks]

    def require_inference(self) -> RestrictedInferenceProcess: ...

    def outlets_for(self, source: str) -> tuple[Outlet, ...]: ...


class Acks:
    """Tells a source that wants it (:attr:`Source.wants_acknowledgements`) which of its items are done.

    The pump issues each record with the number of sinks it goes to (:meth:`issue`), and the sinks' writer
    threads settle it (:meth:`settle_many`), acknowledged or given up: done either way. An item done without a
    record (dropped by the policy, or taken by no sink) is :meth:`done` at once. Keyed by the record object, as the positions'
    tracker is: an earlier stream's records never count for this one.
    """

    def __init__(self, ref: str, source: Source) -> None:
        self.ref = ref
        self.source = source
        self.lock = threading.Lock()
        self.entries: dict[int, list[Any]] = {}  # id(record) -> [record, acknowledgements to come, the item's index]

    def issue(self, record: Record, item_index: int, sinks: int) -> None:
        if sinks <= 0:
            self.done(item_index)
            return
        with self.lock:
            self.entries[id(record)] = [record, sinks, item_index]

    def settle_many(self, records: Sequence[Record]) -> None:
        finished: list[int] = []
        with self.lock:
            for record in records:
                entry = self.entries.get(id(record))
                if entry is None or entry[0] is not record:
                    continue
                entry[1] -= 1
                if entry[1] <= 0:
                    del self.entries[id(record)]
                    finished.append(entry[2])
        for index in finished:
            self.done(index)

    def done(self, item_index: int) -> None:
        try:
            self.source.acknowledge(item_index)
        except Exception as exc:  # the source's bug must not stop the sinks
            logger.exception("source %r: acknowledging item %d failed: %s", self.ref, item_index, error_text(exc))


class Pending:
    """One request of a stream: its item, sid, future and how often it was sent."""

    __slots__ = ("item", "index", "sid", "future", "tries", "final", "span")

    def __init__(self, item: SourceItem, index: int, sid: str, future: Future[dict[str, Any]]) -> None:
        self.item = item
        self.index = index
        self.sid = sid
        self.future = future
        self.tries = 1
        self.final = False  # past the give-up time: its ProcessError is its result
        self.span: Any = None  # the frame's span, while tracing (rvai_sdk._tracing)


def _unreachable(future: Future[dict[str, Any]]) -> bool:
    """Whether a done future failed because the inference process could not be reached."""
    return not future.cancelled() and isinstance(future.exception(), ProcessError)


class Stream:
    """One running source: a reader thread, a bounded queue and a pump thread."""

    def __init__(self, host: Host, ref: str, config: Source, sid: str, after: int = -1) -> None:
        """``after``: the highest index an earlier stream of ``ref`` in this driver handed out (-1: none);
        a source that is not replayable numbers on after it, even before its results reach the sinks."""
        self.host = host
        self.ref = ref
        self.config = config
        self.sid = sid
        self.after = after
        self.handed = -1  # the highest index queued so far (final once stop() returned)
        self.cut = False  # a request was cut off by the stop: a replayable source delivers nothing after it
        self.source = copy.copy(config)
        self.acks = Acks(ref, self.source) if self.source.wants_acknowledgements else None
        self.late_close = False
        if self.acks is not None:
            host.acks[ref] = self.acks  # the sinks' acknowledgements of this ref's records reach this stream
        self.params = config.params
        policy = str(self.params.drop)
        self.policy = ("drop_oldest" if config.live else "block") if policy == "auto" else policy
        self.stopped = threading.Event()
        self.cond = threading.Condition()
        self.queue: collections.deque[tuple[SourceItem, int]] = collections.deque()
        self.pending: collections.deque[Pending] = collections.deque()
        self.reader_done = False
        self.submitting = 0
        self.delivering = 0
        self.state = "opening"
        self.produced = 0
        self.taken = 0  # items that will be sent (queued or sent), for ``limit``
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self.unfinished = 0
        self.resent = 0
        self.skipped = 0
        self.first_index = 0
        self.handed_up_to = 0  # the source's indexes below it were offered: a replayable source reopened skips them
        self.offset = 0
        self.tracker: Tracker | None = None  # with a position store: what every sink acknowledged
        self.waiting_since: float | None = None  # while waiting for the process (stats show "waiting")
        self.outage_since: float | None = None  # since the first request cut off, until one gets through again
        self.outage_backoff = Backoff(0.1, 5.0)  # between resends while the process is not back for real
        self.errors = 0
        self.last_error: str | None = None
        self.reader = threading.Thread(target=self._read, name=f"rvai-source-{ref}", daemon=True)
        self.pump = threading.Thread(target=self._pump, name=f"rvai-stream-{ref}", daemon=True)

    def start(self) -> None:
        self.reader.start()
        self.pump.start()

    def stop(self) -> None:
        self.stopped.set()
        self._wake()

    def _wake(self, *_: object) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- where to start ------------------------------------------------------------------

    def _resume(self) -> None:
        """Find where this source stopped, and start after it.

        Two proofs of where it stopped: each sink that keeps positions says the highest
        index it holds of this source, and the driver's position store (if any) says the
        highest index up to which every sink acknowledged every record. A replayable
        source skips the items below the larger of the store's position and the lowest
        sink position (both prove that those items reached the sinks: it resumes); any
        other source numbers its items on after the highest of them all (a new run never
        collides with an old run's records).
        """
        recorder = self.host.positions
        outlets = [o for o in self.host.outlets_for(self.ref) if o.keeps_positions]
        if not self.config.replayable:
            self.offset = self.after + 1  # after the results of an earlier stream still on their way
        if not outlets and recorder is None:
            return
        self.state = "resuming"
        stored: int | None = None
        if recorder is not None:
            stored = recorder.position(self.ref, self.stopped)
            self.tracker = recorder.track(self.ref, stored)
            if stored is not None:  # in force even if a sink below cannot say (it was removed meanwhile)
                if self.config.replayable:
                    self.first_index = stored + 1
                else:
                    self.offset = max(stored, self.after) + 1
        held = [o.position(self.ref, self.stopped) for o in outlets]
        positions = [-1 if p is None else int(p) for p in held]
        if self.config.replayable:
            after = min(positions) if positions else -1
            self.first_index = max(after, -1 if stored is None else stored) + 1
            if self.first_index:
                logger.info("source %r: its sinks (or its position store) hold up to index %d; resuming after it", self.ref, self.first_index - 1)
        else:
            self.offset = max(positions + [-1 if stored is None else stored, self.after]) + 1
            if self.offset:
                logger.info("source %r: its sinks (or its position store) hold up to index %d; numbering on from %d", self.ref, self.offset - 1, self.offset)

    # -- reader ------------------------------------------------------------------------

    def _read(self) -> None:
        backoff = Backoff(float(self.params.retry_initial), float(self.params.retry_max))
        try:
            try:
                self._resume()
            except MissingExtraError as exc:  # the position store needs an extra: retrying cannot install it
                self.errors += 1
                self.last_error = f"source {self.ref!r}: the position store cannot be used: {exc}"
                self.state = "failed"
                logger.error("%s", self.last_error)
                return
            except (SinkError, DriverError) as exc:
                if self.stopped.is_set():  # stopped before the sinks or the position store could say
                    return
                logger.warning("source %r: %s; starting without a position", self.ref, exc)  # its sink was removed
            context = SourceContext(
                ref=self.ref,
                inputs=self.host.require_inference().inputs,
                stopped=self.stopped,
                logger=logging.getLogger(f"rvai_sdk.sources.{self.ref}"),
            )
            while not self.stopped.is_set():
                try:
                    self.state = "opening"
                    context = attrs.evolve(context, first_index=self.first_index)
                    self.source.open(context)
                    self.state = "running"
                    for item in self.source.items():
                        fresh = item.index >= self.first_index
                        if self._offer(item):
                            break
                        if fresh:  # only progress resets the backoff: not items skipped again after a reopen
                            backoff.reset()
                        if self.stopped.is_set():
                            break
                    else:
                        if not self.stopped.is_set():
                            self.state = "ended"
                            return
                    if not self.stopped.is_set():  # the limit is reached
                        self.state = "ended"
                        return
                except MissingExtraError as exc:  # retrying cannot install it: report once, end the stream
                    self.errors += 1
                    self.last_error = f"source {self.ref!r} ({type(self.source).__name__}) cannot run: {exc}"
                    self.state = "failed"
                    logger.error("%s", self.last_error)
                    return
                except Exception as exc:
                    error = exc if isinstance(exc, SourceError) else SourceError(
                        f"source {self.ref!r} ({type(self.source).__name__}) failed: {error_text(exc)}"
                    )
                    self.errors += 1
                    self.last_error = str(error)
                    self.state = "retrying"
                    delay = backoff.next()
                    if self.errors == 1 or self.errors % LOG_EVERY == 0:
                        logger.warning("%s; reopening in %.1f s (error %d)", error, delay, self.errors)
                    self._close_source()
                    if self.config.replayable:  # it starts again from its first item: skip those it handed out
                        self.first_index = max(self.first_index, self.handed_up_to)
                    self.stopped.wait(delay)
        finally:
            if self.acks is not None:
                self.late_close = True  # it acknowledges what the sinks still write: closed by close_late()
            else:
                self._close_source()
            if self.state not in ("ended", "failed"):
                self.state = "stopped"
            with self.cond:
                self.reader_done = True
                self.cond.notify_all()

    def close_late(self) -> None:
        """Close a stopped source that wants acknowledgements, once the sinks wrote (or gave up) what it gave."""
        if self.late_close:
            self.late_close = False
            self._close_source()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # close must not raise; keep going
            logger.warning("source %r: close failed: %s", self.ref, error_text(exc))

    def _offer(self, item: SourceItem) -> bool:
        """Queue an item by the drop policy; True when the stream has taken ``limit`` items."""
        if item.index < self.first_index:
            self.skipped += 1
            if self.acks is not None:
                self.acks.done(item.index)  # held by the sinks already
            return False
        self.handed_up_to = max(self.handed_up_to, item.index + 1)
        index = item.index + self.offset
        capacity = int(self.params.buffer)
        with self.cond:
            if self.stopped.is_set():  # stopping stops reading: nothing is handed out after stop() returned
                self.produced += 1
                self.unfinished += 1
                return True
            if self._at_limit():
                return True
            self.produced += 1
            if self.policy == "keep_latest":
                self.dropped += len(self.queue)
                self.taken -= len(self.queue)
                if self.acks is not None:
                    for old, _ in self.queue:
                        self.acks.done(old.index)
                self.queue.clear()
            elif self.policy == "drop_oldest":
                while len(self.queue) >= capacity:
                    old, _ = self.queue.popleft()
                    self.dropped += 1
                    self.taken -= 1
                    if self.acks is not None:
                        self.acks.done(old.index)
            else:
                while len(self.queue) >= capacity and not self.stopped.is_set() and not self._at_limit():
                    self.cond.wait(0.25)
                if self.stopped.is_set() or self._at_limit():
                    self.unfinished += 1
                    return True
            self.queue.append((item, index))
            self.handed = max(self.handed, index)
            self.taken += 1
            self.cond.notify_all()
            return self._at_limit()

    def _at_limit(self) -> bool:
        limit = self.host.limit  # read each time: a running driver's limit can be changed (a graceful stop sets 0)
        return limit is not None and self.taken >= limit

    # -- pump --------------------------------------------------------------------------

    def _pump(self) -> None:
        try:
            self._pump_loop()
        except Exception as exc:  # a bug, not a source or sink failure: report it, never hide it
            self.state = "failed"
            self.last_error = f"stream {self.ref!r} stopped by an internal error: {error_text(exc)}"
            logger.exception("source %r: %s", self.ref, self.last_error)
            self.stopped.set()

    def _pump_loop(self) -> None:
        window = int(self.params.max_in_flight)
        while True:
            submit: list[tuple[SourceItem, int]] = []
            done: list[Pending] = []
            with self.cond:
                while True:
                    if self.stopped.is_set() and self.queue:
                        self.unfinished += len(self.queue)  # taken, never sent: stopping stops reading
                        self.queue.clear()
                        self.cond.notify_all()
                    cut_off = any(p.future.done() and self._must_resend(p) for p in self.pending)
                    if not cut_off:  # after a request could not reach the process, nothing new goes before it
                        while self.queue and len(self.pending) + len(submit) < window:
                            submit.append(self.queue.popleft())
                    self.submitting = len(submit)  # counted as in flight from here on
                    while self.pending and self.pending[0].future.done() and not self._must_resend(self.pending[0]):
                        done.append(self.pending.popleft())
                    self.delivering = len(done)  # still in flight until handed to the sinks
                    if submit or done:
                        self.cond.notify_all()
                        break
                    if self.pending and self.pending[0].future.done() and all(p.future.done() for p in self.pending):
                        break  # the head could not reach the inference process: wait for it, then resend
                    if not self.pending and not self.queue and (self.reader_done or self.stopped.is_set()):
                        return
                    if self.pending and self.host.abort.is_set():
                        self._abandon()
                        continue
                    self.cond.wait(0.5)
            for item, index in submit:
                self._submit(item, index)
            for request in done:
                self._deliver(request)
            if not submit and not done:
                self._wait_and_resend()

    def _must_resend(self, request: Pending) -> bool:
        """A done request that could not reach the inference process and is to be sent again once it is back."""
        return not self.stopped.is_set() and not request.final and _unreachable(request.future)

    def _send(self, item: SourceItem, sid: str, span: Any = None) -> Future[dict[str, Any]]:
        try:
            if span is not None:  # traced: the predict is a child of the frame's span
                return _tracing.send_frame(span, self.host.require_inference().predict, item.inputs, sid)
            return self.host.require_inference().predict(item.inputs, sid)
        except Exception as exc:  # bad inputs, unreachable process: a failed future, handled in order
            future: Future[dict[str, Any]] = Future()
            future.set_exception(exc)
            return future

    def _submit(self, item: SourceItem, index: int) -> None:
        sid = item.sid or self.sid
        span = None if _tracing.TRACER is None else _tracing.start_frame(self.ref, index, sid)  # a frame: one trace
        future = self._send(item, sid, span)
        request = Pending(item, index, sid, future)
        request.span = span
        with self.cond:
            self.pending.append(request)
            self.submitting -= 1
        future.add_done_callback(self._wake)

    def _wait_and_resend(self) -> None:
        """The head request could not reach the inference process: wait until it is ready, then resend in order.

        Nothing new is sent meanwhile (the queue fills: files wait, live sources drop by
        their policy). Requests that succeeded stay as they are; the others are sent again,
        in source order, once the process is back.
        """
        inference = self.host.require_inference()
        give_up = float(self.params.give_up)
        self.waiting_since = time.monotonic()
        if self.outage_since is None:
            self.outage_since = self.waiting_since
            logger.warning("source %r: the inference process cannot be reached (%s); waiting for it",
                           self.ref, error_text(self.pending[0].future.exception() or ProcessError("?")))
        delay = self.outage_backoff.next()  # a process just back may not take requests yet (a Ray replica restarting)
        while not self.stopped.is_set():
            if give_up > 0 and time.monotonic() - self.outage_since > give_up:
                for request in self.pending:  # past the give-up time: these fail with their ProcessError
                    request.final = True
                logger.error("source %r: gave up waiting for the inference process after %.1f s", self.ref, give_up)
                self._resume_after_outage()
                return
            if self.stopped.wait(delay):
                break
            delay = 0.2
            try:
                ready = inference.is_ready()
            except Exception:
                ready = False
            if ready:
                break
        if self.stopped.is_set():
            self._resume_after_outage()  # stopping: the pump counts them as unfinished
            return
        resent = 0
        for request in list(self.pending):
            if request.future.done() and self._must_resend(request):
                request.tries += 1
                request.future = self._send(request.item, request.sid, request.span)
                request.future.add_done_callback(self._wake)
                resent += 1
        with self.cond:
            self.resent += resent
        if self.outage_backoff.delay <= 0.2:
            logger.warning("source %r: the inference process is back; sent %d requests again", self.ref, resent)
        self._resume_after_outage()

    def _resume_after_outage(self) -> None:
        with self.cond:
            self.waiting_since = None
            self.cond.notify_all()

    def _log_failure(self, request: Pending, exc: BaseException, error: str) -> None:
        """One record per failed frame, with the traceback (the cell's, from the inference process), source, index, sid, cell."""
        if not logger.isEnabledFor(logging.ERROR):
            return
        cell = getattr(exc, "ref", None)
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            0,
            "source %r: frame %d (sid %r) failed%s (%d so far): %s",
            (self.ref, request.index, request.sid, f" in cell {cell!r}" if cell else "", self.failed, error),
            None,
            extra={"source": self.ref, "index": request.index, "sid": request.sid, "cell": cell, "request_id": f"{self.ref}#{request.index}"},
        )
        remote = getattr(exc, "remote_traceback", "")
        if remote:
            record.exc_text = str(remote).rstrip()
        elif exc.__traceback__ is not None:
            record.exc_info = (type(exc), exc, exc.__traceback__)
        logger.handle(record)

    def _abandon(self) -> None:
        """At shutdown past the drain deadline: count requests still in flight as unfinished (never written)."""
        while self.pending:
            self.pending.popleft()
            self.unfinished += 1
            if self.tracker is not None:
                self.tracker.hole()

    def _deliver(self, request: Pending) -> None:
        item = request.item
        error: str | None = None
        outputs: Mapping[str, Any] = {}
        try:
            if self.cut:  # an earlier request was cut off by the stop: see below
                raise ProcessError("an earlier request of the stream was cut off by the stop")
            outputs = request.future.result()
        except Exception as exc:
            if isinstance(exc, ProcessError) and self.stopped.is_set() and not request.final:
                if self.tracker is not None:
                    self.tracker.hole()  # never reaches the sinks: no position may pass it
                # A replayable source resumes after the highest index its sinks hold: a result written after
                # this one would make the next run skip it. Those after it are cut off too (run again then).
                self.cut = self.config.replayable
                with self.cond:  # cut off by the stop, not by its own error: counted, never written as failed
                    self.unfinished += 1
                    self.delivering -= 1
                return
            error = error_text(exc)
            self.failed += 1
            self._log_failure(request, exc, error)
        else:
            self.processed += 1
            if self.outage_since is not None and self.waiting_since is None:
                self.outage_since = None  # a request got through: the outage is over
                self.outage_backoff.reset()
        record = Record(
            source=self.ref,
            sid=request.sid,
            index=request.index,
            timestamp=item.timestamp,
            outputs=outputs,
            inputs=item.inputs if self.host.keep_inputs else None,
            status=COMPLETE if error is None else FAILED,
            error=error,
        )
        if request.span is not None:  # traced: the sinks' writes join the frame's trace; the frame ends here
            _tracing.note_record(request.span, self.ref, request.index)
            _tracing.end_frame(request.span, request.future.exception() if error is not None else None)
        outlets = self.host.outlets_for(self.ref)
        if self.tracker is not None:
            self.tracker.issue(record, len(outlets))  # before any sink can acknowledge it
        if self.acks is not None:
            self.acks.issue(record, item.index, len(outlets))
        for outlet in outlets:
            outlet.put(record)
        with self.cond:
            self.delivering -= 1

    def stats(self) -> dict[str, Any]:
        try:
            own = dict(self.source.stats())
        except Exception as exc:
            own = {"error": error_text(exc)}
        with self.cond:
            return {
                "sid": self.sid,
                "state": "waiting" if self.waiting_since is not None else self.state,
                "policy": self.policy,
                "produced": self.produced,
                "queued": len(self.queue),
                "in_flight": len(self.pending) + self.submitting + self.delivering,
                "processed": self.processed,
                "failed": self.failed,
                "dropped": self.dropped,
                "unfinished": self.unfinished,
                "resent": self.resent,
                "skipped": self.skipped,
                "first_index": self.first_index + self.offset,
                "errors": self.errors,
                "last_error": self.last_error,
                "source": own,
            }
