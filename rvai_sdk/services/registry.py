"""The registry of named services: a SQLite file in a per-user directory, rows checked against live processes.

See :mod:`rvai_sdk.services`. The service process reports itself through
:class:`ServiceReporter`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rvai_sdk._paths import HOME_ENV, state_home
from rvai_sdk.exc import ServiceNotFoundError, UsageError

__all__ = [
    "HOME_ENV",
    "SERVICE_ENV",
    "STATUSES",
    "LIVE",
    "ServiceRecord",
    "Registry",
    "ServiceReporter",
    "home",
    "reporter",
    "process_start",
    "alive",
    "uptime",
]

SERVICE_ENV = "RVAI_SDK_SERVICE"
"""Set by the supervisor in the service's environment: the service's name."""
STATUSES = ("starting", "running", "failed", "stopped")
"""What ``ps`` shows: ``starting`` until the service answers, ``running``, then ``stopped`` or ``failed``."""
LIVE = ("starting", "running")
"""The statuses of a service whose process should be alive."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    runtime TEXT NOT NULL,
    argv TEXT NOT NULL,
    cwd TEXT NOT NULL,
    log TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    pid INTEGER,
    pid_start INTEGER,
    supervisor_pid INTEGER,
    supervisor_start INTEGER,
    exit_code INTEGER,
    reason TEXT,
    ports TEXT NOT NULL DEFAULT '{}',
    url TEXT,
    counters TEXT NOT NULL DEFAULT '{}',
    stop_requested REAL,
    forced INTEGER NOT NULL DEFAULT 0
)
"""


def home() -> Path:
    """The per-user directory of the registry and the logs (created, mode 0700).

    ``$RVAI_SDK_HOME`` when set, else ``$XDG_STATE_HOME/rvai-sdk``, else
    ``~/.local/state/rvai-sdk`` (:func:`rvai_sdk._paths.state_home`).
    """
    root = state_home()
    (root / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


@dataclasses.dataclass
class ServiceRecord:
    """One row of the registry: a named service, as last recorded (see :meth:`Registry.refresh`).

    Attributes:
        name: the service's name.
        kind: ``serve`` or ``stream``.
        target: the pipeline target of the command.
        runtime: ``debug``, ``local`` or ``ray``.
        argv: the ``rvai-sdk`` arguments the service runs.
        cwd: the directory it runs in.
        log: its log file (the command's stdout and stderr).
        status: one of :data:`STATUSES`.
        created: when it was started (seconds since the epoch).
        started: when it answered (``running``), else ``None``.
        ended: when it stopped or failed, else ``None``.
        pid: the service process (``None`` until started).
        exit_code: its exit status (negative: the signal that ended it), once it ended.
        reason: why it stopped or failed, in words.
        ports: port name → number (``http``, ``metrics``).
        url: where it serves, when it does.
        counters: its latest counters (requests, frames...), as it reported them.
    """

    name: str
    kind: str
    target: str
    runtime: str
    argv: list[str]
    cwd: str
    log: str
    status: str
    created: float
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    pid_start: int | None = None
    supervisor_pid: int | None = None
    supervisor_start: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    ports: dict[str, int] = dataclasses.field(default_factory=dict)
    url: str | None = None
    counters: dict[str, Any] = dataclasses.field(default_factory=dict)
    stop_requested: float | None = None
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON (what ``rvai-sdk ps --json`` prints), with ``uptime`` in seconds."""
        data = dataclasses.asdict(self)
        data["uptime"] = uptime(self)
        for key in ("pid_start", "supervisor_start", "stop_requested"):
            data.pop(key)
        return data


_JSON_FIELDS = ("argv", "ports", "counters")


def uptime(record: ServiceRecord) -> float | None:
    """Seconds since the service answered (``starting``: since it was started); ``None`` once it ended."""
    if record.status not in LIVE:
        return None
    return max(0.0, time.time() - (record.started or record.created))


def process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live process, ``None`` when there is none or it is a zombie.

    Without ``/proc`` (not Linux) any live pid counts and its start time is ``0``.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
        return 0
    fields = text[text.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    """The process ``pid`` runs, and is the one that started at ``start`` (not a reused pid)."""
    if pid is None:
        return False
    ticks = process_start(pid)
    return ticks is not None and (start is None or ticks == 0 or ticks == start)


class Registry:
    """The SQLite registry of named services, in :func:`home` (or ``root``).

    Every method opens its own short connection, so processes share the file safely
    (SQLite's locking; a writer waits up to 10 s for another).

    Args:
        root: the directory (default: :func:`home`).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = home() if root is None else root
        (self.root / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.root / "services.db"
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    def log_path(self, name: str) -> Path:
        """Where the log of the service ``name`` is kept."""
        return self.root / "logs" / f"{name}.log"

    @staticmethod
    def _record(row: sqlite3.Row) -> ServiceRecord:
        data = dict(row)
        for key in _JSON_FIELDS:
            data[key] = json.loads(data[key])
        data["forced"] = bool(data["forced"])
        return ServiceRecord(**data)

    def create(self, record: ServiceRecord) -> None:
        """Add a new service.

        Raises:
            UsageError: a service with that name is already registered.
        """
        data = dataclasses.asdict(record)
        for key in _JSON_FIELDS:
            data[key] = json.dumps(data[key])
        columns = ", ".join(data)
        try:
            with self._connect() as db:
                db.execute(f"INSERT INTO services ({columns}) VALUES ({', '.join('?' * len(data))})", list(data.values()))
        except sqlite3.IntegrityError:
            existing = self.find(record.name)
            status = existing.status if existing is not None else "registered"
            raise UsageError(
                f"a service named {record.name!r} already exists ({status}); pick another --name, "
                f"or remove it first with: rvai-sdk rm {record.name}"
            ) from None

    def find(self, name: str) -> ServiceRecord | None:
        """The row of ``name`` as stored (not checked), or ``None``."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._record(row)

    def get(self, name: str) -> ServiceRecord:
        """The service ``name``, checked (:meth:`refresh`).

        Raises:
            ServiceNotFoundError: no service has that name.
        """
        record = self.find(name)
        if record is None:
            known = ", ".join(r.name for r in self.all(check=False)) or "none"
            raise ServiceNotFoundError(f"no service named {name!r} (known: {known}); rvai-sdk ps lists them")
        return self.refresh(record)

    def all(self, *, check: bool = True) -> list[ServiceRecord]:
        """Every service, oldest first; each checked (:meth:`refresh`) unless ``check=False``."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM services ORDER BY created, name").fetchall()
        records = [self._record(row) for row in rows]
        return [self.refresh(r) for r in records] if check else records

    def update(self, name: str, *, only_if: Sequence[str] | None = None, **fields: Any) -> bool:
        """Set ``fields`` of ``name`` (only while its status is one of ``only_if``, when given); whether a row changed."""
        values = [json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()]
        sql = f"UPDATE services SET {', '.join(f'{k} = ?' for k in fields)} WHERE name = ?"
        values.append(name)
        if only_if is not None:
            sql += f" AND status IN ({', '.join('?' * len(only_if))})"
            values.extend(only_if)
        with self._connect() as db:
            changed: int = db.execute(sql, values).rowcount
        return changed > 0

    def delete(self, name: str) -> None:
        """Forget ``name`` and delete its log."""
        with self._connect() as db:
            db.execute("DELETE FROM services WHERE name = ?", (name,))
        self.log_path(name).unlink(missing_ok=True)

    def refresh(self, record: ServiceRecord) -> ServiceRecord:
        """``record`` checked against the processes: a live row whose processes are gone becomes ``stopped`` or ``failed``.

        The supervisor records how the service ended; when it could not (it was
        killed too), the row is closed here with that said.
        """
        if record.status not in LIVE:
            return record
        if alive(record.pid, record.pid_start):
            return record
        supervisor = alive(record.supervisor_pid, record.supervisor_start)
        if supervisor and record.pid is None:
            return record  # the supervisor is starting the command
        if supervisor:  # the command ended: its supervisor records how in a moment
            pause = threading.Event()
            for _ in range(200):  # 10 s at most (a busy machine); only in the moment between the end and the record
                pause.wait(0.05)
                latest = self.find(record.name)
                if latest is None or latest.status not in LIVE:
                    return latest if latest is not None else record
            reason = f"process {record.pid} ended and its supervisor did not record how"
        else:
            who = f"process {record.pid}" if record.pid is not None else "the command"
            reason = (
                f"{who} is gone and its supervisor (pid {record.supervisor_pid}) too, so no exit status was "
                "recorded (killed together, or the machine restarted)"
            )
        if record.stop_requested is not None:
            status, reason = "stopped", f"stopped by rvai-sdk stop; {reason}"
        else:
            status = "failed"
        self.update(record.name, only_if=LIVE, status=status, reason=reason, ended=time.time())
        return self.find(record.name) or record


# -- inside the service process ---------------------------------------------------------------


class ServiceReporter:
    """What a ``serve`` or ``stream`` command tells the registry about itself; does nothing outside a service.

    Args:
        name: the service's name (``None``: not a service; every method is a no-op).
        registry: where to report (default: :class:`Registry` of :func:`home`).
        every: the least seconds between two counter reports.
    """

    def __init__(self, name: str | None, registry: Registry | None = None, every: float = 1.0) -> None:
        self.name = name
        self.every = every
        self._registry = registry
        self._last = 0.0

    @property
    def active(self) -> bool:
        """Whether this process runs as a named service."""
        return self.name is not None

    def _reg(self) -> Registry:
        if self._registry is None:
            self._registry = Registry()
        return self._registry

    def running(self, *, ports: Mapping[str, int] | None = None, url: str | None = None) -> None:
        """The service answers now: record ``running``, its ports and URL."""
        if self.name is None:
            return
        pid = os.getpid()
        self._reg().update(
            self.name, only_if=LIVE, status="running", started=time.time(), ports=dict(ports or {}), url=url,
            pid=pid, pid_start=process_start(pid),
        )

    def counters(self, counters: Mapping[str, Any], *, force: bool = False) -> None:
        """Record the latest counters (at most once per ``every`` seconds unless ``force``)."""
        if self.name is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        with contextlib.suppress(sqlite3.Error):  # a busy registry costs one report, never the service
            self._reg().update(self.name, counters=dict(counters))


def reporter() -> ServiceReporter:
    """The reporter of this process: active when the supervisor started it as a service (:data:`SERVICE_ENV`).

    The variable is removed from the environment, so processes this one starts are no services.
    """
    return ServiceReporter(os.environ.pop(SERVICE_ENV, None) or None)
