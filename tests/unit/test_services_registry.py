"""The services registry alone: where it lives, and rows checked against the processes they name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rvai_sdk.exc import ServiceNotFoundError, UsageError
from rvai_sdk.services import Registry, ServiceRecord, home
from rvai_sdk.services.registry import process_start


def record(name: str, **fields: object) -> ServiceRecord:
    base: dict[str, object] = dict(
        name=name, kind="serve", target="app:pipeline", runtime="local", argv=[], cwd="/", log=f"/tmp/{name}.log",
        status="running", created=time.time(),
    )
    base.update(fields)
    return ServiceRecord(**base)  # type: ignore[arg-type]


def test_home_is_rvai_sdk_home_else_the_xdg_state_dir_else_local_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RVAI_SDK_HOME", str(tmp_path / "mine"))
    assert home() == tmp_path / "mine" and (tmp_path / "mine" / "logs").is_dir()
    monkeypatch.delenv("RVAI_SDK_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert home() == tmp_path / "xdg" / "rvai-sdk"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert home() == tmp_path / "user" / ".local" / "state" / "rvai-sdk"


def test_a_running_row_is_trusted_only_while_its_process_is_the_same_process(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    me = os.getpid()
    registry.create(record("alive", pid=me, pid_start=process_start(me)))
    # the same pid, started at another time: the service died and the pid went to another process
    registry.create(record("reused", pid=me, pid_start=(process_start(me) or 0) + 1, supervisor_pid=None))
    assert registry.get("alive").status == "running"
    reused = registry.get("reused")
    assert reused.status == "failed" and "no exit status was recorded" in (reused.reason or ""), reused
    assert registry.find("reused").status == "failed"  # type: ignore[union-attr]  # written back, not just shown


def test_a_dead_process_never_shows_as_running_and_a_stopping_one_shows_stopped(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    registry.create(record("dead", pid=ended.pid))
    registry.create(record("asked", pid=ended.pid, stop_requested=time.time()))
    assert registry.get("dead").status == "failed"
    asked = registry.get("asked")
    assert asked.status == "stopped" and (asked.reason or "").startswith("stopped by rvai-sdk stop"), asked


def test_names_are_unique_and_unknown_names_are_named(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.create(record("web", status="stopped"))
    with pytest.raises(UsageError, match=r"a service named 'web' already exists \(stopped\); .* rvai-sdk rm web"):
        registry.create(record("web"))
    with pytest.raises(ServiceNotFoundError, match=r"no service named 'api' \(known: web\)"):
        registry.get("api")
    registry.delete("web")
    assert registry.all() == []
