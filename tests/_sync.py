"""Synchronisation that crosses process boundaries, for tests whose cells run in another process.

A :class:`SyncServer` lives in the test process and listens on a Unix socket; a
cell in any process reaches it through :class:`Sync` (made from the address,
which travels as a model path). Waiting blocks on a socket read, never on a
sleep, and every wait has a timeout.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable


def eventually(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll a condition on the system's state (not a duration) until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.0005)


class SyncServer:
    """Named events and barriers served to other processes.

    Protocol: a client sends one line ``"<op> <name> [<parties>]\\n"`` and reads one
    byte. ``set``: sets the event (answer at once); ``wait``: answers once the event
    is set; ``barrier``: answers once ``parties`` clients reached the barrier.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="rvai-sync-")
        self.address = os.path.join(self._dir, "sync.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.address)
        self._sock.listen(64)
        self._lock = threading.Lock()
        self._set: set[str] = set()
        self._waiting: dict[str, list[socket.socket]] = defaultdict(list)
        self._barriers: dict[str, list[socket.socket]] = defaultdict(list)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            line = b""
            while not line.endswith(b"\n"):
                chunk = conn.recv(256)
                if not chunk:
                    break
                line += chunk
            parts = line.decode().split()
            if len(parts) < 2:
                conn.close()
                continue
            self._handle(conn, parts)

    def _handle(self, conn: socket.socket, parts: list[str]) -> None:
        op, name = parts[0], parts[1]
        release: list[socket.socket] = []
        with self._lock:
            if op == "set":
                self._set.add(name)
                release = [conn, *self._waiting.pop(name, [])]
            elif op == "wait":
                if name in self._set:
                    release = [conn]
                else:
                    self._waiting[name].append(conn)
            elif op == "barrier":
                self._barriers[name].append(conn)
                if len(self._barriers[name]) >= int(parts[2]):
                    release = self._barriers.pop(name)
        for c in release:
            try:
                c.sendall(b"1")
            finally:
                c.close()

    def set(self, name: str) -> None:
        """Set an event from the test process."""
        Sync(self.address).set(name)

    def close(self) -> None:
        """Stop listening and close every connection still waiting (a waiter that gave up, a barrier never
        reached): left to the garbage collector, they would surface later, in another test, as an unclosed
        socket warning."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread (Linux)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
        with self._lock:
            pending = [c for conns in (*self._waiting.values(), *self._barriers.values()) for c in conns]
            self._waiting.clear()
            self._barriers.clear()
        for conn in pending:
            conn.close()
        try:
            os.unlink(self.address)
            os.rmdir(self._dir)
        except OSError:
            pass


class Sync:
    """A client of a :class:`SyncServer`, usable from any process."""

    def __init__(self, address: str) -> None:
        self.address = address

    def _ask(self, line: str, timeout: float) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.address)
            s.sendall(line.encode() + b"\n")
            try:
                return s.recv(1) == b"1"
            except TimeoutError:
                return False

    def set(self, name: str) -> None:
        assert self._ask(f"set {name}", 10)

    def wait(self, name: str, timeout: float = 30) -> bool:
        """Whether the event was set within ``timeout`` seconds."""
        return self._ask(f"wait {name}", timeout)

    def barrier(self, name: str, parties: int, timeout: float = 30) -> bool:
        """Whether ``parties`` clients reached the barrier within ``timeout`` seconds."""
        return self._ask(f"barrier {name} {parties}", timeout)
