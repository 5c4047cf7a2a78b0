"""Logging: the CLI's configuration, a JSON formatter, and child-process logs forwarded to the parent.

rvai_sdk logs with the standard library under the ``rvai_sdk`` logger tree and never
configures logging when imported: the application (or ``rvai-sdk --log-level``) does,
with :func:`configure` or its own ``logging`` setup.

Records logged in the inference process and in driver processes (local runtime: child
processes; ray runtime: actors) reach the handlers of the process that started them, with
``processName`` set to the child's role (``inference[PIPELINE]``, ``driver[REF]``). A child
sends only what the parent's logger levels let through (a snapshot taken when it starts),
as JSON over an authenticated connection (:mod:`multiprocessing.connection`), so nothing
the child sends is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing import connection
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, TextIO

from rvai_sdk import _tracing

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "TEXT_FORMAT",
    "configure",
    "ChildLogConfig",
    "LogReceiver",
    "child_log_config",
    "forward_logs",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""The values ``--log-level`` takes."""

LOG_FORMATS = ("text", "json")
"""The values ``--log-format`` takes."""

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
"""The line ``--log-format text`` writes (a traceback follows on the next lines)."""

# LogRecord attributes every record has; anything else was passed with ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``process``, ``message``, every
    ``extra=`` field (``request_id``, ``sid``, ``cell``...), and ``exception`` (the traceback) when there is one.

    Example:
        >>> record = logging.makeLogRecord({"name": "rvai_sdk.http.access", "msg": "GET / 200", "levelno": 20,
        ...                                 "levelname": "INFO", "created": 0.0, "status": 200})
        >>> json.loads(JsonFormatter().format(record))["status"]
        200
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        obj: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                obj[key] = value
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exception"] = record.exc_text
        if record.stack_info:
            obj["stack"] = record.stack_info
        return json.dumps(obj, default=str)


def configure(level: str | int = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send every record at ``level`` or above to ``stream`` (stderr), as text lines or JSON lines.

    What ``rvai-sdk --log-level LEVEL --log-format FORMAT`` calls; an application that
    configures logging itself does not need it. Replaces a handler an earlier call
    installed; leaves other handlers alone.

    Args:
        level: a name from :data:`LOG_LEVELS` (any case) or a ``logging`` level number.
        fmt: ``"text"`` (:data:`TEXT_FORMAT`) or ``"json"`` (:class:`JsonFormatter`).
        stream: where to write (default: ``sys.stderr`` at the time of each record).

    Returns:
        The handler installed on the root logger.

    Raises:
        ValueError: an unknown level or format (the message lists the valid ones).
    """
    if isinstance(level, str):
        if level.lower() not in LOG_LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
        number = logging.getLevelName(level.upper())
    else:
        number = int(level)
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(LOG_FORMATS)}")
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler._rvai_cli = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_rvai_cli", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)
    return handler


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record arrives (pytest's capture swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


# -- child processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildLogConfig:
    """What a child needs to send its log records to the parent (picklable; made by :func:`child_log_config`).

    Attributes:
        address: the parent's :class:`LogReceiver` (host, port).
        authkey: the receiver's key.
        process: the child's name in the records (``processName``).
        levels: logger name → level in the parent (``""``: the root), where one is set.
        disable: the parent's ``logging.disable`` level.
        node: the parent's host name: a child on another machine (a Ray node) does not
            forward (Ray shows its output on the parent's terminal itself).
        tracing: the parent's :class:`~rvai_sdk.tracing.TracingConfig` (``None``: not traced).
    """

    address: tuple[str, int]
    authkey: bytes
    process: str
    levels: Mapping[str, int] = field(default_factory=dict)
    disable: int = 0
    node: str = field(default_factory=socket.gethostname)
    tracing: Any = None


class LogReceiver:
    """Parent side: accepts connections from children and hands each record to this process's loggers.

    A record goes to ``logging.getLogger(record.name).handle(record)``, so the parent's
    handlers, filters and formatters decide how it is written. One daemon thread accepts,
    one reads each child. Use :func:`log_receiver` for the process's shared one.

    Args:
        host: the address to listen on (``127.0.0.1``; a Ray cluster's children on other
            nodes need an address they can reach).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.authkey = secrets.token_bytes(32)
        # authenticated on the reader's thread, so a stranger that connects and stalls holds up no child
        self._listener = Listener((host, 0))
        address = self._listener.address
        self.address: tuple[str, int] = (str(address[0]), int(address[1]))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="rvai-log-receiver", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn = self._listener.accept()
            except (OSError, EOFError):
                if self._closed.is_set():
                    return
                continue
            threading.Thread(target=self._read, args=(conn,), name="rvai-log-reader", daemon=True).start()

    def _read(self, conn: Connection) -> None:
        with conn:
            try:
                connection.deliver_challenge(conn, self.authkey)
                connection.answer_challenge(conn, self.authkey)
            except Exception:  # not one of our children
                return
            while True:
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    return
                try:
                    record = logging.makeLogRecord(json.loads(data))
                except ValueError:
                    continue
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)

    def config(self, process: str) -> ChildLogConfig:
        """What a child called ``process`` needs to forward its records here (levels as they are now)."""
        root = logging.getLogger()
        levels = {"": root.getEffectiveLevel()}
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
                levels[name] = logger.level
        return ChildLogConfig(
            self.address, self.authkey, process, levels, logging.root.manager.disable, socket.gethostname(),
            tracing=_tracing.child_config(),
        )

    def close(self) -> None:
        """Stop accepting (connections already open are read until their child closes them)."""
        self._closed.set()
        self._listener.close()


_receiver: LogReceiver | None = None
_receiver_lock = threading.Lock()


def log_receiver(host: str = "127.0.0.1") -> LogReceiver:
    """This process's shared :class:`LogReceiver` on ``host``, started on first use."""
    global _receiver
    with _receiver_lock:
        if _receiver is None or _receiver.address[0] != host:
            _receiver = LogReceiver(host)
        return _receiver


def child_log_config(process: str, host: str = "127.0.0.1") -> ChildLogConfig:
    """A :class:`ChildLogConfig` for a child called ``process`` (``inference[NAME]``, ``driver[REF]``)."""
    return log_receiver(host).config(process)


class _ForwardHandler(logging.Handler):
    """Child side: sends each record, as JSON, to the parent's :class:`LogReceiver` (in order, never lost at exit)."""

    def __init__(self, conn: Connection, process: str) -> None:
        super().__init__()
        self.conn = conn
        self.process = process
        self._broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._broken:
            return
        try:
            self.conn.send_bytes(self.prepare(record))  # under the handler's lock (Handler.handle)
        except (OSError, ValueError):  # the parent is gone or closed the connection: keep running quietly
            self._broken = True
        except Exception:
            self.handleError(record)

    def prepare(self, record: logging.LogRecord) -> bytes:
        """The record as JSON: the message formatted, the traceback as text, ``extra=`` values as JSON or ``str``."""
        obj = dict(record.__dict__)
        obj["msg"] = record.getMessage()
        obj["args"] = None
        if record.exc_info:
            obj["exc_text"] = record.exc_text or logging.Formatter().formatException(record.exc_info)
        obj["exc_info"] = None
        obj["processName"] = self.process
        obj.pop("message", None)
        return json.dumps(obj, default=str).encode()


def forward_logs(config: ChildLogConfig | None) -> bool:
    """In a child: send every record its loggers let through to the parent that made ``config``.

    Sets the root logger's and named loggers' levels to the parent's, replaces the root
    logger's handlers with one that forwards (so nothing is printed twice) and names the
    process. A child that cannot reach the parent keeps logging as it was.

    Also sets tracing up as the parent's (:attr:`ChildLogConfig.tracing`), on any node.

    Returns:
        Whether the child now forwards.
    """
    if config is not None and config.tracing is not None:
        _tracing.apply_child_config(config.tracing, config.process)
    if config is None or config.node != socket.gethostname():
        return False
    try:
        conn = Client(config.address, authkey=config.authkey)
    except Exception:
        return False
    os.environ.setdefault("RVAI_SDK_PROCESS", config.process)
    _name_process(config.process)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ForwardHandler(conn, config.process))
    for name, level in config.levels.items():
        logging.getLogger(name or None).setLevel(level)
    if config.disable:
        logging.disable(config.disable)
    return True


def _name_process(name: str) -> None:
    """``processName`` of this child's records (the ``multiprocess`` name is not seen by ``logging``)."""
    try:
        import multiprocessing

        multiprocessing.current_process().name = name
    except Exception:
        pass
