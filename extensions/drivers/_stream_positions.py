"""Stream positions kept in a store: where a stream resumes after a crash of the whole machine.

A sink that keeps positions (a database table) proves by itself where a stream stopped.
For the others (MQTT, HTTP callbacks, a log, a user's sink) the driver records, per
source, the *highest index up to which every record was acknowledged by every sink*
(written, found already held, or dead-lettered), in the store that
``SourceSinkDriverParameters.position_store`` names: an SQLite file or a Redis server,
the same kinds of store as ``Inference(state_store=...)``.

Per stream a :class:`Tracker` follows the records in the order the pump delivered them
and counts the sinks' acknowledgements; its position advances only over a contiguous
run of fully acknowledged records, so a record one sink has not acknowledged yet holds
back every later one. A record cut off by a stop, or given up by a sink at shutdown, is
a *hole*: the position never passes it (the next run delivers it again). One
:class:`Recorder` per driver writes the positions that advanced, for all its streams
in one transaction, at most every ``position_every`` acknowledged items of a stream or
every ``position_interval`` seconds, and once more when the driver stops. A failed
write is retried with backoff while the streams go on; what was acknowledged meanwhile
is written with the next successful write.

Keys: ``(pipeline name, driver ref, source ref)``; SQLite table ``rvai_stream_positions``,
Redis hash ``rvai:positions:<pipeline>:<driver ref>`` (field: the source ref). A position
only ever rises in the store (a late writer never moves it back).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rvai_sdk.drivers import Record
from rvai_sdk.exc import DriverError, MissingExtraError, ParameterError

from ._stream_outlet import LOG_EVERY, Backoff, error_text

logger = logging.getLogger("rvai_sdk.extensions.source_sink")

__all__ = ["absolute_position_store", "check_position_store", "position_store_url", "open_position_store", "redacted", "PositionStore", "Recorder", "Tracker"]

_FORMS = "a file path or 'sqlite:///PATH' (SQLite), or a 'redis://HOST:PORT/DB' URL (Redis)"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")


def redacted(url: str) -> str:
    """``url`` without its password, for messages and stats."""
    return _PASSWORD.sub(r"\1***@", url)


def check_position_store(value: Any) -> None:
    """Check ``SourceSinkDriverParameters.position_store``: ``None``, a file path, ``sqlite:///PATH`` or ``redis://...``.

    Raises:
        ParameterError: (field ``position_store``) anything else; the message names the driver's
            parameter and the forms it takes.
    """
    if value is None:
        return
    text = str(value)
    if not text.strip():
        raise ParameterError(
            f"SourceSinkDriverParameters.position_store is empty: give {_FORMS}, or None to keep no positions",
            field="position_store",
        )
    if _URL.match(text) and not text.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        raise ParameterError(
            f"SourceSinkDriverParameters.position_store {redacted(text)!r} is not a position store: give {_FORMS}, "
            "or None to keep no positions",
            field="position_store",
        )


def absolute_position_store(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (against this process's working directory).

    The driver may run in another process with another working directory (a Ray actor),
    so a relative path is fixed where the parameters are made.

    Example:
        >>> absolute_position_store("redis://127.0.0.1:6379/0")
        'redis://127.0.0.1:6379/0'
        >>> absolute_position_store("sqlite:////var/lib/positions.db")
        'sqlite:////var/lib/positions.db'
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        return url
    if url.startswith("sqlite:///"):
        return "sqlite:///" + os.path.abspath(os.path.expanduser(url[len("sqlite:///"):]))
    return os.path.abspath(os.path.expanduser(url))


def position_store_url(value: Any) -> str | None:
    """The ``position_store`` parameter for what ``SourceSinkDriver(position_store=...)`` was given.

    Accepts what ``Inference(state_store=...)`` accepts: ``None``, a file path, a ``redis://``
    URL, or a ``SqliteStateStore`` / ``RedisStateStore`` (their file or server is used; a
    ``MemoryStateStore`` keeps no positions).

    Raises:
        ParameterError: anything else (names ``position_store``).
    """
    from rvai_sdk.execution.state_store import MemoryStateStore, RedisStateStore, SqliteStateStore

    if value is None or isinstance(value, MemoryStateStore):
        return None
    if isinstance(value, SqliteStateStore):
        return value.path
    if isinstance(value, RedisStateStore):
        return value.url
    if isinstance(value, (str, Path)):
        check_position_store(str(value))
        return str(value)
    raise ParameterError(
        f"SourceSinkDriver(position_store=...) takes None, {_FORMS}, or a SqliteStateStore/RedisStateStore; "
        f"got {type(value).__name__}",
        field="position_store",
    )


class PositionStore:
    """An open connection to a position store, for one driver (pipeline name + driver ref)."""

    def load(self, source: str) -> int | None:
        """The recorded position of ``source``, or ``None``."""
        raise NotImplementedError

    def save(self, positions: Mapping[str, int]) -> None:
        """Record ``positions`` (source ref → index) in one transaction; a position never moves back."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; never raises."""


class _SqlitePositions(PositionStore):
    def __init__(self, path: str, pipeline: str, driver: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._key = (pipeline, driver)
        self._db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # batched writes: a recorded position survives a power loss
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS rvai_stream_positions (pipeline TEXT NOT NULL, driver TEXT NOT NULL, "
                "source TEXT NOT NULL, position INTEGER NOT NULL, updated REAL NOT NULL, "
                "PRIMARY KEY (pipeline, driver, source))"
            )
        except BaseException:
            self._db.close()
            raise

    def load(self, source: str) -> int | None:
        row = self._db.execute(
            "SELECT position FROM rvai_stream_positions WHERE pipeline = ? AND driver = ? AND source = ?", (*self._key, source)
        ).fetchone()
        return None if row is None else int(row[0])

    def save(self, positions: Mapping[str, int]) -> None:
        now = time.time()
        rows = [(*self._key, source, int(position), now) for source, position in positions.items()]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO rvai_stream_positions (pipeline, driver, source, position, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(pipeline, driver, source) DO UPDATE SET position = excluded.position, updated = excluded.updated "
                "WHERE excluded.position > rvai_stream_positions.position",
                rows,
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        try:
            self._db.close()
        except Exception:  # close must not raise
            pass


_REDIS_SAVE = """
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""
"""Raises each field of the hash ``KEYS[1]`` to its new value, never lowers one: ``ARGV`` is (source, position) pairs."""


def _key_part(name: str) -> str:
    """``name`` in a Redis key of ``:``-separated parts: ``%`` and ``:`` percent-escaped (other names unchanged)."""
    return name.replace("%", "%25").replace(":", "%3A")


class _RedisPositions(PositionStore):
    def __init__(self, url: str, pipeline: str, driver: str) -> None:
        from rvai_sdk._compat import require

        redis = require("redis", extra="redis")
        self._client = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=10.0)
        # ':' in a name is escaped: pipeline "a:b" with driver "c" and pipeline "a" with driver "b:c" are two keys
        self._key = f"rvai:positions:{_key_part(pipeline)}:{_key_part(driver)}"
        self._save = self._client.register_script(_REDIS_SAVE)
        try:
            self._client.ping()
        except BaseException:
            self._client.close()
            raise

    def load(self, source: str) -> int | None:
        value = self._client.hget(self._key, source)
        return None if value is None else int(value)

    def save(self, positions: Mapping[str, int]) -> None:
        args: list[Any] = []
        for source, position in positions.items():
            args += (source, int(position))
        if args:
            self._save(keys=[self._key], args=args)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # close must not raise
            pass


def open_position_store(url: str, *, pipeline: str, driver: str) -> PositionStore:
    """Connect to the store ``url`` names, for the streams of driver ``driver`` of pipeline ``pipeline``.

    Args:
        url: a file path or ``sqlite:///PATH`` (SQLite), or ``redis://HOST:PORT/DB`` (Redis).
        pipeline: the pipeline's name (first part of each key).
        driver: the driver's ref in its inference process (second part).

    Raises:
        MissingExtraError: a Redis URL without the ``redis`` extra installed.
        Exception: the store cannot be reached now (the caller retries).
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisPositions(url, pipeline, driver)
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
    return _SqlitePositions(path, pipeline, driver)


# -- what every sink acknowledged, per stream ---------------------------------------------------------

_HOLE = -1


class Tracker:
    """One stream's records in delivery order, and the highest index before which every sink acknowledged all.

    The pump calls :meth:`issue` for each record before it hands it to the sinks (or
    :meth:`hole` for one it cuts off); the sinks' writer threads call :meth:`settle`.
    Entries are keyed by the record object itself (the one object every sink of the
    stream receives), so records of an earlier run of the same source ref never mix
    with this run's. Once a hole reaches the head the tracker stops: its position
    can never pass it in this run.

    Args:
        ref: the source ref.
        recorded: the position the store held when the stream started (``None``: none).
        wake: called when ``every`` items were acknowledged since the last recorded position.
        every: see above.
    """

    def __init__(self, ref: str, recorded: int | None, wake: Callable[[], None], every: int) -> None:
        self.ref = ref
        self.lock = threading.Lock()
        self.order: collections.deque[list[Any]] = collections.deque()  # [record or None (a hole), acks to come]
        self.entries: dict[int, list[Any]] = {}  # id(record) -> its entry (the entry keeps the record alive)
        self.acknowledged = recorded
        self.recorded = recorded
        self.unrecorded = 0
        self.stuck = False
        self.every = every
        self._wake = wake

    def issue(self, record: Record, sinks: int) -> None:
        """``record`` goes to ``sinks`` sinks now (``0``: acknowledged at once)."""
        with self.lock:
            if self.stuck:
                return
            entry = [record, sinks]
            self.order.append(entry)
            self.entries[id(record)] = entry
            wake = sinks <= 0 and self._advance()
        if wake:
            self._wake()

    def hole(self) -> None:
        """The next record in order will never reach the sinks: the position stops before it."""
        with self.lock:
            if not self.stuck:
                self.order.append([None, _HOLE])
                self._advance()

    def settle(self, record: Record, acknowledged: bool) -> None:
        """One sink acknowledged ``record`` (written, already held, dead-lettered), or gave it up (``acknowledged=False``)."""
        self.settle_many((record,), acknowledged)

    def settle_many(self, records: Sequence[Record], acknowledged: bool) -> None:
        """:meth:`settle` for each of ``records`` (one sink's batch), under one hold of the lock."""
        wake = False
        with self.lock:
            entries = self.entries
            for record in records:
                entry = entries.get(id(record))
                if entry is None or entry[0] is not record or entry[1] <= 0:
                    continue
                if acknowledged:
                    entry[1] -= 1
                else:
                    entry[1] = _HOLE
                    del entries[id(record)]
                if entry[1] <= 0 and self.order and self.order[0] is entry:
                    wake = self._advance() or wake
        if wake:
            self._wake()

    def _advance(self) -> bool:
        """Pop the acknowledged head entries (under the lock); whether the recorder should be woken."""
        advanced = False
        while self.order:
            head = self.order[0]
            if head[1] == _HOLE:
                self.stuck = True  # nothing after it may be recorded in this run
                self.order.clear()
                self.entries.clear()
                break
            if head[1] > 0:
                break
            self.order.popleft()
            self.entries.pop(id(head[0]), None)
            self.acknowledged = head[0].index
            self.unrecorded += 1
            advanced = True
        return advanced and self.unrecorded >= self.every

    def due(self) -> tuple[int, int] | None:
        """The acknowledged position when it is above the recorded one, and how many items it covers since then."""
        with self.lock:
            if self.acknowledged is not None and (self.recorded is None or self.acknowledged > self.recorded):
                return self.acknowledged, self.unrecorded
            return None

    def mark(self, position: int, covered: int) -> None:
        """``position`` (covering ``covered`` items, as :meth:`due` said) is in the store now."""
        with self.lock:
            if self.recorded is None or position > self.recorded:
                self.recorded = position
            self.unrecorded = max(0, self.unrecorded - covered)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"acknowledged": self.acknowledged, "recorded": self.recorded, "unrecorded": self.unrecorded, "stuck": self.stuck}


class Recorder:
    """Writes one driver's stream positions to its store: a thread, batched writes, retries.

    Args:
        url: the ``position_store`` parameter.
        pipeline: the pipeline's name.
        driver: the driver's ref.
        every: write a stream's position once this many items were acknowledged since the last write.
        interval: and at least this often (seconds) while positions advance.
    """

    def __init__(self, url: str, *, pipeline: str, driver: str, every: int, interval: float) -> None:
        self.url = url
        self.pipeline = pipeline
        self.driver = driver
        self.every = max(1, every)
        self.interval = max(0.01, interval)
        self.cond = threading.Condition()
        self.io = threading.Lock()
        self.trackers: dict[str, Tracker] = {}  # the current stream of each source ref
        self.earlier: list[Tracker] = []  # replaced streams whose records may still be in the sinks
        self.closing = False
        self.deadline: float | None = None
        self.store: PositionStore | None = None
        self.writes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.thread = threading.Thread(target=self._run, name=f"rvai-positions-{driver}", daemon=True)

    def describe(self) -> str:
        return f"the position store {redacted(self.url)!r} of driver {self.driver!r}"

    def start(self) -> None:
        self.thread.start()

    def _connection(self) -> PositionStore:
        with self.io:
            if self.store is None:
                self.store = open_position_store(self.url, pipeline=self.pipeline, driver=self.driver)
            return self.store

    def _drop_connection(self) -> None:
        with self.io:
            store, self.store = self.store, None
        if store is not None:
            store.close()

    def _failed(self, what: str, exc: BaseException) -> str:
        self.errors += 1
        self.last_error = f"{self.describe()}: {what}: {error_text(exc)}"
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        return self.last_error

    def position(self, ref: str, stopped: threading.Event) -> int | None:
        """The recorded position of source ``ref``; retries with backoff until the store answers.

        Raises:
            MissingExtraError: the store needs an extra that is not installed.
            DriverError: the stream was stopped before the store answered.
        """
        backoff = Backoff(0.1, 5.0)
        attempts = 0
        while True:
            try:
                store = self._connection()
                with self.io:
                    position = store.load(ref)
                self.failing_since = None  # it answers (again)
                return position
            except MissingExtraError:
                raise
            except Exception as exc:
                attempts += 1
                message = self._failed(f"cannot read the position of source {ref!r}", exc)
                if attempts == 1 or attempts % LOG_EVERY == 0:
                    logger.warning("%s; the stream waits and retries (attempt %d)", message, attempts)
                self._drop_connection()
                if stopped.wait(backoff.next()):
                    raise DriverError(message) from exc

    def track(self, ref: str, recorded: int | None) -> Tracker:
        """A new tracker for a stream that starts at ``recorded`` (it replaces an earlier one of that ref)."""
        tracker = Tracker(ref, recorded, self._wake, self.every)
        with self.cond:
            earlier = self.trackers.get(ref)
            if earlier is not None:  # its records still in the sinks' buffers are settled on it
                self.earlier.append(earlier)
            self.trackers[ref] = tracker
        return tracker

    def settle(self, records: Sequence[Record], acknowledged: bool) -> None:
        """A sink acknowledged ``records`` (or gave them up): route them to their streams' trackers, a batch at a time."""
        by_source: dict[str, list[Record]] = {}
        for record in records:
            by_source.setdefault(record.source, []).append(record)
        trackers = self.trackers
        earlier = self.earlier
        for source, batch in by_source.items():
            tracker = trackers.get(source)
            if tracker is not None:
                tracker.settle_many(batch, acknowledged)
            for old in earlier:
                if old.ref == source:
                    old.settle_many(batch, acknowledged)

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def close(self, deadline: float) -> None:
        """Write the positions that advanced (one last attempt, until ``deadline``), then disconnect."""
        with self.cond:
            self.closing = True
            self.deadline = deadline
            self.cond.notify_all()
        self.thread.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def _due(self) -> dict[Tracker, tuple[int, int]]:
        due: dict[Tracker, tuple[int, int]] = {}
        with self.cond:
            trackers = self.earlier + list(self.trackers.values())
            self.earlier = [t for t in self.earlier if t.order or t.due() is not None]
        for tracker in trackers:
            position = tracker.due()
            if position is not None:
                due[tracker] = position
        return due

    def _run(self) -> None:
        backoff = Backoff(self.interval, max(self.interval, 10.0))
        last = time.monotonic()
        try:
            while True:
                with self.cond:
                    delay = self.interval if self.failing_since is None else backoff.delay
                    until = last + delay
                    while not self.closing:
                        now = time.monotonic()
                        if now >= until or (self.failing_since is None and any(
                            t.unrecorded >= t.every for t in self.trackers.values()
                        )):
                            break
                        self.cond.wait(until - now)
                    closing = self.closing
                last = time.monotonic()
                due = self._due()
                if due:
                    self._write(due, final=closing, backoff=backoff)
                if closing:
                    return
        except Exception as exc:  # a bug: report it, never hide it (positions then stay where they were)
            self.last_error = f"{self.describe()} stopped by an internal error: {error_text(exc)}"
            logger.exception("%s", self.last_error)
        finally:
            self._drop_connection()

    def _write(self, due: dict[Tracker, tuple[int, int]], *, final: bool, backoff: Backoff) -> None:
        positions: dict[str, int] = {}
        for tracker, (position, _) in due.items():
            positions[tracker.ref] = max(position, positions.get(tracker.ref, position))
        try:
            store = self._connection()
            with self.io:
                store.save(positions)
        except Exception as exc:
            message = self._failed("cannot record positions", exc)
            self._drop_connection()
            delay = backoff.next()
            if final:
                logger.error("%s; at stop: a restart resumes from the positions recorded before (%s)", message,
                             ", ".join(f"{t.ref}: {t.recorded}" for t in due))
            elif self.errors == 1 or self.errors % LOG_EVERY == 0:
                logger.warning("%s; the streams go on, positions kept in memory, retrying in %.1f s (error %d)",
                               message, delay, self.errors)
            return
        for tracker, (position, covered) in due.items():
            tracker.mark(position, covered)
        with self.cond:
            self.writes += 1
            if self.failing_since is not None:
                logger.warning("%s: recording positions again after %.1f s", self.describe(), time.monotonic() - self.failing_since)
            self.failing_since = None
            backoff.reset()

    def stats(self) -> dict[str, Any]:
        """``{"store", "state", "writes", "errors", "last_error", "sources": {ref: {"acknowledged", "recorded", "unrecorded", "stuck"}}}``."""
        with self.cond:
            trackers = dict(self.trackers)
            state = "failing" if self.failing_since is not None else ("closed" if self.closing and not self.thread.is_alive() else "running")
        return {
            "store": redacted(self.url),
            "state": state,
            "writes": self.writes,
            "errors": self.errors,
            "last_error": self.last_error,
            "sources": {ref: t.stats() for ref, t in trackers.items()},
        }
