"""Named background services from the command line: ``serve|stream --detach``, ``ps``, ``logs``, ``stop``
and ``rm`` (the registry and the supervisor are :mod:`rvai_sdk.services`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rvai_sdk.exc import UsageError

__all__ = ["wants_detach", "detach", "service_options", "add_service_commands"]


def wants_detach(args: argparse.Namespace) -> bool:
    """``--detach`` was given, and this is not already the detached service itself."""
    from rvai_sdk.services import SERVICE_ENV

    inside = os.environ.get(SERVICE_ENV)
    return bool(getattr(args, "detach", False)) and (inside is None or inside != args.name)


def detach(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``serve|stream ... --detach``: start the same command as a named background service; 0 once it answers."""
    from rvai_sdk import services

    registry = services.Registry()
    name = services.check_name(args.name) if args.name else services.default_name(args.command, args.target, registry)
    record = services.start_detached(
        name=name, kind=args.command, target=args.target, runtime=args.runtime, argv=[*argv, "--name", name],
        registry=registry, wait=args.start_timeout,
    )
    if record.status == "running":
        where = record.url or ", ".join(f"{k} port {v}" for k, v in record.ports.items())
        print(f"started service {name!r} (pid {record.pid})" + (f": {where}" if where else ""))
        print(f"  rvai-sdk ps | rvai-sdk logs {name} -f | rvai-sdk stop {name}")
        return 0
    if record.status == "starting":
        print(f"service {name!r} (pid {record.pid}) is still starting after {args.start_timeout:g} s; "
              f"follow it with: rvai-sdk logs {name} -f")
        return 0
    print(f"rvai-sdk: service {name!r} {record.status} while starting: {record.reason}", file=sys.stderr)
    tail = _tail(Path(record.log), 20)
    if tail:
        print(f"last lines of its log ({record.log}):\n{tail}", file=sys.stderr)
    return 1


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' when it cannot be read, or for 0 lines)."""
    if lines <= 0:
        return ""  # [-0:] would be every line
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 65536))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _cmd_ps(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    registry = services.Registry()
    records = [registry.get(name) for name in args.names] if args.names else registry.all()
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
    elif not records:
        print(f"no services (start one with: rvai-sdk serve TARGET --detach); registry {registry.path}")
    else:
        print(services.format_table(records))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    registry = services.Registry()
    record = registry.get(args.name)
    path = Path(record.log)
    if not path.exists():
        print(f"rvai-sdk: service {args.name!r} has no log yet ({path})", file=sys.stderr)
        return 1
    if args.lines is not None and args.lines < 0:
        raise UsageError(f"--lines must be 0 or more, got {args.lines}")
    with open(path, "rb") as file:
        if args.lines is not None:
            text = _tail(path, args.lines)
            sys.stdout.write(text + ("\n" if text else ""))
            file.seek(0, os.SEEK_END)
        else:
            sys.stdout.write(file.read().decode("utf-8", "replace"))
        sys.stdout.flush()
        if not args.follow:
            return 0
        pause = threading.Event()
        checked = time.monotonic()
        try:
            while True:  # until the service ended and its log is read to the end (or Ctrl-C)
                chunk = file.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                    continue
                if time.monotonic() - checked >= 0.5:
                    checked = time.monotonic()
                    if registry.get(args.name).status not in services.LIVE:
                        rest = file.read()
                        sys.stdout.write(rest.decode("utf-8", "replace"))
                        sys.stdout.flush()
                        return 0
                pause.wait(0.1)
        except KeyboardInterrupt:
            return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    if args.timeout < 0:
        raise UsageError(f"--timeout must be at least 0 seconds, got {args.timeout:g}")
    registry = services.Registry()
    names = [r.name for r in registry.all() if r.status in services.LIVE] if args.all else args.names
    if not names and not args.all:
        raise UsageError("name the services to stop (rvai-sdk ps lists them), or pass --all")
    for record in [registry.get(name) for name in names]:  # every name checked before anything stops
        if record.status not in services.LIVE:
            print(f"{record.name}: not running ({record.status}{': ' + record.reason if record.reason else ''})")
            continue
        began = time.monotonic()
        ended = services.stop_service(record.name, timeout=args.timeout, registry=registry)
        how = "forced with SIGKILL after the graceful stop timed out" if ended.forced else "graceful"
        print(f"{record.name}: {ended.status} ({how}, {time.monotonic() - began:.1f} s)")
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    from rvai_sdk import services

    registry = services.Registry()
    records = [registry.get(name) for name in args.names]  # every name checked before anything is removed
    running = [r.name for r in records if r.status in services.LIVE]
    if running and not args.force:
        names = " ".join(running)
        raise UsageError(
            f"service(s) {', '.join(map(repr, running))} still running; stop them first (rvai-sdk stop {names}), "
            f"or remove them with rm --force (which stops them)"
        )
    for record in records:
        if record.status in services.LIVE:
            services.stop_service(record.name, timeout=args.timeout, registry=registry)
        registry.delete(record.name)
        print(f"removed {record.name}")
    return 0


def service_options(sub: argparse.ArgumentParser) -> None:
    """``--detach``, ``--name`` and ``--start-timeout`` of ``serve`` and ``stream``."""
    sub.add_argument(
        "--detach", action="store_true",
        help="run in the background as a named service (see rvai-sdk ps, logs, stop, rm); returns once it answers",
    )
    sub.add_argument("--name", default=None, help="the service's name with --detach (default: COMMAND-TARGET)")
    sub.add_argument(
        "--start-timeout", type=float, default=120.0, metavar="SECONDS",
        help="with --detach, wait at most this long for the service to answer (default: 120)",
    )


def add_service_commands(commands: Any) -> None:
    """The ``ps``, ``logs``, ``stop`` and ``rm`` subcommands."""
    ps = commands.add_parser("ps", help="list background services: status, pid, ports, uptime, counters")
    ps.add_argument("names", nargs="*", metavar="NAME", help="only these services")
    ps.add_argument("--json", action="store_true", help="print every detail as JSON")
    ps.set_defaults(run=_cmd_ps)

    logs = commands.add_parser("logs", help="print a background service's log")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing what it writes, until it ends")
    logs.add_argument("-n", "--lines", type=int, default=None, metavar="N", help="only the last N lines")
    logs.set_defaults(run=_cmd_logs)

    stop = commands.add_parser("stop", help="stop background services: SIGTERM, then SIGKILL after --timeout")
    stop.add_argument("names", nargs="*", metavar="NAME")
    stop.add_argument("--all", action="store_true", help="stop every running service")
    stop.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS",
        help="seconds for a graceful stop before it is killed (default: 10)",
    )
    stop.set_defaults(run=_cmd_stop)

    rm = commands.add_parser("rm", help="forget stopped or failed services and delete their logs")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.add_argument("-f", "--force", action="store_true", help="stop running ones first")
    rm.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="graceful stop timeout with --force")
    rm.set_defaults(run=_cmd_rm)
