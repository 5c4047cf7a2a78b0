"""SourceSinkDriver: connects any sources to any sinks through the inference process.

Each source is a stream with a stable sid (its ref unless given), so per-stream cell
state (a tracker, a counter) works per camera. Per stream, a reader thread pulls
items from the source into a bounded queue (blocking or dropping by the source's
drop policy), and a pump thread keeps up to ``max_in_flight`` requests in flight and
hands the results to the sinks in source order. Each sink has a bounded buffer and
a writer thread that writes batches, retrying with backoff; a full buffer makes the
pumps wait, so sources feel back-pressure instead of accepted results being dropped.

Nothing accepted is lost across the ordinary life of a service: a stream starts after
what its position-keeping sinks hold, or what its ``position_store`` recorded as
acknowledged by every sink (a new run numbers on, a file resumes: ``_stream_pump``,
``_stream_positions``); it waits for an inference process that cannot be reached and
sends the cut-off requests again; a poison record is narrowed down and dead-lettered
while the rest is written (``_stream_outlet``); and a stop finishes what is in flight,
counting what it cuts off as ``unfinished`` instead of writing it as failed.

The sources and sinks live in the driver's parameters, so they can be changed on a
running driver from any process through ``set_parameters`` (see
:meth:`SourceSinkDriver.add_source_to`). Those parameters
(:class:`SourceSinkDriverParameters`, re-exported here) and what the streams of a running
driver share (``Wiring``: the inference process, the routes to the sinks, the position
recorder) live in ``_stream_wiring``.

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
    SourceSinkDriver.wait(stream, timeout=60)   # for files: the final counters once all is written
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from rvai_sdk.drivers import DriverParameters, PipelineDriver, Sink, SinkContext, Source
from rvai_sdk.exc import DriverError
from rvai_sdk.resources import DriverResources
from rvai_sdk.drivers import RestrictedInferenceProcess

from ._stream_outlet import Outlet
from ._stream_positions import Recorder, position_store_url
from ._stream_pump import Stream
from ._stream_wiring import SourceSinkDriverParameters, Wiring

__all__ = ["SourceSinkDriver", "SourceSinkDriverParameters"]

logger = logging.getLogger("rvai_sdk.extensions.source_sink")


class _Handle(Protocol):
    """What :meth:`SourceSinkDriver.add_source_to` needs: a driver or its process handle."""

    def get_parameters(self) -> DriverParameters: ...

    def set_parameters(self, parameters: Any) -> None: ...


class _Observed(Protocol):
    """What :meth:`SourceSinkDriver.wait` needs: a driver or its process handle."""

    def stats(self) -> dict[str, Any]: ...


class SourceSinkDriver(PipelineDriver):
    """Feeds the pipeline from sources and writes its results to sinks.

    Each source is a stream with its own sid; per stream, requests are pipelined
    (``max_in_flight`` of its parameters) while results reach the sinks in source
    order; a live source drops items by its drop policy rather than queueing without
    bound; a sink that cannot write keeps a bounded buffer and retries with backoff,
    and when the buffer is full the streams wait. A failing source or sink is retried
    and reported in :meth:`stats`; it never stops the other streams. A record a sink
    refuses as data is dead-lettered and the rest is written; while the inference
    process cannot be reached the streams wait and then send again; a stream starts
    after what its sinks hold (see the streaming guide: exactly-once into databases,
    at-least-once into MQTT and HTTP).

    Sources and sinks are configuration objects that open only inside :meth:`run`,
    so the driver can be built in another process. They are kept in the driver's
    parameters, so a running driver can be changed from the process that started it
    with :meth:`add_source_to` / :meth:`remove_source_from` (or ``set_parameters``).

    Args:
        sources: source ref → source.
        sinks: sink ref → sink (each takes every source; see :meth:`add_sink`).
        parameters: a :class:`SourceSinkDriverParameters` or a mapping of its fields.
        position_store: where stream positions are recorded (sets the parameter of that
            name): a file path (SQLite), a ``redis://`` URL, or a ``SqliteStateStore`` /
            ``RedisStateStore`` (its file or server), as ``Inference(state_store=...)`` takes.

    Raises:
        ParameterError: a parameter is rejected, e.g. a ``position_store`` that is not a
            store (the message names ``SourceSinkDriverParameters.position_store``).

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
        position_store: Any = None,
    ) -> None:
        super().__init__(parameters)
        self._lock = threading.RLock()
        self._edit_lock = threading.Lock()
        self._wiring = Wiring()
        self._streams: dict[str, Stream] = {}
        self._outlets: dict[str, Outlet] = {}
        self._retired_streams: list[Stream] = []
        self._handed: dict[str, int] = {}  # source ref -> the highest index its retired streams handed out
        self._retired_outlets: list[Outlet] = []
        # what replaced or removed sinks did, once their outlet ended: their counts stay in stats()
        self._gone_by_source: dict[str, collections.Counter[str]] = {
            key: collections.Counter() for key in ("written", "present", "dead_lettered")
        }
        self._gone_sinks: dict[str, collections.Counter[str]] = {}
        if position_store is not None:
            self.set_parameters({"position_store": position_store_url(position_store)})
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
        params = self.parameters_in_force()
        assert isinstance(params, SourceSinkDriverParameters)
        return params

    def parameters_changed(self, old: DriverParameters, new: DriverParameters) -> None:
        """Start, stop or replace the streams and sinks whose configuration changed."""
        self._reconcile()

    # -- running -----------------------------------------------------------------------------

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        """Run every stream and sink until :meth:`stop`, then drain within ``drain_timeout``."""
        params = self._current()
        recorder: Recorder | None = None
        if params.position_store is not None:
            recorder = Recorder(
                str(params.position_store),
                pipeline=inference.name,
                driver=resources.ref or type(self).__name__,
                every=int(params.position_every),
                interval=float(params.position_interval),
            )
            recorder.start()
        with self._lock:
            self._wiring.inference = inference
            self._wiring.positions = recorder
        try:
            self._reconcile()
            self.wait_stopped()
        finally:
            self._shutdown()

    def _reconcile(self) -> None:
        with self._lock:
            wiring = self._wiring
            if wiring.inference is None or self.stopped.is_set():
                return
            params = self._current()
            wiring.keep_inputs = bool(params.keep_inputs)
            wiring.limit = None if params.limit is None else int(params.limit)
            inference = wiring.inference
            for ref in list(self._outlets):
                outlet = self._outlets[ref]
                if params.sinks.get(ref) != outlet.config:
                    del self._outlets[ref]
                    self._retired_outlets.append(outlet)
            started: list[Outlet] = []
            for ref, sink in params.sinks.items():
                if ref not in self._outlets:
                    context = SinkContext(ref=ref, outputs=inference.outputs, inputs=inference.inputs, stopped=self.stopped)
                    outlet = Outlet(ref, sink, context, wiring.abort, settle=wiring.settle)
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
                    stream.stop()  # from here it hands out no index: its highest is final
                    self._handed[ref] = max(self._handed.get(ref, -1), stream.handed)
                    self._retired_streams.append(stream)
            for ref, source in params.sources.items():
                if ref not in self._streams:
                    # A source re-added numbers on after the old stream's indices, whose results may still be on
                    # their way to the sinks (the sinks' positions cannot say yet).
                    stream = Stream(wiring, ref, source, str(sids.get(ref, ref)), after=self._handed.get(ref, -1))
                    self._streams[ref] = stream
                    stream.start()
            for stream in self._retired_streams:
                if not (stream.pump.is_alive() or stream.reader.is_alive()):
                    stream.close_late()  # its results are with the sinks: what they write later is sent again
            self._retired_streams = [s for s in self._retired_streams if s.pump.is_alive() or s.reader.is_alive()]
            for outlet in self._retired_outlets:
                if not outlet.thread.is_alive():
                    self._fold(outlet)
            self._retired_outlets = [o for o in self._retired_outlets if o.thread.is_alive()]

    def _fold(self, outlet: Outlet) -> None:
        """Keep the counts of an ended retired outlet (caller holds ``_lock``)."""
        with outlet.cond:
            self._gone_by_source["written"].update(outlet.written_by_source)
            self._gone_by_source["present"].update(outlet.present_by_source)
            self._gone_by_source["dead_lettered"].update(outlet.dead_by_source)
            totals = self._gone_sinks.setdefault(outlet.ref, collections.Counter())
            for key in _SINK_COUNTERS[1:]:  # all but "buffered": an ended outlet holds nothing
                totals[key] += int(getattr(outlet, key))

    def _route(self, params: SourceSinkDriverParameters) -> None:
        subscriptions: dict[str, Any] = {str(k): v for k, v in params.subscriptions.items()}
        everyone = tuple(o for ref, o in self._outlets.items() if ref not in subscriptions)
        routes: dict[str, tuple[Outlet, ...]] = {"": everyone}
        for ref in params.sources:
            routes[ref] = everyone + tuple(o for sink, o in self._outlets.items() if ref in subscriptions.get(sink, ()))
        self._wiring.routes = routes

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
        for stream in streams:  # a source that acknowledges what was written (MQTT) has done so by now
            stream.close_late()
        self._wiring.abort.set()  # past the deadline: waiting pumps and writers give up
        for stream in streams:
            with stream.cond:
                stream.cond.notify_all()
        grace = time.monotonic() + 1.0  # readers blocked in I/O (a camera's open timeout) get one second in all
        for thread in [s.pump for s in streams] + [o.thread for o in outlets] + [s.reader for s in streams]:
            thread.join(max(0.0, grace - time.monotonic()))
        for stream in streams:  # those whose reader was still reading above (close_late closes each once)
            stream.close_late()
        recorder = self._wiring.positions
        if recorder is not None:  # after the sinks: the positions of what they wrote, one last time
            recorder.close(time.monotonic() + 5.0)
        stuck = [t.name for t in [s.reader for s in streams] + [s.pump for s in streams] + [o.thread for o in outlets] if t.is_alive()]
        if recorder is not None and recorder.thread.is_alive():
            stuck.append(recorder.thread.name)
        if stuck:
            logger.error("SourceSinkDriver: threads still running after stop: %s", ", ".join(stuck))

    # -- observing ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters per source and per sink.

        Returns:
            ``{"sources": {ref: {"sid", "state", "policy", "produced", "queued", "in_flight",
            "processed", "failed", "dropped", "unfinished", "resent", "skipped", "first_index",
            "written", "present", "dead_lettered", "errors", "last_error", "source"}},
            "sinks": {ref: {"state", "buffered", "written", "present", "dead_lettered",
            "write_failures", "lost", "last_error", "sink"}}, "removing": int, "positions": ...}``.

            Per source: ``written`` counts its records newly stored by every sink (a record
            written by two sinks counts twice), ``present`` those a sink found it already
            held (not written again), ``dead_lettered`` those a sink rejected as data and
            kept in its dead-letter place; ``unfinished`` items taken but cut off by a stop
            (never written, not failed); ``resent`` requests sent again after the inference
            process came back; ``skipped`` items a replayable source passed over because
            its sinks held them (a resumed run), or because the stream had taken them before
            the source failed and was opened again; ``first_index`` the first index it takes
            now (where this run started, moved on by such a reopening);
            ``state`` is ``waiting`` while the inference process cannot be reached.
            ``source``/``sink`` hold the component's own counters (e.g. a camera's ``reconnects``).

            ``removing``: records that removed sinks still hold (their writers drain them, within
            ``drain_timeout``); a removed sink is no longer listed, its rows stay in its sources' counts.

            ``positions`` is ``None`` without a ``position_store``; else ``{"store", "state"
            ("running", "failing" while writes fail, "closed"), "writes", "errors",
            "last_error", "sources": {ref: {"acknowledged", "recorded", "unrecorded",
            "stuck"}}}``: per source the highest index every sink acknowledged, the one in
            the store, how many acknowledged items are not recorded yet, and whether a
            record cut off by a stop holds the position back for the rest of this run.
        """
        with self._lock:
            streams = dict(self._streams)
            outlets = dict(self._outlets)
            retired = list(self._retired_outlets)
            written = collections.Counter(self._gone_by_source["written"])
            present = collections.Counter(self._gone_by_source["present"])
            dead = collections.Counter(self._gone_by_source["dead_lettered"])
            gone = {ref: collections.Counter(totals) for ref, totals in self._gone_sinks.items()}
        for outlet in [*outlets.values(), *retired]:
            with outlet.cond:
                written.update(outlet.written_by_source)
                present.update(outlet.present_by_source)
                dead.update(outlet.dead_by_source)
        params = self._current()
        sids: dict[str, Any] = {str(k): v for k, v in params.sids.items()}
        sources: dict[str, Any] = {}
        for ref in params.sources:
            stream = streams.get(ref)
            entry = stream.stats() if stream is not None else _pending_source(str(sids.get(ref, ref)))
            entry["written"] = written.get(ref, 0)
            entry["present"] = present.get(ref, 0)
            entry["dead_lettered"] = dead.get(ref, 0)
            sources[ref] = entry
        sinks = {ref: outlets[ref].stats() if ref in outlets else _pending_sink() for ref in params.sinks}
        for outlet in retired:  # a replaced or removed sink still writing what it held
            held = outlet.stats()
            totals = gone.setdefault(outlet.ref, collections.Counter())
            for key in _SINK_COUNTERS:
                totals[key] += int(held[key])
        removing = 0  # records removed sinks still hold: not finished until they are written (or given up)
        for ref, totals in gone.items():  # with the sink of that ref (a removed one is no longer listed)
            sink = sinks.get(ref)
            if sink is None:
                removing += totals["buffered"]
                continue
            for key, value in totals.items():
                sink[key] = int(sink.get(key, 0)) + value
        recorder = self._wiring.positions
        return {
            "sources": sources, "sinks": sinks, "removing": removing,
            "positions": None if recorder is None else recorder.stats(),
        }

    @staticmethod
    def finished(stats: Mapping[str, Any]) -> bool:
        """Whether a driver's ``stats()`` show every source ended and each of its results handed over by the sinks.

        Example:
            >>> SourceSinkDriver.finished({"sources": {}, "sinks": {}})
            True
        """
        for entry in stats["sources"].values():
            if entry["state"] not in ("ended", "failed") or entry["queued"] or entry["in_flight"]:
                return False
        return not stats.get("removing") and all(not sink["buffered"] for sink in stats["sinks"].values())

    @staticmethod
    def wait(
        driver: _Observed,
        timeout: float | None = None,
        *,
        interval: float = 0.1,
        progress: Callable[[dict[str, Any]], object] | None = None,
    ) -> dict[str, Any]:
        """Wait until every source of a running driver ended and its results are written; the final counters.

        A source ends at its end (a file), or after ``limit`` results (see
        :class:`SourceSinkDriverParameters`); a live source without a limit never ends.

        Args:
            driver: the handle ``proc.add_driver(...)`` returned (or the driver itself).
            timeout: seconds to wait at most (``None``: as long as it takes).
            interval: seconds between looks at the counters.
            progress: called with each look at the counters (e.g. to print a progress line).

        Returns:
            ``driver.stats()`` once :meth:`finished` holds.

        Raises:
            DriverError: the driver is not running (it failed or was stopped), or the
                timeout passed first (the message shows each source's state and counts).

        Example::

            stream = proc.add_driver("clips", SourceSinkDriver, sources={"clip": VideoSource("clip.mp4")},
                                     sinks={"db": DatabaseSink("sqlite:///frames.db")})
            final = SourceSinkDriver.wait(stream, timeout=60)
            final["sources"]["clip"]["written"]
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            stats = driver.stats()
            if progress is not None:
                progress(stats)
            if SourceSinkDriver.finished(stats):
                return stats
            if getattr(driver, "final_stats", None) is not None:  # stopped or failed: those counters are final
                stats = driver.stats()  # (it may have stopped since the look above)
                if SourceSinkDriver.finished(stats):
                    return stats
                shown = "; ".join(f"{ref}: {e['state']}, {e['written']} written" for ref, e in stats["sources"].items())
                status = getattr(getattr(driver, "status", None), "name", "stopped")
                raise DriverError(f"driver {getattr(driver, 'ref', '?')!r} is {status} before its streams finished ({shown})")
            if deadline is not None and time.monotonic() >= deadline:
                shown = "; ".join(
                    f"{ref}: {e['state']}, {e['processed']} processed, {e['queued']} queued, {e['in_flight']} in flight, {e['written']} written"
                    for ref, e in stats["sources"].items()
                )
                raise DriverError(f"the streams did not finish within {timeout} s ({shown}); give a longer timeout, or a limit")
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))


_SOURCE_COUNTERS = (
    "produced", "queued", "in_flight", "processed", "failed", "dropped", "unfinished", "resent", "skipped",
    "first_index", "written", "present", "dead_lettered", "errors",
)
_SINK_COUNTERS = ("buffered", "written", "present", "dead_lettered", "write_failures", "lost")


def _pending_source(sid: str) -> dict[str, Any]:
    """The stats of a source that is configured but not started yet (the driver is starting)."""
    return {"sid": sid, "state": "pending", "policy": None, **dict.fromkeys(_SOURCE_COUNTERS, 0), "last_error": None, "source": {}}


def _pending_sink() -> dict[str, Any]:
    """The stats of a sink that is configured but not started yet."""
    return {"state": "pending", **dict.fromkeys(_SINK_COUNTERS, 0), "last_error": None, "sink": {}}
