"""Named background services: what ``rvai-sdk serve|stream --detach`` starts and ``ps``, ``logs``, ``stop``, ``rm`` see.

A service is one ``rvai-sdk serve`` or ``stream`` command running in the background
under a name. Three pieces keep track of it:

- the **registry** (:class:`Registry`): a small SQLite file, ``services.db``, in the
  per-user directory :func:`home` (``$RVAI_SDK_HOME``, else ``$XDG_RUNTIME_DIR/rvai-sdk``,
  else ``~/.local/state/rvai-sdk``), with one row per service, and each service's log
  file under ``logs/``;
- the **supervisor** (:func:`supervise`): a small process, started in a session of its
  own, that starts the command, waits for it and records how it ended (exit status,
  signal, the command's last error line);
- the **service process** itself reports that it is up, its ports and its counters
  through a :class:`ServiceReporter` (a no-op outside a service).

A row is never trusted alone: :meth:`Registry.refresh` checks that the service's
process is alive (and is the same process, not a reused pid) and turns a row whose
processes are gone into ``failed`` with the reason, so ``ps`` never shows a dead
service as running.

Example:
    >>> import tempfile
    >>> registry = Registry(Path(tempfile.mkdtemp()))
    >>> registry.all()
    []
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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
    "default_name",
    "start_detached",
    "stop_service",
    "supervise",
    "format_table",
    "format_uptime",
]

HOME_ENV = "RVAI_SDK_HOME"
"""Environment variable naming the directory of the registry and logs (tests point it at a temporary one)."""
SERVICE_ENV = "RVAI_SDK_SERVICE"
"""Set by the supervisor in the service's environment: the service's name."""
STATUSES = ("starting", "running", "failed", "stopped")
"""What ``ps`` shows: ``starting`` until the service answers, ``running``, then ``stopped`` or ``failed``."""
LIVE = ("starting", "running")
"""The statuses of a service whose process should be alive."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
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

    ``$RVAI_SDK_HOME`` when set, else ``$XDG_RUNTIME_DIR/rvai-sdk``, else
    ``~/.local/state/rvai-sdk``.
    """
    if os.environ.get(HOME_ENV):
        root = Path(os.environ[HOME_ENV])
    elif os.environ.get("XDG_RUNTIME_DIR"):
        root = Path(os.environ["XDG_RUNTIME_DIR"]) / "rvai-sdk"
    else:
        root = Path.home() / ".local" / "state" / "rvai-sdk"
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


def _process_start(pid: int) -> int | None:
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


def _alive(pid: int | None, start: int | None) -> bool:
    """The process ``pid`` runs, and is the one that started at ``start`` (not a reused pid)."""
    if pid is None:
        return False
    ticks = _process_start(pid)
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
        if _alive(record.pid, record.pid_start):
            return record
        supervisor = _alive(record.supervisor_pid, record.supervisor_start)
        if supervisor and record.pid is None:
            return record  # the supervisor is starting the command
        if supervisor:  # the command ended: its supervisor records how in a moment
            pause = threading.Event()
            for _ in range(40):  # 2 s at most
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
            pid=pid, pid_start=_process_start(pid),
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


# -- starting, supervising, stopping --------------------------------------------------------------


def default_name(kind: str, target: str, registry: Registry) -> str:
    """``kind-target`` made into a name, with ``-2``, ``-3``... when it is taken.

    Example:
        >>> import tempfile
        >>> default_name("serve", "my_pipelines:pipeline", Registry(Path(tempfile.mkdtemp())))
        'serve-my_pipelines-pipeline'
    """
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{kind}-{target}").strip("-.")[:56]
    taken = {r.name for r in registry.all(check=False)}
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        if name not in taken:
            return name
    raise UsageError(f"too many services named {base!r}; pass --name, or remove old ones with rvai-sdk rm")


def check_name(name: str) -> str:
    """``name`` when it can name a service.

    Raises:
        UsageError: it is empty, too long, or has characters other than letters, digits, ``_``, ``.``, ``-``.
    """
    if not _NAME.match(name):
        raise UsageError(
            f"--name {name!r} cannot name a service: use 1-63 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return name


def start_detached(
    *,
    name: str,
    kind: str,
    target: str,
    runtime: str,
    argv: Sequence[str],
    registry: Registry | None = None,
    wait: float = 120.0,
) -> ServiceRecord:
    """Register ``name`` and start ``rvai-sdk ARGV`` under a supervisor in the background; wait until it answers.

    Args:
        name: the service's name (free in the registry).
        kind: ``serve`` or ``stream``.
        target: the pipeline target (shown by ``ps``).
        runtime: the runtime it runs on (shown by ``ps``).
        argv: the ``rvai-sdk`` arguments to run (``--detach`` is ignored inside the service).
        registry: the registry (default: :func:`home`'s).
        wait: the most seconds to wait for the service to be ``running`` (or to fail).

    Returns:
        The service as it stands after the wait: ``running``, ``failed``, ``stopped``, or
        still ``starting`` when ``wait`` ran out.

    Raises:
        UsageError: the name is taken.
    """
    registry = registry or Registry()
    log = registry.log_path(name)
    me = os.getpid()  # the supervisor until there is one: a live process, so ps shows the row as starting
    record = ServiceRecord(
        name=name, kind=kind, target=target, runtime=runtime, argv=list(argv), cwd=os.getcwd(), log=str(log),
        status="starting", created=time.time(), supervisor_pid=me, supervisor_start=_process_start(me),
    )
    registry.create(record)
    env = {**os.environ, SERVICE_ENV: name, HOME_ENV: str(registry.root), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "rvai_sdk.services", "supervise", name, "--", sys.executable, "-m", "rvai_sdk.cli", *argv]
    try:
        with open(log, "wb") as out:
            supervisor = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
    except OSError as exc:
        registry.update(name, status="failed", reason=f"could not start: {exc}", ended=time.time())
        return registry.get(name)
    registry.update(name, supervisor_pid=supervisor.pid, supervisor_start=_process_start(supervisor.pid))
    deadline = time.monotonic() + wait
    pause = threading.Event()
    current = registry.get(name)
    while current.status == "starting" and time.monotonic() < deadline:
        supervisor.poll()  # reap it, should it end
        pause.wait(0.05)
        current = registry.get(name)
    return current


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_error(log: str) -> str | None:
    """The last ``rvai-sdk: ...`` error line (or last line) of a log, for a failure's reason."""
    try:
        with open(log, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 16384))
            lines = [line.strip() for line in file.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line for line in lines if line.startswith("rvai-sdk:")]
    return errors[-1] if errors else (lines[-1][:300] if lines else None)


def supervise(name: str, argv: Sequence[str], registry: Registry | None = None) -> int:
    """Run ``argv`` as the service ``name`` and record how it ends; what ``start_detached`` starts.

    The command runs in a process group of its own; a SIGTERM, SIGINT or SIGHUP to the
    supervisor is passed on to it as SIGTERM. When the command ends, what is left of its
    group is killed and the row gets ``stopped`` (``rvai-sdk stop``, or it ended by itself
    with status 0) or ``failed`` (another status, or a signal) with the reason.

    Returns:
        0 (the service's own status is in the registry).
    """
    registry = registry or Registry()
    started: list[subprocess.Popen[bytes]] = []
    asked: list[int] = []

    def forward(signum: int, frame: object) -> None:
        asked.append(signum)
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # before the start: no signal is lost
        signal.signal(sig, forward)
    try:
        child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        registry.update(name, status="failed", reason=f"could not start {argv[0]!r}: {exc}", ended=time.time())
        return 0
    started.append(child)
    registry.update(name, pid=child.pid, pid_start=_process_start(child.pid))
    if asked:  # told to stop while starting it
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    code = child.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # whatever the command left in its group
    record = registry.find(name)
    if record is None:  # removed while running
        return 0
    if code < 0:
        how = f"killed by {_signal_name(-code)}"
    elif code == 0:
        how = "exited with status 0"
    else:
        error = _last_error(record.log)
        how = f"exited with status {code}" + (f": {error}" if error else "")
    if record.stop_requested is not None:
        status = "stopped"
        reason = "stopped by rvai-sdk stop" + (
            f" (forced with SIGKILL after the graceful stop timed out)" if record.forced else f" ({how})"
        )
    elif code == 0:
        status, reason = "stopped", "ended by itself (exited with status 0)"
    else:
        status, reason = "failed", how
    registry.update(name, status=status, reason=reason, exit_code=code, ended=time.time())
    return 0


def stop_service(name: str, *, timeout: float = 10.0, registry: Registry | None = None) -> ServiceRecord:
    """Stop the service ``name``: SIGTERM (a graceful stop), then SIGKILL of its process group after ``timeout`` seconds.

    A service that is not running is left as it is.

    Returns:
        The service's record once it ended (``forced`` says whether SIGKILL was needed).

    Raises:
        ServiceNotFoundError: no service has that name.
    """
    registry = registry or Registry()
    record = registry.get(name)
    if record.status not in LIVE:
        return record
    registry.update(name, stop_requested=time.time())
    pid, start = record.pid, record.pid_start
    if not _alive(pid, start):  # still being started: the supervisor passes the signal on
        pid, start = record.supervisor_pid, record.supervisor_start
    if pid is None:
        return registry.get(name)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while _alive(pid, start) and time.monotonic() < deadline:
        pause.wait(0.05)
    if _alive(pid, start):
        registry.update(name, forced=1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for _ in range(200):  # up to 10 s for the supervisor to record the end
        current = registry.get(name)
        if current.status not in LIVE:
            return current
        pause.wait(0.05)
    return registry.get(name)


# -- showing ----------------------------------------------------------------------------------


def uptime(record: ServiceRecord) -> float | None:
    """Seconds since the service answered (``starting``: since it was started); ``None`` once it ended."""
    if record.status not in LIVE:
        return None
    return max(0.0, time.time() - (record.started or record.created))


def format_uptime(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``, ``3d04h``; ``-`` for ``None``.

    Example:
        >>> format_uptime(5), format_uptime(185), format_uptime(7620), format_uptime(None)
        ('5s', '3m05s', '2h07m', '-')
    """
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _details(record: ServiceRecord) -> str:
    if record.status in LIVE:
        counts = ", ".join(f"{v} {k.replace('_', ' ' if record.kind == 'serve' else '-')}" for k, v in record.counters.items())
        return f"requests: {counts}" if record.kind == "serve" and counts else counts
    return record.reason or ""


def format_table(records: Sequence[ServiceRecord]) -> str:
    """The ``rvai-sdk ps`` table: name, status, pid, ports, uptime, command, runtime, then counters or why it ended.

    Example:
        >>> r = ServiceRecord(name="web", kind="serve", target="app:pipeline", runtime="local", argv=[], cwd="/",
        ...                   log="web.log", status="failed", created=0.0, pid=41, reason="killed by SIGKILL")
        >>> print(format_table([r]))
        NAME  STATUS  PID  PORTS  UPTIME  COMMAND                     DETAILS
        web   failed  41   -      -       serve app:pipeline (local)  killed by SIGKILL
    """
    header = ("NAME", "STATUS", "PID", "PORTS", "UPTIME", "COMMAND", "DETAILS")
    rows = [header] + [
        (
            r.name,
            r.status,
            "-" if r.pid is None else str(r.pid),
            ",".join(f"{k}:{v}" for k, v in r.ports.items()) or "-",
            format_uptime(uptime(r)),
            f"{r.kind} {r.target} ({r.runtime})",
            _details(r),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows
    ).rstrip()


def _main(argv: Sequence[str]) -> int:
    """``python -m rvai_sdk.services supervise NAME -- COMMAND...`` (started by :func:`start_detached`)."""
    if len(argv) < 4 or argv[0] != "supervise" or argv[2] != "--":
        print("usage: python -m rvai_sdk.services supervise NAME -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return supervise(argv[1], argv[3:])


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
