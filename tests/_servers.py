"""Servers of a test's own, on free loopback ports: a test may stop, kill or freeze them without
disturbing the shared services every other test (and every other pytest-xdist worker) uses."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_extra
from tests.extensions.source_sink.support import wait_until


_PORTS = range(20_000, 32_768)
"""Where a test's own servers listen: below Linux's ephemeral range (32768-60999), which the kernel hands to
every outgoing connection and every ``bind(0)``, and above Ray's worker ports (10002-19999)."""


def free_port() -> int:
    """A loopback TCP port nothing listens on now, for a server a test starts (and may restart on it).

    Not ``bind(0)``: that port comes from the ephemeral range, from which the other pytest-xdist worker's
    outgoing connections could take it before the server binds it (or while a restarted server is down).
    A random port below that range is taken only by another test's server, one chance in thousands.
    """
    for _ in range(200):
        port = random.choice(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1} on 127.0.0.1 after 200 tries")


def redis_up(url: str) -> bool:
    """Whether a Redis server answers PING at ``url`` (within a second)."""
    try:
        import redis
    except ImportError:
        return False
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


class RedisServer:
    """A redis-server of this test's own on a free port, without persistence."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: redis_up(self.url), timeout=30, what=f"redis-server on port {self.port}")

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections open and answers nothing (a hung store)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)  # a frozen one too
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A :class:`RedisServer`, not started; killed afterwards."""
    require_extra("redis")
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed, but CI must provide it")
        pytest.skip("redis-server is not installed")
    server = RedisServer(free_port(), tmp_path)
    try:
        yield server
    finally:
        server.kill()
