"""Where FastAPIDriver tasks are kept: in memory, in an SQLite file (the default), in Redis or in PostgreSQL.

A task is kept as one record: its status record (``GET /tasks/{id}``) plus the driver
instance that owns it (``owner``) and where its callback goes, stored as zlib-compressed
JSON. Results are in their JSON form already (arrays as base64 of their raw bytes), so
a stored result costs about the size of its arrays.

Liveness: every driver writes a heartbeat for its instance id (``beat``); a record is
*open* while its task is pending or running, or its callback is still to be delivered.
An open record whose owner's heartbeat lapsed is an *orphan*: another driver on the same
store (or the same driver, restarted) claims it (``claim``, a compare-and-set on the
owner, so only one driver claims it) and finishes what is left (see ``tasks.py``).

Every backend here is synchronous; each call is one statement, transaction or round
trip, made from the driver's event loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from rvai_sdk._paths import state_home
from rvai_sdk._compat import require
from rvai_sdk.exc import ParameterError

__all__ = ["redacted", "TaskBackend", "MemoryTaskBackend", "SqlTaskBackend", "RedisTaskBackend", "open_task_backend", "default_task_store"]

Record = dict[str, Any]
"""A task's record: ``id``, ``status``, ``sid``, ``received``, ``started``, ``finished``, ``result``, ``error``,
``callback``, ``callback_url``, ``owner``."""


def default_task_store() -> str:
    """The store used when ``task_store`` is not set: the SQLite file ``tasks.sqlite3`` in the SDK's per-user
    directory: ``$RVAI_SDK_HOME``, else ``$XDG_STATE_HOME/rvai-sdk``, else ``~/.local/state/rvai-sdk``."""
    return f"sqlite:///{state_home() / 'tasks.sqlite3'}"


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def pack(record: Record) -> bytes:
    """A record as stored: compact JSON, zlib-compressed (level 1: fast; base64 arrays shrink by about a quarter)."""
    return zlib.compress(json.dumps(record, separators=(",", ":")).encode(), 1)


def unpack(blob: bytes) -> Record:
    record: Record = json.loads(zlib.decompress(bytes(blob)))
    return record


def is_open(record: Record) -> bool:
    """Pending or running, or its callback still to be delivered."""
    callback = record.get("callback")
    return record.get("finished") is None or (callback is not None and callback.get("status") == "pending")


def expired(record: Record, ttl: float, now: float) -> bool:
    finished = record.get("finished")
    return finished is not None and now - float(finished) >= ttl


class TaskBackend(Protocol):
    """What the driver's task store needs from a place that keeps records (one namespace: one pipeline)."""

    def insert(self, record: Record) -> None:
        """Keep a new record."""

    def update(self, record: Record) -> bool:
        """Replace a kept record if its owner is still ``record["owner"]``; False (and nothing written) when it
        was deleted or expired meanwhile, or another driver took it over."""

    def get(self, task_id: str, ttl: float) -> Record | None:
        """The record ``task_id`` unless unknown or expired (finished ``ttl`` seconds ago or more)."""

    def delete(self, task_id: str) -> bool:
        """Forget a record; False when there was none."""

    def kept_records(self, ttl: float) -> list[Record]:
        """Every record not expired, oldest first."""

    def sweep(self, ttl: float) -> int:
        """Forget expired records; how many."""

    def count(self) -> int:
        """Records kept (expired ones not yet swept included)."""

    def beat(self, owner: str, lease: float) -> None:
        """``owner`` is alive for ``lease`` more seconds."""

    def orphans(self) -> list[Record]:
        """Open records whose owner's heartbeat has lapsed."""

    def claim(self, record: Record, owner: str) -> bool:
        """Make ``owner`` the owner of ``record`` if its owner is still the one read; True when this call did."""

    def close(self) -> None:
        """Release connections."""


class MemoryTaskBackend:
    """Records in this driver's memory: lost with it, seen by no other driver."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    def insert(self, record: Record) -> None:
        self.records[record["id"]] = record

    def update(self, record: Record) -> bool:
        kept = self.records.get(record["id"])
        if kept is None or kept["owner"] != record["owner"]:
            return False
        self.records[record["id"]] = record
        return True

    def get(self, task_id: str, ttl: float) -> Record | None:
        record = self.records.get(task_id)
        return None if record is None or expired(record, ttl, time.time()) else record

    def delete(self, task_id: str) -> bool:
        return self.records.pop(task_id, None) is not None

    def kept_records(self, ttl: float) -> list[Record]:
        now = time.time()
        return [r for r in self.records.values() if not expired(r, ttl, now)]

    def sweep(self, ttl: float) -> int:
        now = time.time()
        gone = [i for i, r in self.records.items() if expired(r, ttl, now)]
        for task_id in gone:
            del self.records[task_id]
        return len(gone)

    def count(self) -> int:
        return len(self.records)

    def beat(self, owner: str, lease: float) -> None:
        pass

    def orphans(self) -> list[Record]:
        return []

    def claim(self, record: Record, owner: str) -> bool:
        return False

    def close(self) -> None:
        pass


class SqlTaskBackend:
    """Records in an SQL table: SQLite (``sqlite:///path``, the standard library) or PostgreSQL
    (``postgresql://...``, psycopg 3, the ``sql`` extra).

    Tables ``rvai_tasks`` (one row per task; ``data`` the packed record) and ``rvai_task_owners``
    (one heartbeat row per driver instance), both keyed by namespace.
    """

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.ns = namespace
        self.postgres = url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))
        self.q = "%s" if self.postgres else "?"
        self._lock = threading.Lock()  # one connection; calls come from the loop, tests may call from elsewhere
        if self.postgres:
            psycopg = require("psycopg", extra="sql")
            self.conn: Any = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True)
            blob = "BYTEA"
        else:
            path = url[len("sqlite:///") :]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path or ":memory:", timeout=10.0, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer, across processes
            self.conn.execute("PRAGMA synchronous=NORMAL")  # a commit survives a process crash (not a power loss)
            blob = "BLOB"
        self._run(
            "CREATE TABLE IF NOT EXISTS rvai_tasks (ns TEXT NOT NULL, id TEXT NOT NULL, received DOUBLE PRECISION NOT NULL,"
            f" finished DOUBLE PRECISION, open INTEGER NOT NULL, owner TEXT NOT NULL, data {blob} NOT NULL,"
            " PRIMARY KEY (ns, id))"
        )
        self._run("CREATE INDEX IF NOT EXISTS rvai_tasks_finished ON rvai_tasks (ns, finished)")
        self._run(
            "CREATE TABLE IF NOT EXISTS rvai_task_owners (ns TEXT NOT NULL, owner TEXT NOT NULL,"
            " lease_until DOUBLE PRECISION NOT NULL, PRIMARY KEY (ns, owner))"
        )

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            cur = self.conn.execute(sql.replace("?", self.q), args)
            rows = cur.fetchall() if cur.description is not None else None
            return rows if rows is not None else cur.rowcount

    def insert(self, record: Record) -> None:
        self._run(
            "INSERT INTO rvai_tasks (ns, id, received, finished, open, owner, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.ns, record["id"], record["received"], record["finished"], int(is_open(record)), record["owner"], pack(record)),
        )

    def update(self, record: Record) -> bool:
        changed = self._run(
            "UPDATE rvai_tasks SET finished = ?, open = ?, data = ? WHERE ns = ? AND id = ? AND owner = ?",
            (record["finished"], int(is_open(record)), pack(record), self.ns, record["id"], record["owner"]),
        )
        return bool(changed)

    def get(self, task_id: str, ttl: float) -> Record | None:
        rows = self._run(
            "SELECT data FROM rvai_tasks WHERE ns = ? AND id = ? AND (finished IS NULL OR finished > ?)",
            (self.ns, task_id, time.time() - ttl),
        )
        return unpack(rows[0][0]) if rows else None

    def delete(self, task_id: str) -> bool:
        return bool(self._run("DELETE FROM rvai_tasks WHERE ns = ? AND id = ?", (self.ns, task_id)))

    def kept_records(self, ttl: float) -> list[Record]:
        rows = self._run(
            "SELECT data FROM rvai_tasks WHERE ns = ? AND (finished IS NULL OR finished > ?) ORDER BY received, id",
            (self.ns, time.time() - ttl),
        )
        return [unpack(row[0]) for row in rows]

    def sweep(self, ttl: float) -> int:
        return int(self._run("DELETE FROM rvai_tasks WHERE ns = ? AND finished <= ?", (self.ns, time.time() - ttl)))

    def count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM rvai_tasks WHERE ns = ?", (self.ns,))[0][0])

    def beat(self, owner: str, lease: float) -> None:
        now = time.time()
        self._run(
            "INSERT INTO rvai_task_owners (ns, owner, lease_until) VALUES (?, ?, ?)"
            " ON CONFLICT (ns, owner) DO UPDATE SET lease_until = excluded.lease_until",
            (self.ns, owner, now + lease),
        )
        self._run("DELETE FROM rvai_task_owners WHERE ns = ? AND lease_until < ?", (self.ns, now - 3600.0))

    def orphans(self) -> list[Record]:
        rows = self._run(
            "SELECT data FROM rvai_tasks t WHERE t.ns = ? AND t.open = 1 AND NOT EXISTS (SELECT 1 FROM rvai_task_owners o"
            " WHERE o.ns = t.ns AND o.owner = t.owner AND o.lease_until > ?) ORDER BY received LIMIT 1000",
            (self.ns, time.time()),
        )
        return [unpack(row[0]) for row in rows]

    def claim(self, record: Record, owner: str) -> bool:
        previous = record["owner"]
        record["owner"] = owner
        changed = self._run(
            "UPDATE rvai_tasks SET owner = ?, data = ? WHERE ns = ? AND id = ? AND owner = ?",
            (owner, pack(record), self.ns, record["id"], previous),
        )
        return bool(changed)

    def close(self) -> None:
        with self._lock:
            self.conn.close()


class RedisTaskBackend:
    """Records in Redis (``redis://host:port/db``; the ``redis`` extra).

    Keys (``P`` = ``rvai:tasks:<namespace>``): ``P:t:<id>`` the packed record (expiring ``ttl``
    seconds after the task finished, as ``task_ttl`` was then; reads also check the ``task_ttl``
    in force now), ``P:index`` a sorted set of ids by time received, ``P:open`` the set of open
    ids, ``P:owner:<instance>`` a heartbeat key that lives ``lease`` seconds.
    """

    def __init__(self, url: str, namespace: str) -> None:
        redis = require("redis", extra="redis")
        self.redis: Any = redis.Redis.from_url(url, socket_timeout=10.0)
        self.watch_error: type[Exception] = redis.WatchError
        self.prefix = f"rvai:tasks:{namespace}"
        self.ttl = 600.0  # task_ttl, as last given to kept_records/get/sweep: the key expiry of a task finishing now
        self.redis.ping()

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}:t:{task_id}"

    def _write(self, pipe: Any, record: Record) -> None:
        key = self._key(record["id"])
        if record["finished"] is None:
            pipe.set(key, pack(record))
        else:
            pipe.set(key, pack(record), px=max(1, int(self.ttl * 1000)))
        if is_open(record):
            pipe.sadd(f"{self.prefix}:open", record["id"])
        else:
            pipe.srem(f"{self.prefix}:open", record["id"])

    def insert(self, record: Record) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self._write(pipe, record)
        pipe.zadd(f"{self.prefix}:index", {record["id"]: float(record["received"])})
        pipe.execute()

    def update(self, record: Record) -> bool:
        key = self._key(record["id"])
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                blob = pipe.get(key)
                if blob is None or unpack(blob)["owner"] != record["owner"]:
                    return False
                pipe.multi()
                self._write(pipe, record)
                pipe.execute()
                return True
            except self.watch_error:  # deleted or taken over meanwhile: this write loses
                return False

    def get(self, task_id: str, ttl: float) -> Record | None:
        self.ttl = ttl
        blob = self.redis.get(self._key(task_id))
        if blob is None:
            return None
        record = unpack(blob)
        return None if expired(record, ttl, time.time()) else record

    def delete(self, task_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._key(task_id))
        pipe.zrem(f"{self.prefix}:index", task_id)
        pipe.srem(f"{self.prefix}:open", task_id)
        return bool(pipe.execute()[0])

    def kept_records(self, ttl: float) -> list[Record]:
        self.ttl = ttl
        ids = [i.decode() for i in self.redis.zrange(f"{self.prefix}:index", 0, -1)]
        if not ids:
            return []
        now = time.time()
        blobs = self.redis.mget([self._key(i) for i in ids])
        gone = [i for i, b in zip(ids, blobs) if b is None]
        if gone:
            self.redis.zrem(f"{self.prefix}:index", *gone)
        records = [unpack(b) for b in blobs if b is not None]
        return [r for r in records if not expired(r, ttl, now)]

    def sweep(self, ttl: float) -> int:
        """Expired keys vanish by themselves; this forgets the ids of those that finished, and the records
        that expired under a ``task_ttl`` lowered since."""
        self.ttl = ttl
        now = time.time()
        ids = [i.decode() for i in self.redis.zrangebyscore(f"{self.prefix}:index", "-inf", now - ttl)]
        swept = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            blobs = self.redis.mget([self._key(i) for i in chunk])
            gone = [i for i, b in zip(chunk, blobs) if b is None or expired(unpack(b), ttl, now)]
            if gone:
                pipe = self.redis.pipeline(transaction=False)
                pipe.delete(*[self._key(i) for i in gone])
                pipe.zrem(f"{self.prefix}:index", *gone)
                pipe.srem(f"{self.prefix}:open", *gone)
                swept += int(pipe.execute()[0])
        return swept

    def count(self) -> int:
        return int(self.redis.zcard(f"{self.prefix}:index"))

    def beat(self, owner: str, lease: float) -> None:
        self.redis.set(f"{self.prefix}:owner:{owner}", b"1", px=max(1, int(lease * 1000)))

    def orphans(self) -> list[Record]:
        ids = [i.decode() for i in self.redis.srandmember(f"{self.prefix}:open", 1000)]
        if not ids:
            return []
        blobs = self.redis.mget([self._key(i) for i in ids])
        records = [unpack(b) for b in blobs if b is not None]
        stale = [i for i, b in zip(ids, blobs) if b is None]
        if stale:
            self.redis.srem(f"{self.prefix}:open", *stale)
        owners = {r["owner"] for r in records}
        alive = {o for o in owners if self.redis.exists(f"{self.prefix}:owner:{o}")}
        return [r for r in records if is_open(r) and r["owner"] not in alive]

    def claim(self, record: Record, owner: str) -> bool:
        key = self._key(record["id"])
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                blob = pipe.get(key)
                if blob is None or unpack(blob)["owner"] != record["owner"]:
                    return False
                record["owner"] = owner
                pipe.multi()
                self._write(pipe, record)
                pipe.execute()
                return True
            except self.watch_error:
                return False

    def close(self) -> None:
        self.redis.close()


def open_task_backend(url: str | None, namespace: str) -> TaskBackend:
    """The backend ``task_store`` names: ``"memory"``, ``sqlite:///PATH``, ``redis://HOST:PORT/DB`` or
    ``postgresql://USER@HOST:PORT/DB``; ``None``: :func:`default_task_store`.

    Raises:
        ParameterError: an unknown scheme, or a store that cannot be opened (names ``task_store`` and the URL).
    """
    url = default_task_store() if url is None else url
    scheme = urlsplit(url).scheme
    try:
        if url == "memory":
            return MemoryTaskBackend()
        if scheme == "sqlite":
            return SqlTaskBackend(url, namespace)
        if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            return SqlTaskBackend(url, namespace)
        if scheme in ("redis", "rediss", "unix"):
            return RedisTaskBackend(url, namespace)
    except ImportError:
        raise
    except Exception as exc:
        raise ParameterError(
            f"FastAPIDriverParameters.task_store {redacted(url)!r} cannot be opened: {type(exc).__name__}: {exc}; "
            "check that the store is reachable, or use 'memory' or 'sqlite:///PATH'",
            field="task_store",
        ) from exc
    raise ParameterError(
        f"FastAPIDriverParameters.task_store {redacted(url)!r} is not a store: use 'memory', 'sqlite:///PATH', "
        "'redis://HOST:PORT/DB' or 'postgresql://USER@HOST:PORT/DB'",
        field="task_store",
    )
