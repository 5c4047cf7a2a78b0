"""SourceSinkDriver: connects any sources to any sinks through the inference process.

Each source is a stream with a stable sid (its ref unless given), so per-stream cell
state (a tracker, a counter) works per camera. Per stream, a reader thread pulls
items from the source into a bounded queue (blocking or dropping by the source's
drop policy), and a pump thread keeps up to ``max_in_flight`` requests in flight and
hands the results to the sinks in source order. Each sink has a bounded buffer and
a writer thread that writes batches, retrying with backoff; a full buffer makes the
pumps wait, so sources feel back-pressure instead of accepted results being dropped.

The sources and sinks live in the driver's parameters, so they can be changed on a
running driver from any process through ``set_parameters`` (see
:meth:`SourceSinkDriver.add_source_to`).

Example::

    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
    from rvai_sdk.extensions.sources.video_source import VideoSource

    stream = proc.add_driver(
        "cameras", SourceSinkDriver,
        sources={"cam-1": VideoSource("rtsp://10.0.0.5/stream")},
        sinks={"db": DatabaseSink("postgresql+psycopg://user@db/frames")},
    )
    stream.stats()["sources"]["cam-1"]["processed"]
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from rvai_sdk.drivers import (
    DriverParameters,
    PipelineDriver,
    Record,
    Sink,
    SinkContext,
    SinkMap,
    Source,
    SourceContext,
    SourceItem,
    SourceMap,
)
from rvai_sdk.drivers.sink import COMPLETE, FAILED
from rvai_sdk.exc import DriverError, MissingExtraError, SinkError, SourceError
from rvai_sdk.resources import DriverResources
from rvai_sdk.runtime import RestrictedInferenceProcess
from rvai_sdk.types import Boolean, Dict, FloatRange, List, String

__all__ = ["SourceSinkDriver", "SourceSinkDriverParameters"]

logger = logging.getLogger("rvai_sdk.extensions.source_sink")

_LOG_EVERY = 100
"""Repeated failures of one kind are logged once, then every this many times."""


@dataclasses.dataclass
class SourceSinkDriverParameters(DriverParameters):
    """The parameters of a :class:`SourceSinkDriver`; all changeable while it runs.

    Attributes:
        sources: source ref → :class:`~rvai_sdk.drivers.Source`.
        sinks: sink ref → :class:`~rvai_sdk.drivers.Sink`.
        sids: source ref → the sid its requests use (default: the source ref).
        subscriptions: sink ref → the source refs it takes (default: every source).
        keep_inputs: attach each request's inputs to its record (for sinks that store them).
        drain_timeout: seconds ``stop()`` spends finishing requests in flight and writing
            buffered records before giving up (what is then unwritten is counted as lost).
    """

    sources: SourceMap = DriverParameters.field(name="Sources", description="Source ref to source", default_factory=SourceMap)
    sinks: SinkMap = DriverParameters.field(name="Sinks", description="Sink ref to sink", default_factory=SinkMap)
    sids: Dict[String, String] = DriverParameters.field(
        name="Sids", description="Source ref to the sid of its stream (default: the ref)", default_factory=Dict[String, String]
    )
    subscriptions: Dict[String, List[String]] = DriverParameters.field(
        name="Subscriptions",
        description="Sink ref to the source refs it takes (default: all)",
        default_factory=Dict[String, List[String]],
    )
    keep_inputs: Boolean = DriverParameters.field(
        name="Keep inputs", description="Attach the inputs to each record", default=Boolean(False)
    )
    drain_timeout: FloatRange = DriverParameters.field(
        name="Drain timeout",
        description="Seconds stop() spends finishing requests and writing buffered records",
        default=FloatRange(5.0, min=0.0, max=600.0),
    )


class _Handle(Protocol):
    """What :meth:`SourceSinkDriver.add_source_to` needs: a driver or its process handle."""

    def get_parameters(self) -> DriverParameters: ...

    def set_parameters(self, parameters: Any) -> None: ...


class _Backoff:
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


def _error_text(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class _Pending:
    """One request of a stream: its item, sid and future."""

    __slots__ = ("item", "sid", "future")

    def __init__(self, item: SourceItem, sid: str, future: Future[dict[str, Any]]) -> None:
        self.item = item
        self.sid = sid
        self.future = future


class _Outlet:
    """One running sink: a bounded buffer of records and a writer thread."""

    def __init__(self, ref: str, config: Sink, context: SinkContext, abort: threading.Event) -> None:
        self.ref = ref
        self.config = config
        self.sink = copy.copy(config)
        self.params = config.params
        self.context = context
        self.abort = abort
        self.cond = threading.Condition()
        self.buffer: collections.deque[Record] = collections.deque()
        self.closing = False
        self.deadline: float | None = None
        self.state = "opening"
        self.written = 0
        self.written_by_source: collections.Counter[str] = collections.Counter()
        self.write_failures = 0
        self.lost = 0
        self.last_error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"rvai-sink-{ref}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, record: Record) -> bool:
        """Queue a record, waiting while the buffer is full; False if it was given up (abort)."""
        if record.status == FAILED and not bool(self.params.failed):
            return True
        capacity = int(self.params.buffer)
        with self.cond:
            while len(self.buffer) >= capacity and not self._give_up() and self.thread.is_alive():
                self.cond.wait(0.25)
            if len(self.buffer) >= capacity or (self.closing and not self.thread.is_alive()):
                self.lost += 1
                return False
            self.buffer.append(record)
            self.cond.notify_all()
        return True

    def close(self, deadline: float | None = None) -> None:
        """No more records will come: write what is buffered until ``deadline`` (monotonic), then close."""
        with self.cond:
            self.closing = True
            if deadline is not None and (self.deadline is None or deadline < self.deadline):
                self.deadline = deadline
            self.cond.notify_all()

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
            self.last_error = f"sink {self.ref!r} stopped by an internal error: {_error_text(exc)}"
            logger.exception("%s", self.last_error)
            with self.cond:
                self.state = "failed"
                self.lost += len(self.buffer)
                self.buffer.clear()
                self.cond.notify_all()

    def _write_loop(self) -> None:
        backoff = _Backoff(float(self.params.retry_initial), float(self.params.retry_max))
        opened = False
        failures_in_a_row = 0
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    break
                if self._give_up():
                    with self.cond:
                        self.lost += len(self.buffer)
                        left = len(self.buffer)
                        self.buffer.clear()
                        self.cond.notify_all()
                    logger.error("sink %r: gave up on %d buffered records at shutdown (%s)", self.ref, left, self.last_error)
                    break
                try:
                    if not opened:
                        self.state = "opening"
                        self.sink.open(self.context)
                        opened = True
                        self.state = "running"
                    self.sink.write(batch)
                except Exception as exc:
                    error = exc if isinstance(exc, SinkError) else SinkError(f"sink {self.ref!r} ({type(self.sink).__name__}) failed: {_error_text(exc)}")
                    self.write_failures += 1
                    failures_in_a_row += 1
                    self.last_error = str(error)
                    self.state = "retrying"
                    if failures_in_a_row == 1 or failures_in_a_row % _LOG_EVERY == 0:
                        logger.warning("%s; %d records buffered, retrying with backoff (failure %d in a row)", error, len(self.buffer), failures_in_a_row)
                    if opened:
                        self._close_sink()
                        opened = False
                    delay = backoff.next()
                    if self.deadline is not None:
                        delay = max(0.0, min(delay, self.deadline - time.monotonic()))
                    self.abort.wait(delay)
                    continue
                if failures_in_a_row:
                    logger.warning("sink %r: writing again after %d failed attempts", self.ref, failures_in_a_row)
                failures_in_a_row = 0
                backoff.reset()
                self.state = "running"
                with self.cond:
                    for _ in batch:
                        self.buffer.popleft()
                    self.written += len(batch)
                    for record in batch:
                        self.written_by_source[record.source] += 1
                    self.cond.notify_all()
            if opened:
                try:
                    self.sink.flush()
                except Exception as exc:
                    self.last_error = f"flush failed: {_error_text(exc)}"
                    logger.error("sink %r: %s", self.ref, self.last_error)
        finally:
            if opened:
                self._close_sink()
            self.state = "closed"
            with self.cond:
                self.cond.notify_all()

    def _close_sink(self) -> None:
        try:
            self.sink.close()
        except Exception as exc:  # close must not raise; keep going
            logger.warning("sink %r: close failed: %s", self.ref, _error_text(exc))

    def stats(self) -> dict[str, Any]:
        with self.cond:
            own = {}
            try:
                own = dict(self.sink.stats())
            except Exception as exc:
                own = {"error": _error_text(exc)}
            return {
                "state": self.state,
                "buffered": len(self.buffer),
                "written": self.written,
                "write_failures": self.write_failures,
                "lost": self.lost,
                "last_error": self.last_error,
                "sink": own,
            }


class _Stream:
    """One running source: a reader thread, a bounded queue and a pump thread."""

    def __init__(self, driver: SourceSinkDriver, ref: str, config: Source, sid: str) -> None:
        self.driver = driver
        self.ref = ref
        self.config = config
        self.sid = sid
        self.source = copy.copy(config)
        self.params = config.params
        policy = str(self.params.drop)
        self.policy = ("drop_oldest" if config.live else "block") if policy == "auto" else policy
        self.stopped = threading.Event()
        self.cond = threading.Condition()
        self.queue: collections.deque[SourceItem] = collections.deque()
        self.pending: collections.deque[_Pending] = collections.deque()
        self.reader_done = False
        self.submitting = 0
        self.delivering = 0
        self.state = "opening"
        self.produced = 0
        self.dropped = 0
        self.processed = 0
        self.failed = 0
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

    # -- reader ------------------------------------------------------------------------

    def _read(self) -> None:
        backoff = _Backoff(float(self.params.retry_initial), float(self.params.retry_max))
        context = SourceContext(
            ref=self.ref,
            inputs=self.driver._pipeline_inputs(),
            stopped=self.stopped,
            logger=logging.getLogger(f"rvai_sdk.sources.{self.ref}"),
        )
        try:
            while not self.stopped.is_set():
                try:
                    self.state = "opening"
                    self.source.open(context)
                    self.state = "running"
                    for item in self.source.items():
                        self._offer(item)
                        backoff.reset()
                        if self.stopped.is_set():
                            break
                    else:
                        if not self.stopped.is_set():
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
                        f"source {self.ref!r} ({type(self.source).__name__}) failed: {_error_text(exc)}"
                    )
                    self.errors += 1
                    self.last_error = str(error)
                    self.state = "retrying"
                    delay = backoff.next()
                    if self.errors == 1 or self.errors % _LOG_EVERY == 0:
                        logger.warning("%s; reopening in %.1f s (error %d)", error, delay, self.errors)
                    self._close_source()
                    self.stopped.wait(delay)
                else:
                    self._close_source()
        finally:
            self._close_source()
            if self.state not in ("ended", "failed"):
                self.state = "stopped"
            with self.cond:
                self.reader_done = True
                self.cond.notify_all()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # close must not raise; keep going
            logger.warning("source %r: close failed: %s", self.ref, _error_text(exc))

    def _offer(self, item: SourceItem) -> None:
        capacity = int(self.params.buffer)
        with self.cond:
            self.produced += 1
            if self.policy == "keep_latest":
                self.dropped += len(self.queue)
                self.queue.clear()
            elif self.policy == "drop_oldest":
                while len(self.queue) >= capacity:
                    self.queue.popleft()
                    self.dropped += 1
            else:
                while len(self.queue) >= capacity and not self.stopped.is_set():
                    self.cond.wait(0.25)
                if self.stopped.is_set():
                    self.dropped += 1
                    return
            self.queue.append(item)
            self.cond.notify_all()

    # -- pump --------------------------------------------------------------------------

    def _pump(self) -> None:
        try:
            self._pump_loop()
        except Exception as exc:  # a bug, not a source or sink failure: report it, never hide it
            self.state = "failed"
            self.last_error = f"stream {self.ref!r} stopped by an internal error: {_error_text(exc)}"
            logger.exception("source %r: %s", self.ref, self.last_error)
            self.stopped.set()

    def _pump_loop(self) -> None:
        window = int(self.params.max_in_flight)
        while True:
            submit: list[SourceItem] = []
            done: list[_Pending] = []
            with self.cond:
                while True:
                    if self.stopped.is_set() and self.queue:
                        self.dropped += len(self.queue)  # produced, never accepted
                        self.queue.clear()
                        self.cond.notify_all()
                    while self.queue and len(self.pending) + len(submit) < window:
                        submit.append(self.queue.popleft())
                    self.submitting = len(submit)  # counted as in flight from here on
                    while self.pending and self.pending[0].future.done():
                        done.append(self.pending.popleft())
                    self.delivering = len(done)  # still in flight until handed to the sinks
                    if submit or done:
                        self.cond.notify_all()
                        break
                    if not self.pending and not self.queue and (self.reader_done or self.stopped.is_set()):
                        return
                    if self.pending and self.driver._abort.is_set():
                        self._abandon()
                        continue
                    self.cond.wait(0.5)
            for item in submit:
                self._submit(item)
            for request in done:
                self._deliver(request)

    def _submit(self, item: SourceItem) -> None:
        sid = item.sid or self.sid
        try:
            future = self.driver._require_inference().predict(item.inputs, sid)
        except Exception as exc:  # bad inputs, unreachable process: this item fails, the stream goes on
            future = Future()
            future.set_exception(exc)
        request = _Pending(item, sid, future)
        with self.cond:
            self.pending.append(request)
            self.submitting -= 1
        future.add_done_callback(self._wake)

    def _abandon(self) -> None:
        """At shutdown past the drain deadline: count requests still in flight as failed."""
        while self.pending:
            self.pending.popleft()
            self.failed += 1

    def _deliver(self, request: _Pending) -> None:
        item = request.item
        error: str | None = None
        outputs: Mapping[str, Any] = {}
        try:
            outputs = request.future.result()
        except Exception as exc:
            error = _error_text(exc)
            self.failed += 1
            if self.failed == 1 or self.failed % _LOG_EVERY == 0:
                logger.warning("source %r: request %d (sid %r) failed (%d so far): %s", self.ref, item.index, request.sid, self.failed, error)
        else:
            self.processed += 1
        record = Record(
            source=self.ref,
            sid=request.sid,
            index=item.index,
            timestamp=item.timestamp,
            outputs=outputs,
            inputs=item.inputs if self.driver._keep_inputs else None,
            status=COMPLETE if error is None else FAILED,
            error=error,
        )
        for outlet in self.driver._outlets_for(self.ref):
            outlet.put(record)
        with self.cond:
            self.delivering -= 1

    def stats(self) -> dict[str, Any]:
        try:
            own = dict(self.source.stats())
        except Exception as exc:
            own = {"error": _error_text(exc)}
        with self.cond:
            return {
                "sid": self.sid,
                "state": self.state,
                "policy": self.policy,
                "produced": self.produced,
                "queued": len(self.queue),
                "in_flight": len(self.pending) + self.submitting + self.delivering,
                "processed": self.processed,
                "failed": self.failed,
                "dropped": self.dropped,
                "errors": self.errors,
                "last_error": self.last_error,
                "source": own,
            }


class SourceSinkDriver(PipelineDriver):
    """Feeds the pipeline from sources and writes its results to sinks.

    Each source is a stream with its own sid; per stream, requests are pipelined
    (``max_in_flight`` of its parameters) while results reach the sinks in source
    order; a live source drops items by its drop policy rather than queueing without
    bound; a sink that cannot write keeps a bounded buffer and retries with backoff,
    and when the buffer is full the streams wait. A failing source or sink is retried
    and reported in :meth:`stats`; it never stops the other streams.

    Sources and sinks are configuration objects that open only inside :meth:`run`,
    so the driver can be built in another process. They are kept in the driver's
    parameters, so a running driver can be changed from the process that started it
    with :meth:`add_source_to` / :meth:`remove_source_from` (or ``set_parameters``).

    Args:
        sources: source ref → source.
        sinks: sink ref → sink (each takes every source; see :meth:`add_sink`).
        parameters: a :class:`SourceSinkDriverParameters` or a mapping of its fields.

    Example:
        >>> from rvai_sdk.extensions.sources.dummy_source import DummySource
        >>> from rvai_sdk.extensions.sinks.dummy_sink import DummySink
        >>> driver = SourceSinkDriver(sources={"cam-1": DummySource()})
        >>> driver.add_sink(ref="log", sink=DummySink(), sources=["cam-1"])
        >>> sorted(driver.get_parameters().sources), sorted(driver.get_parameters().sinks)
        (['cam-1'], ['log'])
    """

    parameters_class = SourceSinkDriverParameters

    def __init__(
        self,
        sources: Mapping[str, Source] | None = None,
        sinks: Mapping[str, Sink] | None = None,
        parameters: SourceSinkDriverParameters | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(parameters)
        self._lock = threading.RLock()
        self._edit_lock = threading.Lock()
        self._inference: RestrictedInferenceProcess | None = None
        self._streams: dict[str, _Stream] = {}
        self._outlets: dict[str, _Outlet] = {}
        self._retired_streams: list[_Stream] = []
        self._retired_outlets: list[_Outlet] = []
        self._routes: dict[str, tuple[_Outlet, ...]] = {}
        self._keep_inputs = False
        self._abort = threading.Event()
        for ref, source in (sources or {}).items():
            self.add_source(ref=ref, source=source)
        for ref, sink in (sinks or {}).items():
            self.add_sink(ref=ref, sink=sink)

    # -- configuration (works before and while running) -------------------------------------

    def add_source(self, *, ref: str, source: Source, sid: str | None = None) -> None:
        """Add a source (a new stream); on a running driver it starts at once.

        Args:
            ref: the source's ref, unique in this driver; records carry it as ``source``.
            source: the source configuration.
            sid: the sid of its requests (default: ``ref``).

        Raises:
            DriverError: the ref is taken or ``source`` is not a Source.
        """
        self._add_source(self, ref=ref, source=source, sid=sid)

    def remove_source(self, ref: str) -> None:
        """Stop a stream: its requests in flight still reach the sinks; items not yet sent are dropped.

        Raises:
            DriverError: no source has that ref; the message lists them.
        """
        self._remove_source(self, ref)

    def add_sink(self, *, ref: str, sink: Sink, sources: Sequence[str] | None = None) -> None:
        """Add a sink; on a running driver it starts at once.

        Args:
            ref: the sink's ref, unique in this driver.
            sink: the sink configuration.
            sources: the source refs it takes (default: every source, present and future).

        Raises:
            DriverError: the ref is taken or ``sink`` is not a Sink.
        """
        if not isinstance(sink, Sink):
            raise DriverError(f"add_sink(ref={ref!r}): expected a Sink, got {type(sink).__name__}")
        with self._edit_lock:
            params = self._current()
            if ref in params.sinks:
                raise DriverError(f"a sink with ref {ref!r} is already added; remove it first or pick another ref")
            subscriptions: dict[str, Any] = {str(k): v for k, v in params.subscriptions.items()}
            if sources is not None:
                subscriptions[ref] = list(sources)
            self.set_parameters({"sinks": {**params.sinks, ref: sink}, "subscriptions": subscriptions})

    def remove_sink(self, ref: str) -> None:
        """Stop a sink after it wrote what it buffered (within ``drain_timeout``).

        Raises:
            DriverError: no sink has that ref; the message lists them.
        """
        with self._edit_lock:
            params = self._current()
            if ref not in params.sinks:
                raise DriverError(f"no sink with ref {ref!r}; sinks: {', '.join(params.sinks) or '(none)'}")
            sinks = {k: v for k, v in params.sinks.items() if k != ref}
            subscriptions = {k: v for k, v in params.subscriptions.items() if k != ref}
            self.set_parameters({"sinks": sinks, "subscriptions": subscriptions})

    @staticmethod
    def add_source_to(driver: _Handle, *, ref: str, source: Source, sid: str | None = None) -> None:
        """Add a source to a running driver given its handle, from any process.

        Args:
            driver: the handle ``proc.add_driver(...)`` returned (or the driver itself).
            ref: the new source's ref.
            source: the source configuration (it travels to the driver process).
            sid: the sid of its requests (default: ``ref``).

        Raises:
            DriverError: the ref is taken, or the driver is not running.

        Example::

            stream = proc.add_driver("cameras", SourceSinkDriver, sinks={"db": DatabaseSink(url)})
            SourceSinkDriver.add_source_to(stream, ref="cam-2", source=VideoSource(url2))
        """
        SourceSinkDriver._add_source(driver, ref=ref, source=source, sid=sid)

    @staticmethod
    def remove_source_from(driver: _Handle, ref: str) -> None:
        """Remove a source from a running driver given its handle, from any process.

        Raises:
            DriverError: no source has that ref, or the driver is not running.
        """
        SourceSinkDriver._remove_source(driver, ref)

    @staticmethod
    def _add_source(driver: _Handle, *, ref: str, source: Source, sid: str | None) -> None:
        if not isinstance(ref, str) or not ref:
            raise DriverError(f"a source ref must be a non-empty str, got {ref!r}")
        if not isinstance(source, Source):
            raise DriverError(f"add_source(ref={ref!r}): expected a Source, got {type(source).__name__}")
        params = driver._current() if isinstance(driver, SourceSinkDriver) else driver.get_parameters()
        assert isinstance(params, SourceSinkDriverParameters)
        if ref in params.sources:
            raise DriverError(f"a source with ref {ref!r} is already added; remove it first or pick another ref")
        sids: dict[str, Any] = {str(k): v for k, v in params.sids.items()}
        if sid is not None:
            sids[ref] = sid
        driver.set_parameters({"sources": {**params.sources, ref: source}, "sids": sids})

    @staticmethod
    def _remove_source(driver: _Handle, ref: str) -> None:
        params = driver._current() if isinstance(driver, SourceSinkDriver) else driver.get_parameters()
        assert isinstance(params, SourceSinkDriverParameters)
        if ref not in params.sources:
            raise DriverError(f"no source with ref {ref!r}; sources: {', '.join(params.sources) or '(none)'}")
        sources = {k: v for k, v in params.sources.items() if k != ref}
        sids = {k: v for k, v in params.sids.items() if k != ref}
        driver.set_parameters({"sources": sources, "sids": sids})

    def _current(self) -> SourceSinkDriverParameters:
        with self._parameters_lock:
            params = self._parameters
        assert isinstance(params, SourceSinkDriverParameters)
        return params

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        """Start, stop or replace the streams and sinks whose configuration changed."""
        self._reconcile()

    # -- running -----------------------------------------------------------------------------

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        """Run every stream and sink until :meth:`stop`, then drain within ``drain_timeout``."""
        with self._lock:
            self._inference = inference
        try:
            self._reconcile()
            self.wait_stopped()
        finally:
            self._shutdown()

    def _require_inference(self) -> RestrictedInferenceProcess:
        inference = self._inference
        if inference is None:
            raise DriverError("the SourceSinkDriver is not running")
        return inference

    def _pipeline_inputs(self) -> Mapping[str, Any]:
        return self._require_inference().inputs

    def _outlets_for(self, source: str) -> tuple[_Outlet, ...]:
        return self._routes.get(source) or self._routes.get("", ())

    def _reconcile(self) -> None:
        with self._lock:
            if self._inference is None or self.stopped.is_set():
                return
            params = self._current()
            self._keep_inputs = bool(params.keep_inputs)
            inference = self._inference
            for ref in list(self._outlets):
                outlet = self._outlets[ref]
                if params.sinks.get(ref) != outlet.config:
                    del self._outlets[ref]
                    self._retired_outlets.append(outlet)
            started: list[_Outlet] = []
            for ref, sink in params.sinks.items():
                if ref not in self._outlets:
                    context = SinkContext(ref=ref, outputs=inference.outputs, inputs=inference.inputs, stopped=self.stopped)
                    outlet = _Outlet(ref, sink, context, self._abort)
                    self._outlets[ref] = outlet
                    started.append(outlet)
            self._route(params)
            for outlet in started:
                outlet.start()
            for outlet in self._retired_outlets:
                outlet.close(time.monotonic() + float(params.drain_timeout))
            sids: dict[str, Any] = {str(k): v for k, v in params.sids.items()}
            for ref in list(self._streams):
                stream = self._streams[ref]
                if params.sources.get(ref) != stream.config or sids.get(ref, ref) != stream.sid:
                    del self._streams[ref]
                    stream.stop()
                    self._retired_streams.append(stream)
            for ref, source in params.sources.items():
                if ref not in self._streams:
                    stream = _Stream(self, ref, source, str(sids.get(ref, ref)))
                    self._streams[ref] = stream
                    stream.start()
            self._retired_streams = [s for s in self._retired_streams if s.pump.is_alive() or s.reader.is_alive()]
            self._retired_outlets = [o for o in self._retired_outlets if o.thread.is_alive()]

    def _route(self, params: SourceSinkDriverParameters) -> None:
        subscriptions: dict[str, Any] = {str(k): v for k, v in params.subscriptions.items()}
        everyone = tuple(o for ref, o in self._outlets.items() if ref not in subscriptions)
        routes: dict[str, tuple[_Outlet, ...]] = {"": everyone}
        for ref in params.sources:
            routes[ref] = everyone + tuple(o for sink, o in self._outlets.items() if ref in subscriptions.get(sink, ()))
        self._routes = routes

    def _shutdown(self) -> None:
        deadline = time.monotonic() + float(self._current().drain_timeout)
        with self._lock:
            streams = list(self._streams.values()) + self._retired_streams
            outlets = list(self._outlets.values()) + self._retired_outlets
        for stream in streams:
            stream.stop()
        for stream in streams:
            stream.pump.join(max(0.0, deadline - time.monotonic()))
        for outlet in outlets:
            outlet.close(deadline)
        for outlet in outlets:
            outlet.thread.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()  # past the deadline: waiting pumps and writers give up
        for stream in streams:
            with stream.cond:
                stream.cond.notify_all()
        grace = time.monotonic() + 1.0  # readers blocked in I/O (a camera's open timeout) get one second in all
        for thread in [s.pump for s in streams] + [o.thread for o in outlets] + [s.reader for s in streams]:
            thread.join(max(0.0, grace - time.monotonic()))
        stuck = [t.name for t in [s.reader for s in streams] + [s.pump for s in streams] + [o.thread for o in outlets] if t.is_alive()]
        if stuck:
            logger.error("SourceSinkDriver: threads still running after stop: %s", ", ".join(stuck))

    # -- observing ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters per source and per sink.

        Returns:
            ``{"sources": {ref: {"sid", "state", "policy", "produced", "queued", "in_flight",
            "processed", "failed", "dropped", "written", "errors", "last_error", "source"}},
            "sinks": {ref: {"state", "buffered", "written", "write_failures", "lost",
            "last_error", "sink"}}}``; a source's ``written`` counts its records written by
            every sink (a record written by two sinks counts twice), ``source``/``sink`` hold
            the component's own counters (e.g. a camera's ``reconnects``).
        """
        with self._lock:
            streams = dict(self._streams)
            outlets = dict(self._outlets)
        written: collections.Counter[str] = collections.Counter()
        for outlet in outlets.values():
            with outlet.cond:
                written.update(outlet.written_by_source)
        params = self._current()
        sids: dict[str, Any] = {str(k): v for k, v in params.sids.items()}
        sources: dict[str, Any] = {}
        for ref in params.sources:
            stream = streams.get(ref)
            entry = stream.stats() if stream is not None else _pending_source(str(sids.get(ref, ref)))
            entry["written"] = written.get(ref, 0)
            sources[ref] = entry
        sinks = {ref: outlets[ref].stats() if ref in outlets else _pending_sink() for ref in params.sinks}
        return {"sources": sources, "sinks": sinks}


def _pending_source(sid: str) -> dict[str, Any]:
    """The stats of a source that is configured but not started yet (the driver is starting)."""
    counters = dict.fromkeys(("produced", "queued", "in_flight", "processed", "failed", "dropped", "errors"), 0)
    return {"sid": sid, "state": "pending", "policy": None, **counters, "last_error": None, "source": {}}


def _pending_sink() -> dict[str, Any]:
    """The stats of a sink that is configured but not started yet."""
    counters = dict.fromkeys(("buffered", "written", "write_failures", "lost"), 0)
    return {"state": "pending", **counters, "last_error": None, "sink": {}}
