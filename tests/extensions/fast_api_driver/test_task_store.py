"""FastAPIDriver tasks in a task store: SQLite files, the Redis server and PostgreSQL on 127.0.0.1, real driver
processes SIGKILLed on the local runtime, two drivers on one store."""

from __future__ import annotations

import base64
import concurrent.futures
import http.server
import json
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rvai_sdk.exc import ParameterError
from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIClientError, FastAPIDriver, FastAPIDriverParameters
from rvai_sdk.runtime import Inference, PipelineDriverProcess, ProcessStatus, init
from rvai_sdk.types import Float, String
from tests._servers import RedisServer, own_redis  # noqa: F401 (own_redis: a fixture)
from tests.conftest import IN_CI, require_extra
from tests.extensions.fast_api_driver._task_pipelines import GATE_ENV, held_pipeline

pytestmark = pytest.mark.timeout(90)

STORES = ("sqlite", "redis", "postgresql")
REDIS_URL = os.environ.get("RVAI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("RVAI_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(a task store URL, a fresh namespace: the pipeline name); the namespace's keys/rows are removed afterwards."""
    name = f"tasks-{uuid.uuid4().hex[:10]}"
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'tasks.sqlite3'}", name
        return
    port = 6379 if kind == "redis" else 5432
    require_extra("redis" if kind == "redis" else "psycopg")
    if not _port_open(port):
        if IN_CI:
            pytest.fail(f"{kind} on 127.0.0.1:{port} is not available, but CI must provide it")
        pytest.skip(f"{kind} on 127.0.0.1:{port} is not available")
    url = REDIS_URL if kind == "redis" else PG_URL
    yield url, name
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"rvai:tasks:{name}:*"))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("DELETE FROM rvai_tasks WHERE ns = %s", (name,))
            conn.execute("DELETE FROM rvai_task_owners WHERE ns = %s", (name,))


def record(task_id: str, owner: str, finished: float | None = None, **extra: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "id": task_id,
        "status": "running" if finished is None else "done",
        "sid": "s",
        "received": now - 1000 if finished is not None else now,
        "started": None,
        "finished": finished,
        "result": None,
        "error": None,
        "callback": None,
        "callback_url": None,
        "owner": owner,
        **extra,
    }


# -- the stores themselves ------------------------------------------------------------------------


def test_a_store_keeps_records_until_their_ttl_and_hands_an_orphan_to_one_claimer(store: tuple[str, str]) -> None:
    from rvai_sdk.extensions.drivers.http.task_store import open_task_backend

    url, namespace = store
    one, two = open_task_backend(url, namespace), open_task_backend(url, namespace)  # two drivers' connections
    try:
        big = base64.b64encode(os.urandom(300_000)).decode()
        one.insert(record("a" * 32, owner="alive", result={"bytes": big}))
        one.insert(record("b" * 32, owner="dead"))
        one.insert(record("c" * 32, owner="alive", finished=time.time() - 100))
        one.beat("alive", 30.0)
        assert two.get("a" * 32, ttl=600)["result"] == {"bytes": big}  # type: ignore[index]
        assert two.get("' OR 1=1 --", ttl=600) is None and two.get("", ttl=600) is None

        # only the open record of the owner without a heartbeat is an orphan, and only one claimer gets it
        orphans = two.orphans()
        assert [r["id"] for r in orphans] == ["b" * 32]
        assert two.claim(dict(orphans[0]), "two") is True
        assert one.claim(dict(orphans[0]), "one") is False
        assert one.get("b" * 32, ttl=600)["owner"] == "two"  # type: ignore[index]
        # the late write of the driver it was taken from loses: the claimer's answer stands
        assert one.update(record("b" * 32, owner="dead", finished=time.time())) is False
        assert one.get("b" * 32, ttl=600)["status"] == "running"  # type: ignore[index]
        assert two.update(record("b" * 32, owner="two", finished=time.time(), status="failed")) is True
        assert one.get("b" * 32, ttl=600)["status"] == "failed"  # type: ignore[index]

        # TTL: a task finished 100 s ago is kept under task_ttl 600, gone under 50
        assert {r["id"] for r in two.kept_records(ttl=600)} == {"a" * 32, "b" * 32, "c" * 32}
        assert two.get("c" * 32, ttl=50) is None
        assert {r["id"] for r in one.kept_records(ttl=50)} == {"a" * 32, "b" * 32}
        assert one.sweep(ttl=50) == 1 and two.count() == 2

        # a deleted task is not brought back by its owner's late write
        assert one.delete("a" * 32) is True and one.delete("a" * 32) is False
        assert two.update(record("a" * 32, owner="alive", finished=time.time())) is False
        assert two.get("a" * 32, ttl=600) is None and two.count() == 1
    finally:
        one.close()
        two.close()


def test_an_unknown_or_unreachable_store_is_refused_naming_task_store() -> None:
    from rvai_sdk.extensions.drivers.http.task_store import open_task_backend

    with pytest.raises(ParameterError, match="task_store 'mysql://db/tasks' is not a store"):
        FastAPIDriverParameters(task_store=String("mysql://db/tasks"))
    with pytest.raises(ParameterError, match="task_lease must be > 0"):
        FastAPIDriverParameters(task_lease=Float(0.0))
    with pytest.raises(ParameterError, match="task_store 'redis://127.0.0.1:1/0' cannot be opened"):
        open_task_backend("redis://127.0.0.1:1/0", "x")
    with init("debug") as rt, rt.start_inference(Inference(pipeline=held_pipeline())) as proc:
        driver = proc.add_driver("webapi", FastAPIDriver, {"task_store": "redis://app:hunter2@127.0.0.1:1/0"})
        until(lambda: driver.status is ProcessStatus.FAILED, "the driver to fail on its store")
        assert driver.failure is not None and "task_store 'redis://app:***@127.0.0.1:1/0' cannot be opened" in driver.failure
        assert "hunter2" not in driver.failure


# -- drivers on a store ---------------------------------------------------------------------------


def test_two_drivers_on_one_store_answer_for_each_others_tasks_and_run_each_once(store: tuple[str, str]) -> None:
    url, namespace = store
    pipeline = held_pipeline(namespace)
    parameters = {"task_store": url}
    with init("debug") as rt, rt.start_inference(Inference(pipeline=pipeline)) as first, rt.start_inference(
        Inference(pipeline=pipeline)
    ) as second:
        a, b = first.add_driver("a", FastAPIDriver, parameters), second.add_driver("b", FastAPIDriver, parameters)
        with FastAPIClient(process=a) as client_a, FastAPIClient(process=b) as client_b:
            client_a.wait(timeout=30)
            client_b.wait(timeout=30)
            task_id = client_a.predict_task({"x": 3}, sid="s")
            finished = client_b.task(task_id, wait=20)  # b waits for a task that a runs
            assert finished["status"] == "done" and finished["result"]["count"] == 1
            assert client_b.task_result(task_id)["bytes"].shape == (3,)
            assert finished["received"] <= finished["started"] <= finished["finished"]
            assert [t["id"] for t in client_b.tasks()] == [task_id]
            # run once, by the driver that accepted it: its inference process counted one request for "s"
            assert int(first.predict({"x": 0}, sid="s").result()["count"]) == 2
            assert int(second.predict({"x": 0}, sid="s").result()["count"]) == 1
            assert a.stats()["tasks_done"] == 1 and "tasks" not in b.stats() and b.stats()["tasks_kept"] == 1

            # deleted through b: gone for a too
            client_b.delete_task(task_id)
            assert httpx.get(f"{client_a.base_url}/tasks/{task_id}").status_code == 404

            # TTL: a task finished is gone once task_ttl has passed (b lowers it to 0: it sweeps the store)
            kept = client_b.predict_task({"x": 1}, sid="t")
            assert client_a.task(kept, wait=20)["status"] == "done"
            b.set_parameters({"task_ttl": 0})
            assert httpx.get(f"{client_b.base_url}/tasks/{kept}").status_code == 404
            assert httpx.get(f"{client_a.base_url}/tasks/{kept}").status_code == 404
            assert b.stats()["tasks_expired"] == 1


def test_deployments_sharing_a_store_and_a_pipeline_name_see_only_their_own_namespaces_tasks(tmp_path: Path) -> None:
    """Staging and production on one store, one pipeline name: each reads, lists and deletes only its own
    tasks (``task_namespace``); replicas of one deployment (same namespace) answer for each other's."""
    url = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    pipeline = held_pipeline()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=pipeline)) as proc:
        staging = proc.add_driver("staging", FastAPIDriver, {"task_store": url, "task_namespace": "staging"})
        replica = proc.add_driver("staging-2", FastAPIDriver, {"task_store": url, "task_namespace": "staging"})
        prod = proc.add_driver("prod", FastAPIDriver, {"task_store": url, "task_namespace": "prod"})
        default = proc.add_driver("default", FastAPIDriver, {"task_store": url})  # the pipeline's name
        clients = [FastAPIClient(process=d) for d in (staging, replica, prod, default)]
        try:
            for client in clients:
                client.wait(timeout=30)
            on_staging, on_replica, on_prod, on_default = clients
            ours = on_staging.predict_task({"x": 1}, sid="s")
            theirs = on_prod.predict_task({"x": 2}, sid="p")
            assert on_replica.task(ours, wait=20)["status"] == "done"  # same namespace: answers for it
            assert on_prod.task(theirs, wait=20)["status"] == "done"
            for client, mine, other in ((on_staging, ours, theirs), (on_prod, theirs, ours)):
                assert [t["id"] for t in client.tasks()] == [mine]
                answer = httpx.get(f"{client.base_url}/tasks/{other}")
                assert answer.status_code == 404 and answer.json()["error"]["type"] == "TaskNotFound"
                assert httpx.delete(f"{client.base_url}/tasks/{other}").status_code == 404
            assert on_default.tasks() == []
            assert on_prod.task(theirs)["status"] == "done"  # staging's delete attempt left it alone
        finally:
            for client in clients:
                client.close()
    with pytest.raises(ParameterError, match="task_namespace") as info:
        FastAPIDriverParameters(task_namespace=String("prod tasks; DROP"))
    assert info.value.field == "task_namespace"


class _Hook(http.server.BaseHTTPRequestHandler):
    """Answers 503 until ``server.open`` is set, then 200; records the bodies it answered 200."""

    server: _HookServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = 200 if self.server.open.is_set() else 503
        if status == 200:
            self.server.bodies.append(payload)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HookServer(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.open = threading.Event()
        self.bodies: list[dict[str, Any]] = []


@pytest.fixture
def hook() -> Iterator[_HookServer]:
    server = _HookServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_a_task_outlives_its_driver_killed_with_sigkill_and_a_running_one_is_reported_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: _HookServer
) -> None:
    gate = tmp_path / "open"
    monkeypatch.setenv(GATE_ENV, str(gate))  # the inference process inherits it
    parameters: dict[str, Any] = {"task_store": f"sqlite:///{tmp_path / 'tasks.sqlite3'}", "task_lease": 1.0}
    parameters.update(callback_allow=["127.0.0.1"], callback_retries=3, callback_backoff=60.0)
    with init("local") as rt, rt.start_inference(Inference(pipeline=held_pipeline())) as proc:
        driver: PipelineDriverProcess = proc.add_driver("webapi", FastAPIDriver, parameters)
        with FastAPIClient(process=driver) as client:
            client.wait(timeout=30)
            hook_url = f"http://127.0.0.1:{hook.server_port}/done"
            done = client.predict_task({"x": 4}, sid="s", callback_url=hook_url)
            assert client.task(done, wait=20)["status"] == "done"
            # its callback got 503 once; the next attempt is 60 s away when the driver dies
            until(lambda: client.task(done)["callback"]["attempts"] == 1, "the first callback attempt")
            held = client.predict_task({"x": -1}, sid="s")
            until(lambda: client.task(held)["status"] == "running", "the held task to run")

        os.kill(driver.pid, signal.SIGKILL)
        hook.open.set()
        until(lambda: driver.status is ProcessStatus.FAILED, "the driver handle to see the driver die")
        proc.remove_driver("webapi")
        again = proc.add_driver("webapi", FastAPIDriver, parameters)
        with FastAPIClient(process=again) as client:
            client.wait(timeout=30)
            record = client.task(done)
            assert record["status"] == "done" and record["result"]["count"] == 1
            assert client.task_result(done)["bytes"].shape == (4,)
            # the running task is not re-run: once the dead driver's lease lapses it is reported failed
            until(lambda: client.task(held)["status"] != "running", "the killed driver's task to be taken over")
            interrupted = client.task(held)
            assert interrupted["status"] == "failed" and interrupted["error"]["type"] == "TaskInterrupted"
            assert "submit it again" in interrupted["error"]["message"] and interrupted["finished"]
            assert again.stats()["tasks_interrupted"] == 1
            # the callback the dead driver had not delivered is delivered by the driver that took the task over
            until(lambda: client.task(done)["callback"]["status"] == "delivered", "the callback to be delivered")
            assert [(b["id"], b["status"], b["result"]["count"]) for b in hook.bodies] == [(done, "done", 1)], (client.task(done), again.stats())
            gate.touch()  # let the inference process finish the abandoned request
            # a clean restart keeps them too
            proc.remove_driver("webapi")
            third = proc.add_driver("webapi", FastAPIDriver, parameters)
            with FastAPIClient(process=third) as client3:
                client3.wait(timeout=30)
                assert {t["id"]: t["status"] for t in client3.tasks()} == {done: "done", held: "failed"}


def test_a_hung_task_store_holds_up_only_the_task_routes_never_predict_health_or_stats(own_redis: RedisServer) -> None:
    """A Redis task store that stops answering (SIGSTOP: its connections stay open, nothing comes back):
    a task route that needs it waits on it (503 once the store's socket timeout passes), while /predict,
    the health routes and the driver's stats go on answering; once the store has been stuck for over 2 s,
    other task requests do not queue behind it but answer 503 at once, and the driver says it is stalled;
    once it answers again, so do the tasks."""
    own_redis.start()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=held_pipeline())) as proc:
        driver = proc.add_driver("webapi", FastAPIDriver, {"task_store": own_redis.url})
        with FastAPIClient(process=driver) as client, httpx.Client(base_url=client.base_url, timeout=60) as http:
            client.wait(timeout=30)
            done = client.predict_task({"x": 1}, sid="s")
            assert client.task(done, wait=20)["status"] == "done"
            assert driver.stats()["tasks_kept"] == 1
            own_redis.freeze()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                try:
                    stuck = pool.submit(http.get, f"/tasks/{done}")  # waits on the frozen store
                    for x in range(5):
                        assert int(client.predict({"x": x}, sid="p")["count"]) == x + 1
                        assert http.get("/health").status_code == 200 and http.get("/ready").status_code == 200
                    assert "rvai_http_requests_total" in http.get("/metrics").text
                    stats = driver.stats()  # the store's gauge is left out, not made up
                    assert "tasks_kept" not in stats and stats["tasks_active"] == 0
                    until(lambda: driver.stats()["task_store_stalled"] == 1, "the driver to see the store stalled")
                    with concurrent.futures.ThreadPoolExecutor(6) as many:  # none of them waits for the store
                        answers = list(many.map(lambda call: call(), [
                            lambda: http.get(f"/tasks/{done}"), lambda: http.get("/tasks"),
                            lambda: http.post("/tasks", json={"inputs": {"x": 1}}), lambda: http.delete(f"/tasks/{done}"),
                        ] * 3))
                    for answer in answers:
                        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
                        assert answer.json()["error"]["type"] == "TaskStoreUnavailable"
                        assert "has not answered for" in answer.json()["error"]["message"]
                    assert "rvai_http_task_store_stalled{" in http.get("/metrics").text
                    assert not stuck.done(), "the task read answered although the store is frozen"
                finally:
                    own_redis.thaw()
                answer = stuck.result(timeout=60)
            assert answer.status_code in (200, 503), answer.text
            if answer.status_code == 503:
                assert answer.json()["error"]["type"] == "TaskStoreUnavailable"
            until(lambda: driver.stats()["task_store_stalled"] == 0, "the driver to see the store answer again")
            again = client.predict_task({"x": 2}, sid="s")
            assert client.task(again, wait=20)["status"] == "done"
            assert client.task(done)["status"] == "done"


@pytest.mark.timeout(150)
def test_a_result_finished_while_the_store_is_locked_is_written_once_it_is_free_and_its_callback_is_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: _HookServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The final write of a task failed (the store busy past its timeout) and the result was dropped: the store
    said 'running' for ever, and a driver taking the task over would have reported it interrupted."""
    gate = tmp_path / "open"
    monkeypatch.setenv(GATE_ENV, str(gate))
    db = tmp_path / "tasks.sqlite3"
    hook.open.set()
    parameters = {"task_store": f"sqlite:///{db}", "callback_allow": ["127.0.0.1"]}
    with caplog.at_level("ERROR", logger="rvai_sdk.http.errors"), init("debug") as rt, rt.start_inference(
        Inference(pipeline=held_pipeline())
    ) as proc:
        driver = proc.add_driver("webapi", FastAPIDriver, parameters)
        with FastAPIClient(process=driver) as client:
            client.wait(timeout=30)
            held = client.predict_task({"x": -1}, sid="a")
            called = client.predict_task({"x": -1}, sid="b", callback_url=f"http://127.0.0.1:{hook.server_port}/done")
            until(lambda: all(client.task(t)["status"] == "running" for t in (held, called)), "the tasks to run")
            lock = sqlite3.connect(db, isolation_level=None)
            try:
                lock.execute("BEGIN IMMEDIATE")  # another program holds the store's write lock
                gate.touch()
                until(
                    lambda: any("request to /tasks failed (500)" in r.getMessage() for r in caplog.records),
                    "a task's final write to fail (SQLite waits 10 s)", timeout=60,
                )
                until(lambda: [b["id"] for b in hook.bodies] == [called], "the callback, while the store is locked", timeout=60)
            finally:
                lock.execute("ROLLBACK")
                lock.close()

            def done() -> bool:
                try:
                    return all(client.task(t)["status"] == "done" for t in (held, called))
                except FastAPIClientError as exc:  # 503 while the store's thread works off the calls queued behind the lock
                    assert "TaskStoreUnavailable" in str(exc)
                    return False

            until(done, "the results to reach the store", timeout=45)
    with sqlite3.connect(db) as conn:  # the store itself, not a driver's live copy
        (stored,) = conn.execute("SELECT COUNT(*) FROM rvai_tasks").fetchone()
    assert stored == 2
    with init("debug") as rt, rt.start_inference(Inference(pipeline=held_pipeline())) as proc:
        again = proc.add_driver("webapi", FastAPIDriver, parameters)
        with FastAPIClient(process=again) as client:
            client.wait(timeout=30)
            records = [client.task(t) for t in (held, called)]
    assert [(r["status"], r["result"]["count"]) for r in records] == [("done", 1), ("done", 1)], records
    assert records[1]["callback"]["status"] == "delivered"


def test_garbage_task_ids_are_404_and_a_result_over_the_limit_fails_its_task_with_413(tmp_path: Path) -> None:
    parameters = {"task_store": f"sqlite:///{tmp_path / 'tasks.sqlite3'}", "max_task_result_bytes": 2000}
    with init("debug") as rt, rt.start_inference(Inference(pipeline=held_pipeline())) as proc:
        driver = proc.add_driver("webapi", FastAPIDriver, parameters)
        with FastAPIClient(process=driver) as client, httpx.Client(base_url=client.base_url) as http:
            client.wait(timeout=30)
            for garbage in ("nope", "' OR 1=1 --", "0" * 31 + "g", "%00", "\u00e9t\u00e9", "a" * 4000, "A" * 32):
                answer = http.get(f"/tasks/{garbage}")
                assert answer.status_code == 404 and answer.json()["error"]["type"] == "TaskNotFound", garbage
                assert len(answer.json()["error"]["message"]) < 200
                assert http.delete(f"/tasks/{garbage}").status_code == 404
            small = client.predict_task({"x": 100}, sid="s")
            large = client.predict_task({"x": 5000}, sid="s")
            assert client.task(small, wait=20)["status"] == "done"
            failed = client.task(large, wait=20)
            assert failed["status"] == "failed" and failed["result"] is None
            assert failed["error"]["type"] == "TaskResultTooLarge" and "max_task_result_bytes (2000)" in failed["error"]["message"]

            # the store fails under the driver (its table dropped): 503, naming the store, never a 500
            with sqlite3.connect(tmp_path / "tasks.sqlite3") as db:
                db.execute("DROP TABLE rvai_tasks")
            for answer in (http.get(f"/tasks/{small}"), http.post("/tasks", json={"inputs": {"x": 1}}), http.get("/tasks")):
                assert answer.status_code == 503 and answer.json()["error"]["type"] == "TaskStoreUnavailable"
                assert "tasks.sqlite3" in answer.json()["error"]["message"] and answer.headers["retry-after"] == "1"


def test_by_default_tasks_are_kept_in_the_sqlite_file_under_rvai_sdk_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rvai_sdk.extensions.drivers.http.task_store import default_task_store

    monkeypatch.setenv("RVAI_SDK_HOME", str(tmp_path / "state"))
    assert default_task_store() == f"sqlite:///{tmp_path / 'state' / 'tasks.sqlite3'}"
    with init("debug") as rt, rt.start_inference(Inference(pipeline=held_pipeline())) as proc:
        driver = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=driver) as client:
            client.wait(timeout=30)
            task_id = client.predict_task({"x": 2}, sid="s")
            assert client.task(task_id, wait=20)["status"] == "done"
    with sqlite3.connect(tmp_path / "state" / "tasks.sqlite3") as db:
        assert db.execute("SELECT id FROM rvai_tasks WHERE ns = 'task-store-test'").fetchall() == [(task_id,)]
    monkeypatch.delenv("RVAI_SDK_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_task_store() == f"sqlite:///{tmp_path / 'xdg' / 'rvai-sdk' / 'tasks.sqlite3'}"
