"""Asynchronous tasks: ``POST /tasks`` queues a request, ``GET /tasks/{id}`` reads (or waits for) its end,
and a ``callback_url`` receives the final status by POST, retried with exponential backoff.

Everything here lives on the driver's event loop. A task's failure is answered by the
same mapping as a route's (:class:`~.errors.ErrorMapper`), so its ``error`` object is the
body a ``POST /predict`` of the same request would have got.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rvai_sdk._compat import require

from . import security
from .errors import ErrorMapper, HTTPError, unprocessable

if TYPE_CHECKING:
    import httpx

    from .parameters import LiveState
else:
    httpx = require("httpx", extra="fastapi")

__all__ = ["Task", "TaskStore"]

Run = Callable[[dict[str, Any], "str | None", "float | None"], Awaitable[dict[str, Any]]]
"""How a task runs its request: (inputs, sid, timeout) -> the JSON form of the outputs."""


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


@dataclasses.dataclass
class Task:
    """One queued request and what became of it."""

    id: str
    sid: str | None
    inputs: dict[str, Any]
    callback_url: str | None
    received: float
    timeout: float | None = None
    status: str = "pending"
    started: float | None = None
    finished: float | None = None
    finished_mono: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    callback: dict[str, Any] | None = None
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def to_json(self, ttl: float) -> dict[str, Any]:
        """The task's status record, as ``GET /tasks/{id}`` answers it."""
        return {
            "id": self.id,
            "status": self.status,
            "sid": self.sid,
            "received": _iso(self.received),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "expires": _iso(None if self.finished is None else self.finished + ttl),
            "result": self.result,
            "error": self.error,
            "callback": None if self.callback is None else dict(self.callback),
        }


class TaskStore:
    """The tasks of one running driver: create, run, find, expire, and deliver callbacks.

    Args:
        state: the driver's live state (``task_ttl``, ``max_pending_tasks``, callback parameters; counters).
        errors: the driver's error mapping.
        run: runs one request (the ``/predict`` dispatch).
    """

    def __init__(self, state: LiveState, errors: ErrorMapper, run: Run) -> None:
        self.state = state
        self.errors = errors
        self.run = run
        self.tasks: dict[str, Task] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.http: Any = None  # httpx.AsyncClient for callbacks, made on the loop by start()

    # -- lifecycle (on the loop) ---------------------------------------------------------------

    def start(self) -> None:
        """Make the callback client and start expiring finished tasks."""
        self.http = httpx.AsyncClient(timeout=10.0)
        self.spawn(self._sweep_forever())

    async def close(self) -> None:
        """Cancel running tasks and deliveries; close the callback client."""
        for job in list(self.background):
            job.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background; cancelled by :meth:`close`."""
        job = asyncio.ensure_future(coro)
        self.background.add(job)
        job.add_done_callback(self.background.discard)

    # -- the store -----------------------------------------------------------------------------

    @property
    def ttl(self) -> float:
        return float(self.state.parameters.task_ttl)

    def active(self) -> int:
        """Tasks pending or running."""
        return sum(1 for t in self.tasks.values() if t.finished is None)

    def sweep(self) -> None:
        """Forget finished tasks older than ``task_ttl``."""
        now = time.monotonic()
        ttl = self.ttl
        expired = [t.id for t in self.tasks.values() if t.finished_mono is not None and now - t.finished_mono >= ttl]
        for task_id in expired:
            del self.tasks[task_id]
            self.state.count("tasks_expired")

    def find(self, task_id: str) -> Task:
        """The task ``task_id`` (404 when unknown, deleted or expired)."""
        self.sweep()
        task = self.tasks.get(task_id)
        if task is None:
            raise HTTPError(404, "TaskNotFound", f"no task {task_id!r}: it never existed, was deleted or expired")
        return task

    def delete(self, task_id: str) -> None:
        """Forget a task (a running one still runs, its result is dropped)."""
        del self.tasks[self.find(task_id).id]

    async def create(self, inputs: dict[str, Any], sid: str | None, callback_url: Any, timeout: float | None) -> Task:
        """Queue a decoded request; the new task (429 beyond ``max_pending_tasks``, 422 for a bad callback)."""
        if callback_url is not None:
            await self._check_callback(callback_url)
        self.sweep()
        active = self.active()
        limit = int(self.state.parameters.max_pending_tasks)
        if active >= limit:
            raise HTTPError(
                429,
                "TooManyTasks",
                f"{active} tasks are pending or running, the most this server keeps ({limit}); retry later",
                headers={"Retry-After": "1"},
            )
        task = Task(
            id=uuid.uuid4().hex, sid=sid, inputs=inputs, callback_url=callback_url, received=time.time(), timeout=timeout
        )
        if callback_url is not None:
            task.callback = {"url": callback_url, "status": "pending", "attempts": 0, "last_error": None}
        self.tasks[task.id] = task
        self.state.count("tasks")
        self.spawn(self._execute(task))
        return task

    async def wait(self, task: Task, seconds: float) -> None:
        """Wait up to ``seconds`` for ``task`` to finish."""
        if seconds > 0 and not task.done.is_set():
            try:
                await asyncio.wait_for(task.done.wait(), seconds)
            except asyncio.TimeoutError:
                pass

    async def _execute(self, task: Task) -> None:
        task.status = "running"
        task.started = time.time()
        try:
            task.result = await self.run(task.inputs, task.sid, task.timeout)
            task.status = "done"
        except Exception as exc:  # the same answer a POST /predict would have got
            task.error = self.errors.map(exc, "/tasks").error
            task.status = "failed"
        task.inputs = {}
        task.finished = time.time()
        task.finished_mono = time.monotonic()
        self.state.count(f"tasks_{task.status}")
        task.done.set()
        if task.callback_url is not None:
            await self._deliver(task)

    async def _sweep_forever(self) -> None:
        """Expire finished tasks even when nobody asks about them."""
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.ttl / 4)))
            self.sweep()

    # -- callbacks -----------------------------------------------------------------------------

    async def _check_callback(self, callback_url: Any) -> None:
        """422 for a ``callback_url`` that is not http(s) or reaches a destination not allowed (SSRF)."""
        if not isinstance(callback_url, str) or not re.match(r"^https?://[^\s/]+", callback_url):
            raise unprocessable("callback_url must be an http:// or https:// URL", "callback_url")
        try:
            url = httpx.URL(callback_url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise unprocessable(f"callback_url is not a valid URL: {exc}", "callback_url") from exc
        try:
            await security.resolve_callback(url, [str(a) for a in self.state.parameters.callback_allow])
        except security.CallbackUnresolved:
            pass  # DNS may answer by the time the task ends; delivery checks again
        except security.CallbackRefused as exc:
            raise unprocessable(str(exc), "callback_url") from exc

    async def _post_callback(self, url: str, payload: Mapping[str, Any]) -> Any:
        """POST ``payload`` to ``url``, checking the destination first and again at every redirect (at most 5).

        Raises:
            security.CallbackRefused: the URL, or a redirect, reaches a destination that is not allowed.
        """
        target = httpx.URL(url)
        for _ in range(6):
            allow = [str(a) for a in self.state.parameters.callback_allow]
            checked = await security.resolve_callback(target, allow)
            for i, address in enumerate(checked.addresses):  # each checked address in turn, as a client would
                try:
                    response = await self.http.post(json=payload, **checked.request_args(address))
                    break
                except httpx.ConnectError:
                    if i == len(checked.addresses) - 1:
                        raise
            location = response.headers.get("location")
            if not (300 <= response.status_code < 400 and location):
                return response
            target = target.join(location)
        raise security.CallbackRefused(f"callback_url {url!r} redirected more than 5 times")

    async def _deliver(self, task: Task) -> None:
        """POST the final status to the task's callback URL, retrying with exponential backoff."""
        assert task.callback is not None and task.callback_url is not None
        params = self.state.parameters
        retries = int(params.callback_retries)
        delay = float(params.callback_backoff)
        payload = task.to_json(self.ttl)
        payload.pop("callback", None)
        for attempt in range(retries + 1):
            task.callback["attempts"] = attempt + 1
            try:
                response = await self._post_callback(task.callback_url, payload)
                if 200 <= response.status_code < 300:
                    task.callback["status"] = "delivered"
                    task.callback["last_error"] = None
                    self.state.count("callbacks_delivered")
                    return
                task.callback["last_error"] = f"HTTP {response.status_code}"
            except security.CallbackUnresolved as exc:  # DNS may answer later: retried
                task.callback["last_error"] = str(exc)
            except security.CallbackRefused as exc:  # retrying cannot help
                task.callback["last_error"] = str(exc)
                break
            except Exception as exc:  # connection refused, timeout, bad URL...
                task.callback["last_error"] = f"{type(exc).__name__}: {exc}"
            if attempt < retries:
                await asyncio.sleep(min(delay * 2**attempt, 30.0))  # backoff between attempts
        task.callback["status"] = "failed"
        self.state.count("callbacks_failed")
