"""The live progress of ``rvai-sdk stream``: a per-source table on a terminal, plain lines otherwise.

On a terminal, with rich installed (the ``cli`` extra), :class:`ProgressDisplay` redraws
one table in place: per source its frames/s, processed, dropped, written,
dead-lettered and state, and a row per sink that is retrying. Elsewhere (a pipe, a
log file, a detached service) it prints one plain line per interval, the
``progress_line`` of ``rvai_sdk.cli``; on a terminal without rich that line is
rewritten in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

__all__ = ["ProgressDisplay", "progress_table"]


def _state(entry: Mapping[str, Any]) -> str:
    state = str(entry.get("state", "running"))
    if state in ("retrying", "failed") and entry.get("last_error"):
        return f"{state}: {str(entry['last_error']).splitlines()[0]}"
    return state


def progress_table(stats: Mapping[str, Any], rates: Mapping[str, float], elapsed: float) -> Any:
    """A ``rich.table.Table`` of a ``SourceSinkDriver.stats()``: one row per source, then sinks that are retrying.

    Args:
        stats: ``SourceSinkDriver.stats()``.
        rates: source ref → results per second over the last interval.
        elapsed: seconds since the stream started (the table's title).

    Raises:
        MissingExtraError: rich is not installed (``pip install 'rvai_sdk[cli]'``).
    """
    from rvai_sdk._compat import require

    rich_table = require("rich.table", extra="cli")
    table = rich_table.Table(title=f"stream, {elapsed:.1f} s", title_justify="left")
    table.add_column("source")
    for column in ("frames/s", "processed", "dropped", "written", "dead-lettered"):
        table.add_column(column, justify="right")
    table.add_column("state")
    for ref, entry in stats["sources"].items():
        table.add_row(
            str(ref),
            f"{rates.get(ref, 0.0):.1f}",
            str(entry["processed"]),
            str(entry["dropped"]),
            str(entry["written"]),
            str(entry.get("dead_lettered", 0)),
            _state(entry),
        )
    for ref, sink in stats.get("sinks", {}).items():
        if sink.get("last_error") and sink.get("buffered"):
            error = str(sink["last_error"]).splitlines()[0]
            table.add_row(f"sink {ref}", "", "", "", "", "", f"{sink['buffered']} buffered, retrying: {error}")
    return table


class ProgressDisplay:
    """Shows each update of a stream's progress: a live rich table on a terminal, else a plain line.

    Args:
        out: where to write (``sys.stdout``).
        rich: use a rich table when ``out`` is a terminal and rich is installed (default ``True``).

    Example:
        >>> import io
        >>> display = ProgressDisplay(io.StringIO())
        >>> display.kind
        'lines'
    """

    def __init__(self, out: IO[str], *, rich: bool = True) -> None:
        self.out = out
        self.tty = out.isatty()
        self._live: Any = None
        self.kind = "lines"
        if self.tty and rich:
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:
                pass
            else:
                self._live = Live(console=Console(file=out), auto_refresh=False, transient=False)
                self.kind = "table"
        if self.kind == "lines" and self.tty:
            self.kind = "line"  # one line rewritten in place

    def show(self, line: str, stats: Mapping[str, Any], rates: Mapping[str, float], elapsed: float) -> None:
        """Show one update: ``line`` (the plain form) or the table of ``stats`` and ``rates``."""
        if self._live is not None:
            if not self._live.is_started:
                self._live.start()
            self._live.update(progress_table(stats, rates, elapsed), refresh=True)
        elif self.tty:
            print(f"\r{line}\x1b[K", end="", file=self.out, flush=True)
        else:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        """End the display (the table stays on screen); safe to call twice."""
        if self._live is not None:
            if self._live.is_started:
                self._live.stop()
            self._live = None
        elif self.tty and self.kind == "line":
            print(file=self.out, flush=True)
            self.kind = "closed"
