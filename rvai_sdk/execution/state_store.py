"""Durable per-sid state: where ``Inference(state_store=...)`` checkpoints cell states.

Three stores, one contract:

- :class:`MemoryStateStore` (the default, also ``state_store=None``): state lives only in
  the inference process's memory; ``restart()`` and a crash start every sid fresh.
- :class:`SqliteStateStore`: an embedded SQLite file (WAL mode), for one machine. Every
  process that opens the same file sees the same states.
- :class:`RedisStateStore`: a Redis server (extra ``redis``), for a cluster.

A checkpoint of a sid holds the fields of each stateful cell's State after one request
(pickled) and the sid's *sequence number*: how many requests have changed that sid's
state since it started fresh. A write whose sequence number is not greater than the
stored one is ignored, so an older checkpoint never overwrites a newer one.

With ``checkpoint="every"`` (default) the requests a call completed are checkpointed in
one transaction (one Redis script call) *before* their futures resolve: a caller that got a
result has its state update on disk. With ``checkpoint=<seconds>`` states are written in
the background at that interval (and when the process stops): cheaper, but a crash loses
up to that many seconds of updates. See docs/guides/durability.md for the full guarantee.

Stores are cheap, picklable descriptions; the connection is made in :meth:`open` inside
the inference process.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rvai_sdk.exc import ParameterError, StateRestoreError

if TYPE_CHECKING:
    from rvai_sdk.execution.state import StateEntry

logger = logging.getLogger(__name__)

__all__ = [
    "Checkpoint",
    "DurableStateStore",
    "MemoryStateStore",
    "OpenStateStore",
    "RedisStateStore",
    "SqliteStateStore",
    "dump_state",
    "load_state",
    "resolve_state_store",
    "Checkpointer",
    "StateSerialisationError",
]

Checkpoint = tuple[str, int, dict[str, bytes], float]
"""One sid's checkpoint: ``(sid, sequence number, cell ref -> pickled State fields, used)``; ``used`` is the
wall-clock time (``time.time()``) of the update: the sid's TTL counts from it, not from when it is written."""
Collected = tuple[Checkpoint, "StateEntry"]
"""A checkpoint with the state entry of its sid (:meth:`Checkpointer.collect`): a deleted entry's is not written."""


def dump_state(state: Any) -> bytes:
    """The fields of one State instance, pickled (the State class itself is made again from the cell on restore).

    Raises:
        Exception: whatever pickle raises for a field value it cannot serialise.
    """
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)


def load_state(factory: Any, blob: bytes) -> Any:
    """A State made by ``factory()`` with the fields of ``blob`` (from :func:`dump_state`) set on it."""
    state = factory()
    known = {f.name for f in dataclasses.fields(state)}
    for name, value in pickle.loads(blob).items():
        if name in known:  # a field removed since the checkpoint is dropped; a new one keeps its default
            setattr(state, name, value)
    return state


def _encode(states: dict[str, bytes]) -> bytes:
    return pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(sid: str, blob: bytes) -> dict[str, bytes]:
    """The cell ref to pickled fields of a stored checkpoint.

    Raises:
        StateRestoreError: the stored bytes are not a checkpoint (damaged, or written by something else).
    """
    try:
        states = pickle.loads(blob)
        if not isinstance(states, dict):
            raise TypeError(f"a {type(states).__name__}, not a cell ref to state mapping")
    except Exception as exc:
        raise StateRestoreError(f"the stored checkpoint of sid {sid!r} is damaged: {type(exc).__name__}: {exc}", sid=sid) from exc
    return states


def _check_checkpoint(checkpoint: Any, what: str) -> None:
    if checkpoint == "every":
        return
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, (int, float)) or checkpoint <= 0:
        raise ParameterError(
            f"{what}(checkpoint=...) must be 'every' (after every request) or an interval > 0 in seconds, "
            f"got {checkpoint!r}",
            field="checkpoint",
        )


class OpenStateStore:
    """A store's connection inside one inference process (made by :meth:`DurableStateStore.open`).

    Thread-safe: the executor calls it from worker threads and caller threads.
    """

    def load(self, sid: str) -> tuple[int, dict[str, bytes]] | None:
        """The last checkpoint of ``sid`` (sequence number, cell ref to pickled fields), or ``None``."""
        raise NotImplementedError

    def save(self, checkpoints: Iterable[Checkpoint]) -> None:
        """Write ``checkpoints`` in one transaction; a sid's write with a sequence number not above the stored one is ignored."""
        raise NotImplementedError

    def delete(self, sid: str) -> bool:
        """Forget ``sid``'s checkpoint; whether there was one."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""


class DurableStateStore:
    """Base of the stores that keep per-sid state outside the inference process.

    Args (of every subclass):
        checkpoint: ``"every"``: checkpoint after every request, before its result is
            delivered; or seconds between background checkpoints.
    """

    checkpoint: float | Literal["every"]

    def open(self, ttl: float | None) -> OpenStateStore:
        """Connect (in the inference process); ``ttl``: seconds a checkpoint is kept after its last write."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human name of the store, for error messages."""
        raise NotImplementedError


class MemoryStateStore:
    """State kept only in the inference process's memory (the default): lost on ``restart()`` and crashes."""

    def __repr__(self) -> str:
        return "MemoryStateStore()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemoryStateStore)

    def __hash__(self) -> int:
        return hash(MemoryStateStore)


# -- SQLite ---------------------------------------------------------------------------------------


class SqliteStateStore(DurableStateStore):
    """Per-sid state checkpointed in an SQLite file (embedded; no server).

    Args:
        path: the database file; made (with its folder) if missing. Several processes on
            one machine may share it (WAL mode). A relative path (or ``~``) is resolved here,
            in the process that makes the store, so that every process it is sent to (an
            inference process, a Ray replica with another working directory) opens that file.
        checkpoint: ``"every"`` (default) or an interval in seconds (see the module docstring).

    Example:
        >>> SqliteStateStore("/tmp/states.db")
        SqliteStateStore('/tmp/states.db', checkpoint='every')
    """

    def __init__(self, path: str | Path, *, checkpoint: float | Literal["every"] = "every") -> None:
        if not isinstance(path, (str, Path)) or not str(path):
            raise ParameterError(f"SqliteStateStore(path=...) must be a file path, got {path!r}", field="path")
        _check_checkpoint(checkpoint, "SqliteStateStore")
        self.path = os.path.abspath(os.path.expanduser(path))
        self.checkpoint = checkpoint

    def __repr__(self) -> str:
        return f"SqliteStateStore({self.path!r}, checkpoint={self.checkpoint!r})"

    def describe(self) -> str:
        return f"the SQLite state store {self.path!r}"

    def open(self, ttl: float | None) -> OpenStateStore:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return _OpenSqlite(self.path, ttl)


class _OpenSqlite(OpenStateStore):
    _PURGE_EVERY = 1000

    def __init__(self, path: str, ttl: float | None) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rvai_state "
            "(sid TEXT PRIMARY KEY, seq INTEGER NOT NULL, states BLOB NOT NULL, expires REAL)"
        )
        self._saves = 0
        self._purge()

    def _purge(self) -> None:
        if self._ttl is not None:
            with self._lock:
                self._db.execute("DELETE FROM rvai_state WHERE expires IS NOT NULL AND expires < ?", (time.time(),))

    def load(self, sid: str) -> tuple[int, dict[str, bytes]] | None:
        with self._lock:
            row = self._db.execute("SELECT seq, states, expires FROM rvai_state WHERE sid = ?", (sid,)).fetchone()
        if row is None or (row[2] is not None and row[2] < time.time()):
            return None
        return int(row[0]), _decode(sid, row[1])

    def save(self, checkpoints: Iterable[Checkpoint]) -> None:
        now, ttl = time.time(), self._ttl
        # An expired row that is not purged yet counts as absent: a sid that started fresh overwrites it.
        rows = [(sid, seq, _encode(states), None if ttl is None else used + ttl, now) for sid, seq, states, used in checkpoints]
        if not rows:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO rvai_state (sid, seq, states, expires) VALUES (?1, ?2, ?3, ?4) "
                    "ON CONFLICT(sid) DO UPDATE SET seq = excluded.seq, states = excluded.states, "
                    "expires = excluded.expires WHERE excluded.seq > rvai_state.seq "
                    "OR (rvai_state.expires IS NOT NULL AND rvai_state.expires < ?5)",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._saves += 1
        if self._saves % self._PURGE_EVERY == 0:
            self._purge()

    def delete(self, sid: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM rvai_state WHERE sid = ?", (sid,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- Redis ----------------------------------------------------------------------------------------

_SAVE_SCRIPT = """
local written = 0
for i, key in ipairs(KEYS) do
  local seq = tonumber(ARGV[3 * i - 2])
  local cur = redis.call('HGET', key, 'seq')
  if not cur or tonumber(cur) < seq then
    redis.call('HSET', key, 'seq', seq, 'states', ARGV[3 * i - 1])
    local ttl = ARGV[3 * i]
    if ttl == 'none' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, tonumber(ttl)) end
    written = written + 1
  end
end
return written
"""
"""Writes a batch of checkpoints in one call (atomic in Redis): ``KEYS`` the sids' keys, ``ARGV`` (seq, states,
ms left to live or ``none``) per key. A time to live of 0 or less deletes the key: the sid expired before its
checkpoint was written (the interval policy). Relative, so Redis's clock need not agree with this machine's."""


class RedisStateStore(DurableStateStore):
    """Per-sid state checkpointed in Redis (extra ``redis``): one hash per sid, expired by Redis itself.

    Args:
        url: the server, e.g. ``"redis://127.0.0.1:6379/0"``.
        prefix: the key prefix; a sid's key is ``prefix + sid``. Give each pipeline its own.
        checkpoint: ``"every"`` (default) or an interval in seconds (see the module docstring).
        timeout: seconds a call to the server (connecting included) may take before it fails. A
            server that stops answering then fails the requests that need it, naming the store (a
            restore: ``ProcessError``; a checkpoint: the request fails, its update kept in memory
            only), instead of holding them, and the sids behind them, for ever.

    Example:
        >>> RedisStateStore("redis://127.0.0.1:6379/0", prefix="counting:")
        RedisStateStore('redis://127.0.0.1:6379/0', prefix='counting:', checkpoint='every')
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "rvai:state:",
        checkpoint: float | Literal["every"] = "every",
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ParameterError(
                f"RedisStateStore(url=...) must be a redis:// URL such as 'redis://127.0.0.1:6379/0', got {url!r}",
                field="url",
            )
        _check_checkpoint(checkpoint, "RedisStateStore")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise ParameterError(
                f"RedisStateStore(timeout=...) must be a number of seconds > 0, got {timeout!r}", field="timeout"
            )
        self.url = url
        self.prefix = prefix
        self.checkpoint = checkpoint
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        more = "" if self.timeout == 10.0 else f", timeout={self.timeout!r}"
        return f"RedisStateStore({self.url!r}, prefix={self.prefix!r}, checkpoint={self.checkpoint!r}{more})"

    def describe(self) -> str:
        return f"the Redis state store {self.url} (prefix {self.prefix!r})"

    def open(self, ttl: float | None) -> OpenStateStore:
        from rvai_sdk._compat import require

        redis = require("redis", extra="redis")
        client = redis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        return _OpenRedis(client, self.prefix, ttl)


class _OpenRedis(OpenStateStore):
    def __init__(self, client: Any, prefix: str, ttl: float | None) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl = ttl
        self._save = client.register_script(_SAVE_SCRIPT)
        client.ping()  # fail at start, not at the first request

    def load(self, sid: str) -> tuple[int, dict[str, bytes]] | None:
        seq, states = self._client.hmget(self._prefix + sid, "seq", "states")
        if seq is None or states is None:
            return None
        return int(seq), _decode(sid, states)

    def save(self, checkpoints: Iterable[Checkpoint]) -> None:
        keys: list[str] = []
        args: list[Any] = []
        ttl, now = self._ttl, time.time()
        for sid, seq, states, used in checkpoints:
            keys.append(self._prefix + sid)
            args += (seq, _encode(states), "none" if ttl is None else math.floor((used + ttl - now) * 1000))
        if keys:
            self._save(keys=keys, args=args)

    def delete(self, sid: str) -> bool:
        return bool(self._client.delete(self._prefix + sid))

    def close(self) -> None:
        self._client.close()


def resolve_state_store(value: Any) -> DurableStateStore | None:
    """``Inference(state_store=...)`` as a durable store, or ``None`` for memory.

    Accepts ``None`` or a :class:`MemoryStateStore` (memory), a store instance, a
    ``redis://`` URL, or a file path or ``sqlite:///PATH`` URL (SQLite).

    Raises:
        ParameterError: anything else (another URL scheme, e.g. ``postgresql://``, which used to be taken for
            a relative file path).
    """
    if value is None or isinstance(value, MemoryStateStore):
        return None
    if isinstance(value, DurableStateStore):
        return value
    if isinstance(value, str) and value.startswith(("redis://", "rediss://")):
        return RedisStateStore(value)
    if isinstance(value, str) and value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        value = value[len("sqlite:///") :]  # the form task_store takes: sqlite:///PATH (sqlite:////abs/path.db)
    if isinstance(value, str) and "://" in value:
        raise ParameterError(
            f"Inference(state_store={value.split('://', 1)[0]}://...) is not a store this SDK has; give a file path or "
            "sqlite:///path (SQLite), a redis:// URL, or a SqliteStateStore/RedisStateStore instance",
            field="state_store",
        )
    if isinstance(value, (str, Path)) and str(value):
        return SqliteStateStore(value)
    raise ParameterError(
        "Inference(state_store=...) takes None (memory), a file path (SQLite), a redis:// URL, "
        f"or a SqliteStateStore/RedisStateStore/MemoryStateStore; got {type(value).__name__}",
        field="state_store",
    )


# -- the executor's side: snapshots, checkpoints, restores -------------------------------------------


class StateSerialisationError(TypeError):
    """A cell's State holds a value that cannot be pickled for the state store (the request fails with it)."""


_CLOSE_WAIT = 30.0
"""Longest :meth:`Checkpointer.close` waits for a ``drop_state``'s delete under way (a store call is bounded by its timeout)."""


class Checkpointer:
    """Connects an executor to a durable store: snapshots states after calls, checkpoints requests, restores sids.

    Args:
        store: the durable store.
        state_classes: cell ref to its State class, for the stateful cells.
        ttl: ``Inference(state_ttl=...)``, applied to checkpoints too.
    """

    def __init__(self, store: DurableStateStore, state_classes: dict[str, Any], ttl: float | None) -> None:
        self.store = store
        self.every = store.checkpoint == "every"
        self._classes = state_classes
        self._ttl = ttl
        self._open = store.open(ttl)
        self._dirty: dict[str, tuple[int, dict[str, bytes], float]] = {}  # interval policy: written at the next flush
        # Guards _dirty, _writing and _deleting. A write in flight counts its sids in _writing, and delete()
        # waits for those of its sid: a checkpoint collected before a drop_state can never land after it.
        # A sid in _deleting (begin_delete() to the end of delete()) is not read from the store, and its new
        # checkpoints wait until its old one is gone.
        self._dirty_lock = threading.Condition(threading.Lock())
        self._writing: dict[str, int] = {}
        self._deleting: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = 0  # requests collected whose checkpoints are not written yet
        self._pending_cv = threading.Condition(threading.Lock())
        self.written = 0
        """Checkpoints written so far (a sid's checkpoint counts once per write)."""
        if not self.every:
            self._thread = threading.Thread(target=self._flush_loop, name="rvai-state-checkpoints", daemon=True)
            self._thread.start()

    # Called by the scheduler, outside its lock, right after a call of a stateful cell (the sid is still held).
    def snapshot(self, ref: str, reqs: list[Any], results: list[Any]) -> None:
        """Pickle ``ref``'s state of every request of a call into ``req.snaps``; a failure replaces its result."""
        for i, req in enumerate(reqs):
            if req.sid is None or req.error is not None or isinstance(results[i], BaseException):
                continue  # a request a cell failed checkpoints its sid's states whole, or not at all (Scheduler._end_errored)
            state = req.entry.states.get(ref)
            if state is None:
                continue
            try:
                blob = dump_state(state)
            except Exception as exc:
                results[i] = self._unserialisable(ref, req.sid, state, exc)
                continue
            if req.snaps is None:
                req.snaps = {}
            req.snaps[ref] = blob

    # Called by the scheduler under its lock, for a request a cell failed (no call of its sid runs).
    def whole(self, entry: StateEntry) -> dict[str, bytes] | None:
        """Every state of ``entry``'s sid, pickled: a checkpoint for a request that did not run all its cells.

        ``None`` when there is none, or when one cannot be pickled (then no checkpoint is written: the
        sid's next request through that cell fails naming the field, as :meth:`snapshot` does).
        """
        try:
            return {ref: dump_state(state) for ref, state in entry.states.items()} or None
        except Exception:
            return None

    @staticmethod
    def _unserialisable(ref: str, sid: str, state: Any, exc: Exception) -> StateSerialisationError:
        field = "?"
        for f in dataclasses.fields(state):
            try:
                pickle.dumps(getattr(state, f.name))
            except Exception:
                field = f.name
                break
        err = StateSerialisationError(
            f"the state of cell {ref!r} for sid {sid!r} cannot be saved in the state store: field {field!r} holds "
            f"{type(getattr(state, field, None)).__name__}, which pickle refuses ({type(exc).__name__}: {exc}); keep "
            "State fields to picklable values (rvai_sdk.types, numpy arrays, plain Python data)"
        )
        err.__cause__ = exc
        return err

    # Called by the scheduler under its lock, for the requests a call completed.
    def collect(self, done: list[Any]) -> list[Collected]:
        """The checkpoints of the completed requests ``done`` (each advances its sid's sequence number), each
        with its sid's state entry.

        The caller calls :meth:`end` with ``len(done)`` once they are written (or failed).
        """
        with self._pending_cv:
            self._pending += len(done)
        out: list[Collected] = []
        used = time.time()
        for req in done:
            entry = req.entry
            if req.snaps is None or req.sid is None or entry.dropped:
                continue
            entry.seq += 1
            out.append(((req.sid, entry.seq, req.snaps, used), entry))
        return out

    # Called by the scheduler outside its lock, before the futures of those requests resolve.
    def commit(self, collected: list[Collected]) -> None:
        """Write the checkpoints of :meth:`collect` now (policy ``"every"``: one transaction) or queue them
        for the next flush; those of a sid deleted since (``drop_state``) are left out.

        Raises:
            Exception: the store failed (policy ``"every"``): the caller fails the requests.
        """
        with self._dirty_lock:
            checkpoints = [checkpoint for checkpoint, entry in collected if not entry.deleted]
            if not self.every:
                self._queue(checkpoints)
                return
            if self._deleting:  # a new checkpoint of a sid whose old one is being deleted: after the delete
                self._dirty_lock.wait_for(lambda: not any(checkpoint[0] in self._deleting for checkpoint in checkpoints))
                # A drop_state of one of these sids may have come meanwhile (it found nothing being written).
                checkpoints = [checkpoint for checkpoint, entry in collected if not entry.deleted]
            self._begin_write(checkpoints)
        try:
            self._open.save(checkpoints)
            self.written += len(checkpoints)
        finally:
            self._end_write(checkpoints)

    def _queue(self, checkpoints: list[Checkpoint]) -> None:
        """Queue ``checkpoints`` for the next flush, unless a newer one of their sid is queued (caller holds
        ``_dirty_lock``)."""
        dirty = self._dirty
        for sid, seq, states, used in checkpoints:
            queued = dirty.get(sid)
            if queued is None or queued[0] < seq or self._expired(queued[2]):  # an expired one: the sid began afresh
                dirty[sid] = (seq, states, used)

    def _expired(self, used: float) -> bool:
        """Whether a checkpoint of an update made at ``used`` (wall clock) is past ``state_ttl``."""
        return self._ttl is not None and used + self._ttl < time.time()

    def _begin_write(self, checkpoints: list[Checkpoint]) -> None:
        """Count ``checkpoints``' sids as being written (caller holds ``_dirty_lock``)."""
        writing = self._writing
        for checkpoint in checkpoints:
            writing[checkpoint[0]] = writing.get(checkpoint[0], 0) + 1

    def _end_write(self, checkpoints: list[Checkpoint]) -> None:
        with self._dirty_lock:
            writing = self._writing
            for checkpoint in checkpoints:
                sid = checkpoint[0]
                left = writing[sid] - 1
                if left:
                    writing[sid] = left
                else:
                    del writing[sid]
            self._dirty_lock.notify_all()

    def end(self, n: int) -> None:
        """``n`` requests from :meth:`collect` are checkpointed (or failed)."""
        with self._pending_cv:
            self._pending -= n
            if not self._pending:
                self._pending_cv.notify_all()

    def wait_written(self, timeout: float | None) -> bool:
        """Wait until every collected request is checkpointed; whether that happened within ``timeout`` seconds."""
        with self._pending_cv:
            return self._pending_cv.wait_for(lambda: not self._pending, timeout)

    def flush(self) -> None:
        """Write the checkpoints queued by the interval policy (one transaction).

        Raises:
            Exception: the store failed; the checkpoints stay queued for the next flush.
        """
        with self._dirty_lock:
            if self._deleting:  # a new checkpoint of a sid whose old one is being deleted: after the delete
                self._dirty_lock.wait_for(lambda: not any(sid in self._deleting for sid in self._dirty))
            dirty, self._dirty = self._dirty, {}
            checkpoints = [(sid, seq, states, used) for sid, (seq, states, used) in dirty.items()]
            self._begin_write(checkpoints)
        try:
            if checkpoints:
                self._open.save(checkpoints)
                self.written += len(checkpoints)
        except BaseException:
            with self._dirty_lock:  # queued again, unless a newer one was queued or its sid dropped meanwhile
                deleting = self._deleting
                self._queue([checkpoint for checkpoint in checkpoints if checkpoint[0] not in deleting])
            raise
        finally:
            self._end_write(checkpoints)

    def _flush_loop(self) -> None:
        interval = float(self.store.checkpoint)
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception as exc:  # the store is down: keep the states, try again at the next interval
                logger.warning("checkpointing to %s failed (kept in memory, tried again in %g s): %s: %s",
                               self.store.describe(), interval, type(exc).__name__, exc)

    # Restores (under the executor's lock: one lookup per sid that arrives and is not in memory).
    def restore(self, sid: str) -> tuple[int, dict[str, Any]] | None:
        """``sid``'s sequence number and cell ref to State instance from its last checkpoint, or ``None``."""
        with self._dirty_lock:
            if sid not in self._deleting:
                # A flush takes a sid's checkpoint out of the queue before it is stored: wait for it, or the
                # store's older one would be read.
                self._dirty_lock.wait_for(lambda: sid not in self._writing)
            queued = self._dirty.get(sid)
            if queued is None and sid in self._deleting:  # the stored checkpoint is the dropped one
                return None
            if queued is not None and self._expired(queued[2]):
                # Expired before the flush wrote it (a stored one is older still): the sid starts fresh, and
                # the new checkpoints of that fresh start, from sequence number 1, must not queue behind it.
                del self._dirty[sid]
                return None
        if queued is not None:
            found: tuple[int, dict[str, bytes]] | None = queued[:2]
        else:
            found = self._open.load(sid)
        if found is None:
            return None
        seq, blobs = found
        states = {}
        for ref, blob in blobs.items():
            if ref in self._classes:
                try:
                    states[ref] = load_state(self._classes[ref], blob)
                except Exception as exc:  # damaged, or pickled from a class or module this process lacks
                    raise StateRestoreError(
                        f"the stored state of cell {ref!r} of sid {sid!r} cannot be read: {type(exc).__name__}: {exc}", sid=sid
                    ) from exc
        return seq, states

    # Called by the executor under its lock, with the sid's state entry dropped; then delete() outside it.
    def begin_delete(self, sid: str) -> bool:
        """Start forgetting ``sid``'s checkpoint: drop its queued one; whether there was one.

        Until :meth:`delete` is done, :meth:`restore` does not read the sid's stored checkpoint (the
        sid's next request starts fresh) and the sid's new checkpoints wait to be written after it.
        """
        with self._dirty_lock:
            self._deleting[sid] = self._deleting.get(sid, 0) + 1
            return self._dirty.pop(sid, None) is not None

    def delete(self, sid: str) -> bool:
        """Forget ``sid``'s stored checkpoint (after :meth:`begin_delete`, before :meth:`end_delete`);
        whether there was one.

        It first waits for the writes of ``sid`` already under way (collected before the drop),
        so that none of them lands after it.
        """
        with self._dirty_lock:
            self._dirty_lock.wait_for(lambda: sid not in self._writing)
        return self._open.delete(sid)

    def end_delete(self, sid: str) -> None:
        """The delete :meth:`begin_delete` started is over (done or failed): the sid is read and written again."""
        with self._dirty_lock:
            left = self._deleting.get(sid, 0) - 1
            if left > 0:
                self._deleting[sid] = left
            else:
                self._deleting.pop(sid, None)
            self._dirty_lock.notify_all()

    def close(self) -> None:
        """Write what is queued and disconnect (after the deletes under way: a drop_state finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._dirty_lock:
            self._dirty_lock.wait_for(lambda: not self._deleting, timeout=_CLOSE_WAIT)
        try:
            self.flush()
        finally:
            self._open.close()
