"""FastAPIDriver and FastAPIClient against a real uvicorn server on loopback, on every runtime."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from rvai_sdk.exc import DriverError, ParameterError, RvaiError
from rvai_sdk.extensions.drivers.fast_api_driver import (
    FastAPIClient,
    FastAPIClientError,
    FastAPIDriver,
    FastAPIDriverParameters,
)
from rvai_sdk.pipeline import Pipeline
from rvai_sdk.runtime import Inference, InferenceProcess, PipelineDriverProcess, ProcessStatus, Runtime
from rvai_sdk.types import Image, Integer
from tests.extensions.fast_api_driver._pipelines import gated_pipeline, http_pipeline

pytestmark = pytest.mark.timeout(60)

PICTURE = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


def image_json(array: np.ndarray = PICTURE) -> str:
    return str(Image(array).to_json())


def body(x: Any = 1, sid: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"inputs": {"x": x, "image": image_json()}, "sid": sid, **extra}


@contextlib.contextmanager
def serving(
    runtime: Runtime, pipeline: Pipeline, parameters: dict[str, Any] | None = None, **inference: Any
) -> Iterator[tuple[InferenceProcess, PipelineDriverProcess, str]]:
    """An inference process with a FastAPIDriver, ready; yields (process, driver handle, base URL)."""
    with runtime.start_inference(Inference(pipeline=pipeline, **inference)) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver, parameters)
        record = handle.get_service("http")
        url = f"http://{record['taggedAddresses']['lan']['address']}:{record['port']}"
        key = (parameters or {}).get("api_key")
        with FastAPIClient(process=handle, api_key=key) as client:
            client.wait(timeout=30)
        yield proc, handle, url


def error_of(response: httpx.Response) -> dict[str, Any]:
    payload = response.json()
    assert set(payload) == {"error"}, payload
    error: dict[str, Any] = payload["error"]
    return error


# -- predict --------------------------------------------------------------------------------------


def test_predict_routes_answer_typed_values_keep_sids_apart_and_map_errors_to_statuses(runtime: Runtime) -> None:
    with serving(runtime, http_pipeline()) as (proc, handle, url), httpx.Client(base_url=url) as http:
        assert http.get("/health").json() == {"status": "ok", "instance": handle.get_service("http")["instance"]}
        assert http.get("/ready").json() == {"status": "ready", "instance": handle.get_service("http")["instance"]}

        described = http.get("/pipeline").json()
        assert described["name"] == "http-test"
        assert set(described["cells"]) == {"count", "check", "info"}
        assert described["inputs"]["x"]["type"] == "Integer"
        assert described["inputs"]["x"]["title"] == "X" and described["inputs"]["x"]["description"] == "a number"
        assert described["inputs"]["image"]["schema"]["contentEncoding"] == "base64"
        assert described["outputs"]["flipped"]["type"] == "Image"

        # typed values back through the client; each sid has its own counter
        with FastAPIClient(process=handle) as client:
            first = client.predict({"x": Integer(5), "image": Image(PICTURE)}, sid="a")
            assert first["count"] == 1 and isinstance(first["count"], Integer)
            assert first["checked"] == 5 and first["width"] == 3 and first["height"] == 2
            assert isinstance(first["flipped"], Image)
            assert np.array_equal(first["flipped"], PICTURE[:, ::-1])
            assert client.predict({"x": 1, "image": PICTURE}, sid="a")["count"] == 2
            assert client.predict({"x": 1, "image": PICTURE}, sid="b")["count"] == 1
            assert client.predict({"x": 1, "image": PICTURE})["count"] == 1  # one-off requests keep no state

            # multipart upload of the image file (PNG bytes), other inputs as JSON text
            uploaded = client.predict_files({"x": 3}, {"image": Image(PICTURE).to_png()}, sid="a")
            assert uploaded["count"] == 3 and uploaded["width"] == 3
            assert np.array_equal(uploaded["flipped"], PICTURE[:, ::-1])

        # the sid may come in a header instead of the body
        answered = http.post("/predict", json=body(1), headers={"X-State-Id": "a"})
        assert answered.status_code == 200 and answered.json()["outputs"]["count"] == 4
        assert answered.json()["sid"] == "a"
        assert answered.json()["outputs"]["flipped"] == image_json(PICTURE[:, ::-1])

        # 422s name the field path
        cases = [
            (b"{not json", None),
            (b"[1, 2]", None),
            (json.dumps({"inputs": {"x": "seven", "image": image_json()}}).encode(), "inputs.x"),
            (json.dumps({"inputs": {"x": 1}}).encode(), "inputs.image"),
            (json.dumps({"inputs": {"x": 1, "image": image_json(), "z": 2}}).encode(), "inputs.z"),
            (json.dumps({"inputs": {"x": 1, "image": "not base64!"}}).encode(), "inputs.image"),
            (json.dumps({"inputs": {"x": 1, "image": image_json()}, "sid": 7}).encode(), "sid"),
            (json.dumps({"inputs": {"x": 1, "image": image_json()}, "extra": 1}).encode(), "extra"),
            (json.dumps({"sid": "a"}).encode(), "inputs"),
        ]
        for content, field in cases:
            refused = http.post("/predict", content=content, headers={"content-type": "application/json"})
            assert refused.status_code == 422, (content, refused.text)
            error = error_of(refused)
            assert error["type"] == "InputValidationError" and error["field"] == field, (content, error)
        assert "seven" in error_of(
            http.post("/predict", json={"inputs": {"x": "seven", "image": image_json()}})
        )["message"]
        not_an_image = http.post("/predict", data={"x": "1"}, files={"image": ("a.png", b"not a png", "image/png")})
        assert not_an_image.status_code == 422 and error_of(not_an_image)["field"] == "inputs.image"

        # a cell failure is a 500 naming the cell, without a traceback unless asked for
        # (sid "f", not "a": "count" runs beside "check", so a request that "check" fails still counts;
        # see docs/concepts/execution.md, "Failures")
        failed = http.post("/predict", json=body(-1, sid="f"))
        assert failed.status_code == 500
        error = error_of(failed)
        assert error["cell"] == "check" and error["type"] == "ValueError" and "negative input -1" in error["message"]
        assert "traceback" not in error and "Traceback" not in failed.text
        handle.set_parameters({"include_traceback": True})
        assert "Traceback" in error_of(http.post("/predict", json=body(-1)))["traceback"]
        # another sid's failure did not disturb sid a, and another sid's state never shows
        assert http.post("/predict", json=body(1, sid="a")).json()["outputs"]["count"] == 5
        assert http.post("/predict", json=body(1, sid="c")).json()["outputs"]["count"] == 1

        # batch: results in order, items fail alone
        batch = http.post(
            "/predict/batch",
            json={
                "requests": [
                    body(1, sid="d"),
                    body(-1, sid="g"),  # another sid: see the failure above
                    {"inputs": {"x": "x", "image": image_json()}, "sid": "d"},
                    body(2, sid="d"),
                ]
            },
        )
        assert batch.status_code == 200
        results = batch.json()["results"]
        assert [r["outputs"]["count"] if r["outputs"] else None for r in results] == [1, None, None, 2]
        assert results[1]["error"]["cell"] == "check"
        assert results[2]["error"]["field"] == "requests[2].inputs.x"
        with FastAPIClient(process=handle) as client:
            typed = client.predict_batch([({"x": 1, "image": PICTURE}, "e"), {"x": -5, "image": PICTURE}])
            assert isinstance(typed[0], dict) and typed[0]["count"] == 1
            assert isinstance(typed[1], FastAPIClientError) and typed[1].cell == "check"

        # 413 beyond max_body_bytes, at once and when set at runtime; 404 elsewhere
        handle.set_parameters({"max_body_bytes": 64})
        too_big = http.post("/predict", json=body(1))
        assert too_big.status_code == 413 and error_of(too_big)["type"] == "PayloadTooLarge"
        assert http.post("/predict/batch", json={"requests": [body(1)]}).status_code == 413
        handle.set_parameters({"max_body_bytes": 1 << 20})
        assert http.post("/predict", json=body(1)).status_code == 200
        missing = http.get("/no/such/route")
        assert missing.status_code == 404 and error_of(missing)["type"] == "NotFound"

        stats = handle.stats()
        assert stats["http_422"] >= len(cases) and stats["http_500"] >= 2 and stats["http_413"] == 2
        assert proc.status is ProcessStatus.RUNNING


def test_a_damaged_checkpoint_is_a_500_naming_the_sid_not_a_503_to_retry_and_a_broken_sid_is_a_422(tmp_path: Path) -> None:
    from rvai_sdk.execution.state_store import SqliteStateStore
    from rvai_sdk.runtime import init
    from tests.conftest import damage_checkpoint

    db = tmp_path / "state.db"
    damage_checkpoint(db, "cam-1", b"not a pickle")
    with init("debug") as rt, serving(rt, http_pipeline(), state_store=SqliteStateStore(str(db))) as (_, _, url), httpx.Client(
        base_url=url
    ) as http:
        damaged = http.post("/predict", json=body(1, sid="cam-1"))
        assert damaged.status_code == 500 and "retry-after" not in damaged.headers
        error = error_of(damaged)
        assert error["type"] == "StateRestoreError" and error["sid"] == "cam-1" and "drop_state('cam-1')" in error["message"]
        escaped = json.dumps(body(1, sid="cam-\udc80"))  # JSON may carry a lone surrogate (escaped); no store can keep it
        broken = http.post("/predict", content=escaped, headers={"content-type": "application/json"})
        assert broken.status_code == 422 and error_of(broken)["field"] == "sid", broken.text
        assert http.post("/predict", json=body(1, sid="cam-2")).json()["outputs"]["count"] == 1


# -- tasks ------------------------------------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first callback POST, 200 to the next ones, and records every body."""

    server: _CallbackServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(payload)
            status = 503 if len(self.server.bodies) == 1 else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if status == 200:
            self.server.delivered.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


_Server = TypeVar("_Server", bound=http.server.HTTPServer)


class _CallbackServer(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receiver)
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []
        self.delivered = threading.Event()


@contextlib.contextmanager
def serve_in_thread(server: _Server) -> Iterator[_Server]:
    """Run an ``http.server`` server on a thread; shut it down on exit."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def callback_server() -> contextlib.AbstractContextManager[_CallbackServer]:
    return serve_in_thread(_CallbackServer())


def test_tasks_run_in_the_background_call_back_with_retries_expire_and_are_limited(runtime: Runtime, tmp_path: Path) -> None:
    parameters = {"callback_backoff": 0.01, "callback_retries": 3, "callback_allow": ["127.0.0.1"]}
    parameters["task_store"] = f"sqlite:///{tmp_path / 'tasks.sqlite3'}"  # this test's own store: it lists every task
    with serving(runtime, http_pipeline(), parameters) as (proc, handle, url), httpx.Client(
        base_url=url
    ) as http, callback_server() as receiver, FastAPIClient(process=handle) as client:
        created = http.post("/tasks", json=body(2, sid="t"))
        assert created.status_code == 202
        task = created.json()
        assert created.headers["location"] == f"/tasks/{task['id']}"
        assert task["status"] in ("pending", "running", "done") and task["received"]

        finished = http.get(f"/tasks/{task['id']}", params={"wait": 20}).json()
        assert finished["status"] == "done" and finished["error"] is None
        assert finished["result"]["count"] == 1 and finished["result"]["checked"] == 2
        assert finished["received"] <= finished["started"] <= finished["finished"] < finished["expires"]
        assert client.task_result(task["id"], timeout=20)["width"] == 3

        failing = client.predict_task({"x": -3, "image": PICTURE}, sid="u")  # not "t": see the failure above
        with pytest.raises(FastAPIClientError, match="negative input -3") as failure:
            client.task_result(failing, timeout=20)
        assert failure.value.cell == "check"
        assert client.task(failing)["error"]["cell"] == "check"

        # the callback gets the final status; the first POST is refused (503), the retry succeeds
        called = client.predict_task({"x": 4, "image": PICTURE}, sid="t", callback_url=f"http://127.0.0.1:{receiver.server_port}/done")
        assert receiver.delivered.wait(20)
        with receiver.lock:
            bodies = list(receiver.bodies)
        assert len(bodies) == 2 and bodies[0] == bodies[1]
        assert bodies[1]["id"] == called and bodies[1]["status"] == "done" and bodies[1]["result"]["count"] == 2
        callback = client.task(called, wait=20)["callback"]
        deadline = time.monotonic() + 20
        while callback["status"] == "pending" and time.monotonic() < deadline:  # the 200 was sent before the record
            callback = client.task(called)["callback"]
        assert callback["status"] == "delivered" and callback["attempts"] == 2

        refused = http.post("/tasks", json=body(1, callback_url="ftp://nowhere"))
        assert refused.status_code == 422 and error_of(refused)["field"] == "callback_url"
        assert http.post("/tasks", json=body("x")).status_code == 422

        assert {t["id"] for t in client.tasks()} == {task["id"], failing, called}
        assert http.delete(f"/tasks/{failing}").status_code == 204
        assert http.get(f"/tasks/{failing}").status_code == 404
        assert http.delete(f"/tasks/{failing}").status_code == 404
        unknown = http.get("/tasks/nope")
        assert unknown.status_code == 404 and error_of(unknown)["type"] == "TaskNotFound"

        # too many pending tasks: 429 (no task may be pending when the limit is 0)
        handle.set_parameters({"max_pending_tasks": 0})
        limited = http.post("/tasks", json=body(1))
        assert limited.status_code == 429 and error_of(limited)["type"] == "TooManyTasks"
        handle.set_parameters({"max_pending_tasks": 10})
        accepted = http.post("/tasks", json=body(1))
        assert accepted.status_code == 202
        # finished tasks are capped too (they used to pile up until task_ttl, results and all)
        kept = len(client.tasks())
        handle.set_parameters({"max_kept_tasks": kept})
        full = http.post("/tasks", json=body(1))
        assert full.status_code == 429 and "max_kept_tasks" in error_of(full)["message"], full.text
        assert http.delete(f"/tasks/{task['id']}").status_code == 204  # what the error says to do
        again = http.post("/tasks", json=body(1))
        assert again.status_code == 202
        handle.set_parameters({"max_kept_tasks": 10_000})
        for posted in (accepted, again):  # finished before task_ttl goes to 0 below, so they expire with `called`
            assert client.task(posted.json()["id"], wait=20)["status"] == "done"

        # finished tasks expire after task_ttl
        handle.set_parameters({"task_ttl": 0})
        assert http.get(f"/tasks/{called}").status_code == 404
        with pytest.raises(FastAPIClientError) as gone:
            client.task_result(called, timeout=5)
        assert gone.value.status_code == 404
        assert handle.stats()["tasks_expired"] >= 2


# -- parameters and auth --------------------------------------------------------------------------------


def test_api_key_host_and_limits_change_while_the_driver_runs(runtime: Runtime) -> None:
    with serving(runtime, http_pipeline(), {"api_key": "k1"}) as (proc, handle, url), httpx.Client(base_url=url) as http:
        assert http.get("/health").status_code == 200  # never needs the key
        for method, path in (("GET", "/ready"), ("GET", "/pipeline"), ("POST", "/predict"), ("GET", "/openapi.json"), ("GET", "/")):
            refused = http.request(method, path, json=body(1))
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer" and error_of(refused)["type"] == "Unauthorized"
        wrong = http.post("/predict", json=body(1), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong" in error_of(wrong)["message"]
        ok = {"Authorization": "Bearer k1"}
        assert http.post("/predict", json=body(1), headers=ok).status_code == 200
        assert "bearer" in http.get("/openapi.json", headers=ok).json()["components"]["securitySchemes"]
        with FastAPIClient(process=handle) as anonymous, pytest.raises(FastAPIClientError) as denied:
            anonymous.predict({"x": 1, "image": PICTURE})
        assert denied.value.status_code == 401 and isinstance(denied.value, DriverError)

        parameters = handle.get_parameters()
        assert isinstance(parameters, FastAPIDriverParameters) and parameters.api_key == "k1"
        handle.set_parameters({"api_key": "k2"})
        assert http.post("/predict", json=body(1), headers=ok).status_code == 401
        assert http.post("/predict", json=body(1), headers={"Authorization": "Bearer k2"}).status_code == 200
        handle.set_parameters({"api_key": None})
        assert http.post("/predict", json=body(1)).status_code == 200
        assert "securitySchemes" not in http.get("/openapi.json").json()["components"]

        before = handle.get_parameters()
        with pytest.raises(ParameterError, match="task_ttl"):
            handle.set_parameters({"task_ttl": -1})
        with pytest.raises(ParameterError, match="nope"):
            handle.set_parameters({"nope": 1})
        assert handle.get_parameters() == before  # a rejected change changes nothing

        # a new host re-binds the same port
        port = handle.get_service("http")["port"]
        handle.set_parameters({"host": "127.0.0.2"})
        with FastAPIClient(host="127.0.0.2", port=port) as moved:
            moved.wait(timeout=20)
            assert moved.predict({"x": 1, "image": PICTURE})["checked"] == 1
        with pytest.raises(httpx.ConnectError):
            http.get("/health")

        # a host it cannot listen on: back on the previous one, and the parameter with it
        handle.set_parameters({"host": "192.0.2.1"})  # TEST-NET-1, never an address of this machine
        deadline = time.monotonic() + 20
        while handle.get_parameters().host != "127.0.0.2" and time.monotonic() < deadline:
            handle.stats()  # bounded wait for the refused re-bind to revert
        assert handle.get_parameters().host == "127.0.0.2"
        with FastAPIClient(host="127.0.0.2", port=port) as moved:
            moved.wait(timeout=20)
        stats = handle.stats()
        assert stats["host_changes_refused"] == 1 and "192.0.2.1" in stats["last_error"]


# -- lifecycle --------------------------------------------------------------------------------------


def test_client_fails_cleanly_against_a_removed_driver_and_works_against_a_readded_one(runtime: Runtime) -> None:
    with serving(runtime, http_pipeline()) as (proc, handle, url):
        record = handle.get_service("http")
        assert record["taggedAddresses"]["lan"]["address"] == "127.0.0.1"
        with FastAPIClient(host="127.0.0.1", port=record["port"]) as client:
            assert client.predict({"x": 1, "image": PICTURE}, sid="s")["count"] == 1
            proc.remove_driver("webapi")
            with pytest.raises(FastAPIClientError, match="failed: ConnectError") as refused:
                client.predict({"x": 1, "image": PICTURE}, sid="s")
            assert refused.value.status_code is None and isinstance(refused.value, RvaiError)
            assert not client.health()
            with pytest.raises(FastAPIClientError, match="not ready within"):
                client.wait(timeout=0.2)

        again = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=again) as client:
            client.wait(timeout=30)
            assert client.predict({"x": 1, "image": PICTURE}, sid="s")["count"] == 2  # the process kept the state
            assert client.pipeline()["name"] == "http-test"
        with pytest.raises(FastAPIClientError, match="process= .* or both host= and port="):
            FastAPIClient(host="127.0.0.1")


def test_unreachable_inference_process_answers_503_and_the_driver_recovers(runtime: Runtime, tmp_path: Path) -> None:
    gate = tmp_path / "open"
    gate.touch()
    with serving(runtime, gated_pipeline(), models={"gated": str(tmp_path)}) as (proc, handle, url), httpx.Client(
        base_url=url
    ) as http, FastAPIClient(process=handle) as client:
        assert client.predict({"x": 1}) == {"y": 2}
        gate.unlink()  # the restarted process will wait in load_model until the gate is back
        restarting = threading.Thread(target=proc.restart, daemon=True)
        restarting.start()
        try:
            deadline = time.monotonic() + 30
            down = http.post("/predict", json={"inputs": {"x": 1}})
            while down.status_code == 200 and time.monotonic() < deadline:
                down = http.post("/predict", json={"inputs": {"x": 1}})
            assert down.status_code == 503 and down.headers["retry-after"] == "1"
            assert error_of(down)["type"] in ("ProcessError", "ProcessStateError")
            assert "GET /ready" in error_of(down)["message"]
            with pytest.raises(FastAPIClientError) as unavailable:
                client.predict({"x": 1})
            assert unavailable.value.status_code == 503
            ready = http.get("/ready")
            if getattr(runtime, "name", "") != "ray":
                # on ray the driver's replica routes stay published while the process restarts (reported)
                assert ready.status_code == 503 and error_of(ready)["type"] == "NotReady"
            assert http.get("/health").status_code == 200  # the server itself is fine
        finally:
            gate.touch()
            restarting.join(60)
        assert not restarting.is_alive() and proc.status is ProcessStatus.RUNNING
        client.wait(timeout=30)
        deadline = time.monotonic() + 30
        while True:  # the driver may see the new process a moment after /ready does (bounded)
            try:
                assert client.predict({"x": 2}) == {"y": 3}
                break
            except FastAPIClientError as exc:
                if exc.status_code != 503 or time.monotonic() > deadline:
                    raise
        assert handle.status is ProcessStatus.RUNNING


def test_a_sid_with_a_line_break_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from rvai_sdk.runtime import init

    forged = "cam-1\n2026-11-29 INFO rvai_sdk.http.access: POST /admin 200"
    with caplog.at_level("INFO", logger="rvai_sdk.http"), init("debug") as rt, serving(rt, http_pipeline()) as (_, _, url):
        with httpx.Client(base_url=url) as http:
            assert http.post("/predict", json=body(1, sid=forged)).status_code == 200
            assert http.post("/predict", json=body(-1, sid=forged)).status_code == 500  # the error log line too
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("rvai_sdk.http")]
    assert len([line for line in lines if "sid='cam-1\\n2026" in line]) == 3, lines  # access twice, error once
    assert not any("\n" in line for line in lines), "each request is one line"
