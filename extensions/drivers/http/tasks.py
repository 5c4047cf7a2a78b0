"""Asynchronous tasks: ``POST /tasks`` queues a request, ``GET /tasks/{id}`` reads (or waits for) its end,
and a ``callback_url`` receives the final status by POST, retried with exponential backoff.

Everything here lives on the driver's event loop, but for the task store's calls: they run on a
thread of the store's own (one, so they keep their order), so a slow or hung store (a Redis or
PostgreSQL server that stopped answering, a busy disk) delays only the task routes that need it,
never ``/predict`` or the health routes. A task's failure is answered by the same mapping as a
route's (:class:`~.errors.ErrorMapper`), so its ``error`` object is the body a ``POST /predict``
of the same request would have got.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from rvai_sdk._compat import require

from .._stream_outlet import Backoff
from . import security
from .errors import ErrorMapper, HTTPError, json_bytes, unprocessable
from .task_store import MemoryTaskBackend, Record, TaskBackend, default_task_store, open_task_backend, redacted

if TYPE_CHECKING:
    import httpx

    from .parameters import LiveState
else:
    httpx = require("httpx", extra="fastapi")

__all__ = ["Task", "TaskStore"]

T = TypeVar("T")

Run = Callable[[dict[str, Any], "str | None", "float | None"], Awaitable[dict[str, Any]]]
"""How a task runs its request: (inputs, sid, timeout) -> the JSON form of the outputs."""

STALLED_AFTER = 2.0
"""Seconds the task store may spend in one call before task routes stop waiting behind it (503 at once)."""


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
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    callback: dict[str, Any] | None = None
    owner: str = ""
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

    def to_record(self) -> Record:
        """What the task store keeps (not the inputs: a task is never re-run from its record)."""
        return {
            "id": self.id,
            "status": self.status,
            "sid": self.sid,
            "received": self.received,
            "started": self.started,
            "finished": self.finished,
            "result": self.result,
            "error": self.error,
            "callback": self.callback,
            "callback_url": self.callback_url,
            "owner": self.owner,
        }

    @classmethod
    def from_record(cls, record: Record) -> Task:
        """A task read back from the store."""
        return cls(
            id=record["id"],
            sid=record["sid"],
            inputs={},
            callback_url=record.get("callback_url"),
            received=record["received"],
            status=record["status"],
            started=record.get("started"),
            finished=record.get("finished"),
            result=record.get("result"),
            error=record.get("error"),
            callback=record.get("callback"),
            owner=record.get("owner", ""),
        )


TASK_ID = re.compile(r"^[0-9a-f]{32}$")
"""What a task id looks like (``uuid4().hex``); anything else is answered 404 without asking the store."""


class TaskStore:
    """The tasks of one running driver: create, run, find, expire, and deliver callbacks; kept in the
    store ``task_store`` names (see :mod:`.task_store`), where other drivers on that store see them too.

    A task runs on the driver that accepted it (its *owner*), once. The owner renews a heartbeat in
    the store every ``task_lease / 3`` seconds. When the heartbeat lapses (the driver was killed or
    lost the store), any driver on the store claims its open tasks: one that was pending or running
    is reported ``failed`` with the error ``TaskInterrupted`` (never re-run: a request may already
    have changed its stream's state), and a callback not yet delivered is delivered by the claimer.

    Args:
        state: the driver's live state (``task_ttl``, ``max_pending_tasks``, callback parameters; counters).
        errors: the driver's error mapping.
        run: runs one request (the ``/predict`` dispatch).
        namespace: tasks of other namespaces in the same store are not seen (the pipeline's name).
        instance: this driver's id, the owner of the tasks it accepts.
    """

    def __init__(self, state: LiveState, errors: ErrorMapper, run: Run, namespace: str = "", instance: str = "") -> None:
        self.state = state
        self.errors = errors
        self.run = run
        self.namespace = namespace
        self.instance = instance or uuid.uuid4().hex[:16]
        self.tasks: dict[str, Task] = {}  # the tasks this driver is running or delivering a callback for
        self.background: set[asyncio.Task[None]] = set()
        self.http: Any = None  # httpx.AsyncClient for callbacks, made on the loop by start()
        self.backend: TaskBackend = MemoryTaskBackend()
        self.store_url = "memory"
        self._io: concurrent.futures.ThreadPoolExecutor | None = None  # the store's thread, made by start()
        self._busy_since: float | None = None  # monotonic start of the call the store's thread is in, if any
        self._unsaved: set[str] = set()  # finished tasks whose final state the store has not taken yet

    # -- lifecycle (on the loop) ---------------------------------------------------------------

    def start(self) -> None:
        """Open the store, make the callback client, and start expiring tasks, beating and recovering orphans.

        Raises:
            ParameterError: the store ``task_store`` names cannot be opened.
        """
        url = self.state.parameters.task_store
        self.store_url = default_task_store() if url is None else str(url)
        self.backend = open_task_backend(self.store_url, self.namespace)
        self.backend.beat(self.instance, self.lease)
        if not isinstance(self.backend, MemoryTaskBackend):  # memory cannot hang: called on the loop
            self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rvai-task-store")
        self.http = httpx.AsyncClient(timeout=10.0)
        self.spawn(self._sweep_forever())
        self.spawn(self._beat_forever())

    async def close(self) -> None:
        """Report this driver's unfinished tasks failed, cancel deliveries, close the callback client and store."""
        for task in list(self.tasks.values()):
            if task.finished is None:
                self._interrupt(task, "the driver stopped before the task finished")
                await self._save(task)
            elif task.id in self._unsaved:  # a last try: its result is still only here
                await self._save(task)
        for job in list(self.background):
            job.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
        try:
            await self._call(self.backend.close)  # after every call queued before it
        finally:
            if self._io is not None:
                self._io.shutdown(wait=False)

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` in the background; cancelled by :meth:`close`."""
        job = asyncio.ensure_future(coro)
        self.background.add(job)
        job.add_done_callback(self.background.discard)

    # -- the store -----------------------------------------------------------------------------

    @property
    def ttl(self) -> float:
        return float(self.state.parameters.task_ttl)

    @property
    def lease(self) -> float:
        return float(self.state.parameters.task_lease)

    def active(self) -> int:
        """Tasks this driver has pending or running."""
        return sum(1 for t in list(self.tasks.values()) if t.finished is None)

    async def sweep(self) -> None:
        """Forget finished tasks older than ``task_ttl``."""
        ttl = self.ttl
        now = time.time()
        for task in [t for t in self.tasks.values() if t.finished is not None and now - t.finished >= ttl]:
            if task.id not in self._unsaved:  # one the store has not taken yet stays until it has
                self.tasks.pop(task.id, None)
        for _ in range(await self._call(self.backend.sweep, ttl)):
            self.state.count("tasks_expired")

    async def listing(self) -> list[Task]:
        """Every task in the store not yet expired, oldest first."""
        return [self._view(Task.from_record(r)) for r in await self._ask(self.backend.kept_records, self.ttl)]

    async def kept(self, timeout: float = 2.0) -> int | None:
        """Tasks in the store (this driver's and others'); ``None`` when the store fails or does not
        answer within ``timeout`` seconds."""
        if self.stalled() is not None:
            return None  # not one more call queued behind the one the store is not answering
        try:
            return await asyncio.wait_for(self._call(self.backend.count), timeout)
        except Exception:
            return None

    def kept_blocking(self, timeout: float = 2.0) -> int | None:
        """:meth:`kept`, from a thread other than the event loop's; ``None`` when the store fails or does
        not answer within ``timeout`` seconds."""
        if self.stalled() is not None:
            return None
        try:
            if self._io is None:
                return self.backend.count()
            return self._io.submit(self.backend.count).result(timeout)
        except Exception:
            return None

    def stalled(self) -> float | None:
        """Seconds the store has been in its current call, once that is over :data:`STALLED_AFTER`; else ``None``.

        The store is called on one thread, so a store that stops answering (a frozen server, a
        partition) holds every call behind the one it is in, each until the client's own timeout
        (Redis: 10 s). Past ``STALLED_AFTER`` the task routes answer 503 at once instead of queueing.
        """
        since = self._busy_since
        if since is None:
            return None
        busy = time.monotonic() - since
        return busy if busy > STALLED_AFTER else None

    def _view(self, task: Task) -> Task:
        """This driver's live copy of a task it runs, else the stored one."""
        return self.tasks.get(task.id, task)

    async def find(self, task_id: str) -> Task:
        """The task ``task_id`` (404 when unknown, deleted or expired)."""
        record = await self._ask(self.backend.get, task_id, self.ttl) if TASK_ID.match(task_id) else None
        if record is None:
            try:
                await self.sweep()  # it may have just expired: count it
            except Exception as exc:
                raise self._unavailable(exc) from exc
            shown = task_id if len(task_id) <= 64 else task_id[:64] + "..."
            raise HTTPError(404, "TaskNotFound", f"no task {shown!r}: it never existed, was deleted or expired")
        return self._view(Task.from_record(record))

    async def delete(self, task_id: str) -> None:
        """Forget a task (a running one still runs, its result is dropped)."""
        task = await self.find(task_id)
        await self._ask(self.backend.delete, task.id)
        self.tasks.pop(task.id, None)

    async def create(self, inputs: dict[str, Any], sid: str | None, callback_url: Any, timeout: float | None) -> Task:
        """Queue a decoded request; the new task (429 beyond ``max_pending_tasks``, 422 for a bad callback)."""
        if callback_url is not None:
            await self._check_callback(callback_url)
        active = self.active()
        limit = int(self.state.parameters.max_pending_tasks)
        if active >= limit:
            raise HTTPError(
                429,
                "TooManyTasks",
                f"{active} tasks are pending or running, the most this server keeps ({limit}); retry later",
                headers={"Retry-After": "1"},
            )
        kept, most = await self._ask(self.backend.count), int(self.state.parameters.max_kept_tasks)
        if kept >= most:
            raise HTTPError(
                429,
                "TooManyTasks",
                f"{kept} tasks are kept in the task store (finished ones until task_ttl, {self.ttl:g} s), the most it "
                f"keeps (max_kept_tasks, {most}); fetch and DELETE /tasks/{{id}} the finished ones, lower task_ttl, or "
                "raise max_kept_tasks",
                headers={"Retry-After": "1"},
            )
        task = Task(
            id=uuid.uuid4().hex,
            sid=sid,
            inputs=inputs,
            callback_url=callback_url,
            received=time.time(),
            timeout=timeout,
            owner=self.instance,
        )
        if callback_url is not None:
            task.callback = {"url": callback_url, "status": "pending", "attempts": 0, "last_error": None}
        # it is handed to the dispatch at once: stored as running, one write fewer per task
        task.status = "running"
        task.started = task.received
        self.tasks[task.id] = task  # counted as active while the store writes it
        try:
            await self._ask(self.backend.insert, task.to_record())
        except BaseException:
            self.tasks.pop(task.id, None)
            raise
        self.state.count("tasks")
        self.spawn(self._execute(task))
        return task

    async def wait(self, task: Task, seconds: float) -> Task:
        """Wait up to ``seconds`` for ``task`` to finish; the task as it is then (run here or by another driver)."""
        if seconds <= 0 or task.finished is not None:
            return task
        if task.id in self.tasks:
            try:
                await asyncio.wait_for(task.done.wait(), seconds)
            except asyncio.TimeoutError:
                pass
            return task
        deadline = time.monotonic() + seconds
        pause = 0.01
        while True:  # another driver runs it: poll the store, backing off to 0.25 s
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.25)
            record = await self._ask(self.backend.get, task.id, self.ttl)
            if record is None:
                return task
            task = Task.from_record(record)
            if task.finished is not None or time.monotonic() >= deadline:
                return task

    async def _call(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on the store's thread (here for the ``memory`` store, and before :meth:`start`)."""
        if self._io is None:
            return call(*args)
        return await asyncio.get_running_loop().run_in_executor(self._io, functools.partial(self._timed, call, *args))

    def _timed(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on the store's thread, noting when it started (see :meth:`stalled`)."""
        self._busy_since = time.monotonic()
        try:
            return call(*args)
        finally:
            self._busy_since = None

    async def _ask(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on the store, for a request; a store that fails, or has been stuck in a call for over
        :data:`STALLED_AFTER` seconds, answers 503 ``TaskStoreUnavailable`` (the latter at once)."""
        busy = self.stalled()
        if busy is not None:
            raise self._unavailable(f"has not answered for {busy:.0f} s")
        try:
            return await self._call(call, *args)
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, why: BaseException | str) -> HTTPError:
        """503 ``TaskStoreUnavailable`` naming the store and ``why`` (an error it raised, or what it did not do)."""
        self.state.count("task_store_errors")
        what = why if isinstance(why, str) else f"failed: {type(why).__name__}: {why}"
        return HTTPError(
            503, "TaskStoreUnavailable", f"the task store {redacted(self.store_url)} {what}; retry later", headers={"Retry-After": "1"}
        )

    async def _save(self, task: Task) -> bool | None:
        """Write ``task`` to the store; False when it was deleted (or expired) meanwhile, or another driver
        took it over (this driver's heartbeat lapsed: the task was reported failed, and that stands);
        ``None`` when the store failed (counted and logged: the task goes on here)."""
        try:
            kept = await self._call(self.backend.update, task.to_record())
        except Exception as exc:
            self.state.count("task_store_errors")
            from .logs import log_failure

            log_failure(exc, "/tasks", 500)
            return None
        self._unsaved.discard(task.id)
        return kept

    async def _persist(self, task: Task) -> None:
        """Write the final state of a task the store failed to take (it is in ``_unsaved``), trying again with
        backoff (0.1 s doubling to 5 s) until it does, however long: until then the task stays this driver's
        live copy, which answers for it. Then (or when it was deleted or taken over meanwhile) the live copy
        goes, unless its callback is still being delivered."""
        backoff = Backoff(0.1, 5.0)
        while True:
            await asyncio.sleep(backoff.next())
            if await self._save(task) is not None:
                break
        if task.callback is None or task.callback["status"] != "pending":
            self.tasks.pop(task.id, None)

    def _keep_trying(self, task: Task) -> None:
        """The store did not take ``task``'s final state: keep it here and write it in the background."""
        self.tasks[task.id] = task
        self._unsaved.add(task.id)
        self.spawn(self._persist(task))

    def _interrupt(self, task: Task, why: str) -> None:
        task.status = "failed"
        task.error = {
            "type": "TaskInterrupted",
            "message": f"task {task.id} was not finished: {why}; it was not re-run (its request may have changed "
            "its stream's state): submit it again",
        }
        task.finished = time.time()
        self.state.count("tasks_interrupted")

    async def _execute(self, task: Task) -> None:
        try:
            result = await self.run(task.inputs, task.sid, task.timeout)
            size = len(json_bytes(result))
            limit = int(self.state.parameters.max_task_result_bytes)
            if size > limit:
                raise HTTPError(
                    413,
                    "TaskResultTooLarge",
                    f"the result of task {task.id} is {size} bytes of JSON, more than max_task_result_bytes "
                    f"({limit}); POST /predict answers it directly, or raise max_task_result_bytes",
                )
            task.result = result
            task.status = "done"
        except Exception as exc:  # the same answer a POST /predict would have got
            task.error = self.errors.map(exc, "/tasks").error
            task.status = "failed"
        task.inputs = {}
        task.finished = time.time()
        self.state.count(f"tasks_{task.status}")
        kept = await self._save(task)
        task.done.set()
        if kept is False:  # deleted or taken over meanwhile: its result is dropped
            self.tasks.pop(task.id, None)
            return
        if kept is None:
            self._keep_trying(task)  # the callback is not held back meanwhile
        if task.callback_url is not None:
            await self._deliver(task)
        elif task.id not in self._unsaved:
            self.tasks.pop(task.id, None)  # the store answers for it from now on

    async def _sweep_forever(self) -> None:
        """Expire finished tasks even when nobody asks about them."""
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.ttl / 4)))
            try:
                await self.sweep()
            except Exception:
                self.state.count("task_store_errors")

    async def _beat_forever(self) -> None:
        """Renew this driver's heartbeat, and take over the open tasks of drivers whose heartbeat lapsed."""
        while True:
            try:
                await self._call(self.backend.beat, self.instance, self.lease)
                await self.recover()
            except Exception:
                self.state.count("task_store_errors")
            await asyncio.sleep(max(0.05, self.lease / 3))

    async def recover(self) -> None:
        """Claim orphaned tasks: report unfinished ones failed (``TaskInterrupted``); deliver pending callbacks."""
        for record in await self._call(self.backend.orphans):
            dead = record["owner"]
            if dead == self.instance or record["id"] in self.tasks:
                continue  # its own (its heartbeat came late, e.g. a stalled loop): it is still at work on it
            if not await self._call(self.backend.claim, record, self.instance):
                continue  # another driver claimed it first
            task = Task.from_record(record)
            self.state.count("tasks_recovered")
            if task.finished is None:
                self._interrupt(task, f"the driver that ran it (instance {dead}) stopped or lost the task store")
            kept = await self._save(task)
            if kept is False:
                continue
            if kept is None:  # claimed, but its interrupted state not written: keep at it (it is ours now)
                self._keep_trying(task)
            if task.callback_url is not None and task.callback is not None and task.callback["status"] == "pending":
                self.tasks[task.id] = task
                self.spawn(self._deliver(task))

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
        """POST the final status to the task's callback URL, retrying with exponential backoff; the delivery
        state is written to the store after every attempt."""
        try:
            await self._deliver_attempts(task)
        finally:
            if task.id not in self._unsaved:  # else its final write, still being tried, drops it
                self.tasks.pop(task.id, None)

    async def _deliver_attempts(self, task: Task) -> None:
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
                    await self._save(task)
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
                if await self._save(task) is False:  # deleted meanwhile: stop calling back
                    return
                await asyncio.sleep(min(delay * 2**attempt, 30.0))  # backoff between attempts
        task.callback["status"] = "failed"
        self.state.count("callbacks_failed")
        await self._save(task)
