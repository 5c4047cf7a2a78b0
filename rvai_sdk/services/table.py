"""What ``rvai-sdk ps`` prints: the table of services and their uptimes."""

from __future__ import annotations

from collections.abc import Sequence

from .registry import LIVE, ServiceRecord, uptime

__all__ = ["format_uptime", "format_table"]

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
