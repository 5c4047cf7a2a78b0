"""Starting a service under its supervisor, the supervisor itself, and stopping a service.

See :mod:`rvai_sdk.services`. The supervisor runs as
``python -m rvai_sdk.services supervise NAME -- COMMAND...``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from rvai_sdk.exc import UsageError

from .registry import HOME_ENV, LIVE, SERVICE_ENV, Registry, ServiceRecord, alive, process_start

__all__ = ["default_name", "check_name", "start_detached", "supervise", "stop_service"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

def default_name(kind: str, target: str, registry: Registry) -> str:
    """``kind-target`` made into a name, with ``-2``, ``-3``... when it is taken.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
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
        status="starting", created=time.time(), supervisor_pid=me, supervisor_start=process_start(me),
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
    registry.update(name, supervisor_pid=supervisor.pid, supervisor_start=process_start(supervisor.pid))
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
    registry.update(name, pid=child.pid, pid_start=process_start(child.pid))
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
    if not alive(pid, start):  # still being started: the supervisor passes the signal on
        pid, start = record.supervisor_pid, record.supervisor_start
    if pid is None:
        return registry.get(name)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while alive(pid, start) and time.monotonic() < deadline:
        pause.wait(0.05)
    if alive(pid, start):
        registry.update(name, forced=1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for _ in range(200):  # up to 10 s for the supervisor to record the end
        current = registry.get(name)
        if current.status not in LIVE:
            return current
        pause.wait(0.05)
    return registry.get(name)

