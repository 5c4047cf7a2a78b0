"""Named background services: what ``rvai-sdk serve|stream --detach`` starts and ``ps``, ``logs``, ``stop``, ``rm`` see.

A service is one ``rvai-sdk serve`` or ``stream`` command running in the background
under a name. Three pieces keep track of it:

- the **registry** (:class:`Registry`): a small SQLite file, ``services.db``, in the
  per-user directory :func:`home` (``$RVAI_SDK_HOME``, else ``$XDG_STATE_HOME/rvai-sdk``,
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
    >>> from pathlib import Path
    >>> registry = Registry(Path(tempfile.mkdtemp()))
    >>> registry.all()
    []
"""

from __future__ import annotations

from .registry import (
    HOME_ENV,
    LIVE,
    SERVICE_ENV,
    STATUSES,
    Registry,
    ServiceRecord,
    ServiceReporter,
    home,
    reporter,
    uptime,
)
from .supervisor import check_name, default_name, start_detached, stop_service, supervise
from .table import format_table, format_uptime

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
    "check_name",
    "start_detached",
    "stop_service",
    "supervise",
    "format_table",
    "format_uptime",
    "uptime",
]
