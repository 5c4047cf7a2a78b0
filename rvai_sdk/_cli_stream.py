"""``rvai-sdk stream``: a pipeline fed from sources into sinks (:class:`SourceSinkDriver`, found as the
``stream`` command driver), with a live progress line or table per source, until every source ends."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from rvai_sdk._cli_run import check_driver, named, service_reporter, start, stop_on_signals
from rvai_sdk._entry_points import command_driver, load_sink, load_source
from rvai_sdk.drivers.metrics import MetricsServer, stream_metrics_text
from rvai_sdk.drivers.source import hide_passwords
from rvai_sdk.exc import RvaiError, UsageError

__all__ = ["cmd_stream", "progress_line"]


def progress_line(stats: Mapping[str, Any], previous: dict[str, int], elapsed: float) -> str:
    """One line for a :class:`SourceSinkDriver`'s stats: per source, frames/s since the last line, dropped, written, processed.

    ``written`` counts only rows the sinks newly stored; rows a sink already held
    (a replay) show as ``already present``, rejected ones as ``dead-lettered``.

    Args:
        stats: ``SourceSinkDriver.stats()``.
        previous: source ref → items done at the last line; updated.
        elapsed: seconds since the last line.

    Example:
        >>> stats = {"sources": {"cam-1": {"processed": 50, "failed": 0, "dropped": 2, "written": 48, "state": "running"}}}
        >>> progress_line(stats, {"cam-1": 25}, 1.0)
        'cam-1: 25.0 frames/s, 2 dropped, 48 written, 50 processed'
    """
    parts = []
    for ref, entry in stats["sources"].items():
        done = int(entry["processed"]) + int(entry["failed"])
        rate = (done - previous.get(ref, 0)) / elapsed if elapsed > 0 else 0.0
        previous[ref] = done
        state = "" if entry.get("state") in ("running", None) else f" ({entry['state']})"
        if entry.get("state") in ("retrying", "failed") and entry.get("last_error"):
            state = f" ({entry['state']}: {str(entry['last_error']).splitlines()[0]})"
        extra = "".join(
            f", {entry[key]} {label}"
            for key, label in (("present", "already present"), ("dead_lettered", "dead-lettered"), ("failed", "failed"))
            if entry.get(key)
        )
        parts.append(
            f"{ref}: {rate:.1f} frames/s, {entry['dropped']} dropped, {entry['written']} written, "
            f"{entry['processed']} processed{extra}{state}"
        )
    for ref, sink in stats.get("sinks", {}).items():
        if sink.get("last_error") and sink.get("buffered"):
            parts.append(f"sink {ref}: {sink['buffered']} buffered, retrying: {str(sink['last_error']).splitlines()[0]}")
    return " | ".join(parts)


def _stream_done(stats: Mapping[str, Any]) -> bool:
    """Every source ended (at its end, or after ``--frames`` results) and each of its results is handed to the sinks."""
    for entry in stats["sources"].values():
        if entry["state"] not in ("ended", "failed") or entry["queued"] or entry["in_flight"]:
            return False
    return not stats.get("removing") and all(not sink["buffered"] for sink in stats["sinks"].values())


class _MetricsServer(MetricsServer):
    """``--metrics-port``: the shared metrics server, started at once; a port that cannot be bound is a usage error."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        try:
            self.start()
        except OSError as exc:
            raise UsageError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc}") from exc


def cmd_stream(args: argparse.Namespace) -> int:
    SourceSinkDriver = command_driver("stream")
    from rvai_sdk.runtime import init

    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    if args.position_store is not None:  # a store that is not one fails here, before anything starts; a path made absolute
        try:
            checked = SourceSinkDriver.parameters_class.coerce({"position_store": args.position_store}, owner="driver SourceSinkDriver")
        except RvaiError as exc:
            raise UsageError(f"--position-store: {exc}") from exc
        args.position_store = str(checked.position_store)
    pipeline, inference = start(args)
    sources = {ref: load_source(url) for ref, url in named(args.source, "source").items()}
    sinks = {ref: load_sink(url) for ref, url in named(args.sink, "sink").items()}
    from rvai_sdk._progress import ProgressDisplay

    display = ProgressDisplay(sys.stdout)  # a live table on a terminal (rich), else a line per interval
    reporter = service_reporter()
    metrics = _MetricsServer(args.metrics_port) if args.metrics_port is not None else None
    try:
        # the signal handlers go in after init: Ray sets its own for SIGTERM, which would abort the process
        with init(args.runtime) as rt, stop_on_signals() as stop, rt.start_inference(inference) as proc:
            stream = proc.add_driver(
                "stream", SourceSinkDriver, sources=sources, sinks=sinks,
                parameters={"limit": args.frames, "position_store": args.position_store},
            )
            names = ", ".join(f"{ref} ({url})" for ref, url in named(args.source, "source").items())
            into = ", ".join(args.sink)
            print(hide_passwords(f"streaming {names} through pipeline {pipeline.name!r} into {into}"), flush=True)
            if metrics is not None:
                print(f"  metrics {metrics.url}", flush=True)
            reporter.running(
                ports={} if metrics is None else {"metrics": int(metrics.url.rsplit(":", 1)[1].split("/")[0])},
                url=None if metrics is None else metrics.url,
            )
            started = last = time.monotonic()
            deadline = None if args.duration is None else started + args.duration
            previous: dict[str, int] = {}
            stats = stream.stats()
            if metrics is not None:
                metrics.update(stream_metrics_text(pipeline.name, stats, {}))
            stop.serving()
            while not stop.is_set():
                remaining = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
                if remaining > 0:
                    stop.wait(remaining)
                check_driver(stream, proc)
                stats = stream.stats()
                now = time.monotonic()
                before = dict(previous)
                line = f"[{now - started:6.1f} s] {progress_line(stats, previous, now - last)}"
                elapsed = max(now - last, 1e-9)
                rates = {ref: (done - before.get(ref, 0)) / elapsed for ref, done in previous.items()}
                display.show(line, stats, rates, now - started)
                if metrics is not None:
                    metrics.update(stream_metrics_text(pipeline.name, stats, rates))
                reporter.counters(_stream_counters(stats))
                last = now
                if _stream_done(stats) or (deadline is not None and now >= deadline):
                    break
            display.close()
            print("stopping: finishing requests in flight and writing buffered results", flush=True)
            stats = _drain(stream, stats)
            proc.remove_driver(stream.pid)
            try:  # its counters as its run ended: what the stop finished, wrote or gave up is in them
                stats = stream.stats()
            except RvaiError:  # it died: what was last seen
                pass
            reporter.counters(_stream_counters(stats), force=True)
    finally:
        display.close()
        if metrics is not None:
            metrics.close()
    return _summary(stats)


def _drain(stream: Any, stats: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Stop the sources from taking more (a limit of 0), let what they took finish and be written; the counters then.

    Bounded by ``timeout``; what is left then is finished (or counted) by the driver's own stop.
    """
    try:
        stream.set_parameters({"limit": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = stream.stats()
            if stream.final_stats is not None:  # stopped or failed meanwhile: nothing more to wait for
                break
            if all(not e["queued"] and not e["in_flight"] for e in stats["sources"].values()) and all(
                not s["buffered"] for s in stats["sinks"].values()
            ):
                break
            time.sleep(0.05)
    except RvaiError:  # the driver failed or stopped: report what was last seen
        pass
    return stats


def _summary(last: Mapping[str, Any]) -> int:
    """Print what each source did (as the driver ended); 1 when a source failed or a sink lost records."""
    status = 0
    for ref, entry in last["sources"].items():
        more = "".join(
            f", {entry[key]} {label}"
            for key, label in (("present", "already present"), ("dead_lettered", "dead-lettered"), ("unfinished", "unfinished"))
            if entry.get(key)
        )
        print(
            f"{ref}: {entry['processed']} processed, {entry['failed']} failed, {entry['dropped']} dropped, "
            f"{entry['written']} written{more} ({entry['state']})"
        )
        if entry["state"] == "failed" or (entry["state"] == "retrying" and not entry["processed"]):
            status = 1
            print(f"  source {entry['state']}: {entry['last_error']}", file=sys.stderr)
    for ref, sink in last["sinks"].items():
        # what its writer still held as the driver ended (stuck in a write past drain_timeout) is not written either
        unwritten = sink["lost"] + sink["buffered"]
        if sink["last_error"] or unwritten:
            held = f" ({sink['buffered']} still held by its writer when the stream stopped)" if sink["buffered"] else ""
            print(f"sink {ref}: {unwritten} lost{held}, last error: {sink['last_error']}", file=sys.stderr)
            status = 1 if unwritten else status
    return status


def _stream_counters(stats: Mapping[str, Any]) -> dict[str, int]:
    """What ``rvai-sdk ps`` shows for a running ``stream``: its sources' counters, summed."""
    sources = list(stats["sources"].values())
    return {
        key: sum(int(entry.get(key, 0)) for entry in sources)
        for key in ("processed", "dropped", "written", "dead_lettered", "failed")
    }
