"""Running ``async def`` cells: one event loop per process, on a thread of its own.

A cell whose ``call`` (or ``call_batch``) is a coroutine function returns a coroutine
when the executor calls it; :func:`run` runs that coroutine on the process's event
loop and waits for its outcome in the thread that made the call (a worker, or a
caller blocked in ``future.result()``). Everything else stays as for plain cells:

- the scheduler decides what runs, so per-sid order and state rules do not change
  (a sid's state is never used by two calls at once);
- a cell's ``concurrency`` is how many of its calls may be awaiting at once: each
  holds one worker thread while its coroutine runs on the loop, and the executor
  starts one worker per allowed concurrent call;
- all coroutines of a process share one loop, so a client made for it (an
  ``httpx.AsyncClient`` built in ``load_model``) serves every call.

The loop starts on the first async call, in a daemon thread named ``rvai-async-cells``,
and lives as long as the process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["event_loop", "run"]

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def event_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for async cells, started on first use."""
    global _loop, _thread
    loop = _loop
    if loop is not None and _thread is not None and _thread.is_alive():
        return loop
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():  # first use, or after a fork
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=serve, name="rvai-async-cells", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


def run(coro: Coroutine[Any, Any, Any], where: str) -> Any:
    """Run ``coro`` (what an ``async def`` cell method returned) on the event loop; its result, or raise.

    Args:
        coro: the coroutine.
        where: the method that returned it, for messages (``"cell 'x' call()"``).

    Raises:
        RuntimeError: called from the loop's own thread (a coroutine of an async cell blocked on
            ``predict(...).result()`` of the process it runs in, and that request reached an async
            cell in the same thread: it would never return). Where a worker thread runs that cell
            instead, the blocked loop cannot be detected here: the guide says to await ``apredict``.
        BaseException: whatever the coroutine raised.
    """
    loop = event_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError(
            f"{where} would run on the event loop of async cells from that loop's own thread: an async cell "
            "blocked on predict(...).result(); await proc.apredict(...) instead"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # the waiting thread was interrupted (Ctrl-C in a caller): do not leave the coroutine running
        raise
