"""How the local runtime spawns a child process, and what every child does first.

Both kinds of child of :mod:`rvai_sdk.runtime.local` (the inference process, and each
driver: :mod:`rvai_sdk.runtime._local_driver`) are started here: a ``multiprocess``
spawn context whose children do not re-run the user's ``__main__`` (they get everything
by value, with dill), :func:`start_child` to start one, :func:`child_setup` as the
first thing the child runs (environment, logs, no Ctrl-C, die with the parent), and
:func:`exit_text` to say how one ended.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

from rvai_sdk._logging import ChildLogConfig, forward_logs

__all__ = ["child_setup", "exit_text", "spawn_context", "start_child"]


_no_main = threading.local()


def spawn_context() -> Any:
    """The ``multiprocess`` spawn context; children started by :func:`start_child` skip the parent's ``__main__``."""
    import multiprocess
    import multiprocess.spawn

    if not getattr(multiprocess.spawn.get_preparation_data, "_rvai", False):
        original = multiprocess.spawn.get_preparation_data

        def get_preparation_data(name: str) -> dict[str, Any]:
            data: dict[str, Any] = original(name)
            if getattr(_no_main, "on", False):
                # Our children get everything by value (dill): they must not re-run the user's script or
                # notebook module, so a script without an ``if __name__ == "__main__"`` guard works too.
                data.pop("init_main_from_path", None)
                data.pop("init_main_from_name", None)
            return data

        get_preparation_data._rvai = True  # type: ignore[attr-defined]
        multiprocess.spawn.get_preparation_data = get_preparation_data
    return multiprocess.get_context("spawn")


def start_child(process: Any) -> None:
    """Start ``process`` (made from :func:`spawn_context`) without it re-running the parent's ``__main__``."""
    _no_main.on = True
    try:
        process.start()
    finally:
        _no_main.on = False


def exit_text(exitcode: int | None) -> str:
    """How a child ended, from its ``exitcode``: ``exited with code 1``, ``killed by signal SIGKILL``."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


# -- in the children ------------------------------------------------------------------------------


def child_setup(env: Mapping[str, str], log: ChildLogConfig | None = None) -> None:
    """First thing in every child: environment, logs to the parent's handlers, no Ctrl-C from the
    terminal, and die with the parent."""
    os.environ.update(env)
    forward_logs(log)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import multiprocess

    parent = multiprocess.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        from multiprocess.connection import wait

        wait([sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="rvai-parent-watch", daemon=True).start()
