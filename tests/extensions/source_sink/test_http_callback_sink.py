"""HttpCallbackSink against a real HTTP receiver on 127.0.0.1 that is down, then failing, then up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rvai_sdk.exc import SinkError
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sinks.http_callback_sink import HttpCallbackSink
from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.runtime import Inference, Runtime
from rvai_sdk.types import FloatRange
from tests.conftest import FailNegative, require_extra, single
from tests._servers import free_port
from tests.extensions.source_sink.support import wait_until

pytestmark = pytest.mark.timeout(90)


class Receiver:
    """An HTTP server collecting POSTed JSON; answers 503 to the first ``refuse`` requests."""

    def __init__(self, port: int, refuse: int = 0, reject: int | None = None) -> None:
        """``reject``: answer 422 to every POST holding the record with this index (a record the receiver refuses)."""
        self.posts: list[tuple[str, Any]] = []
        self.refused = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                held = body if isinstance(body, list) else [body]
                with receiver.lock:
                    if reject is not None and any(r["index"] == reject for r in held):
                        code = 422
                    elif receiver.refused < refuse:
                        receiver.refused += 1
                        code = 503
                    else:
                        receiver.posts.append((self.path, body))
                        code = 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            out: list[dict[str, Any]] = []
            for _, body in self.posts:
                out.extend(body if isinstance(body, list) else [body])
            return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(autouse=True)
def _httpx() -> None:
    require_extra("httpx")


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


def counting(count: int) -> DummySource:
    return DummySource(params=DummySource.parameters(rate=FloatRange(0), count=count, seed=5, signed=True))


@pytest.mark.parametrize("batch", [False, True], ids=["per-record", "batched"])
def test_every_record_arrives_once_after_the_receiver_was_down(runtime: Runtime, port: int, batch: bool) -> None:
    sink = HttpCallbackSink(
        f"http://127.0.0.1:{port}/cb/{{source}}",
        params={"batch": batch, "batch_size": 4, "buffer": 8, "retry_initial": 0.02, "retry_max": 0.2, "timeout": 2.0},
    )
    receiver: Receiver | None = None
    with runtime.start_inference(Inference(pipeline=single(FailNegative))) as proc:
        handle = proc.add_driver("cb", SourceSinkDriver, sources={"cam": counting(30)}, sinks={"http": sink})
        try:
            stats = wait_until(
                lambda: (s := handle.stats())["sinks"]["http"]["write_failures"] >= 2 and s, what="the receiver to be found down"
            )
            assert "ConnectError" in stats["sinks"]["http"]["last_error"]
            receiver = Receiver(port, refuse=3)  # up, but answering 503 three times first
            wait_until(lambda: len(receiver.records()) >= 30, what="30 records", explain=handle.stats)  # type: ignore[union-attr]
            final = handle.stats()
        finally:
            if receiver is not None:
                receiver.close()
    records = receiver.records()
    assert sorted(r["index"] for r in records) == list(range(30)), "every record exactly once"
    assert [r["index"] for r in records] == list(range(30)), "in source order"
    assert {p for p, _ in receiver.posts} == {"/cb/cam"}
    statuses = {r["status"] for r in records}
    assert statuses == {"complete", "failed"} and all("negative input" in r["error"] for r in records if r["status"] == "failed")
    assert final["sinks"]["http"]["lost"] == 0 and receiver.refused == 3


@pytest.mark.parametrize("batch", [False, True], ids=["per-record", "batched"])
def test_a_record_the_receiver_refuses_is_dead_lettered_and_the_rest_is_delivered(
    port: int, batch: bool, tmp_path: Any
) -> None:
    from rvai_sdk.runtime import init
    from tests.extensions.source_sink.support import read_jsonl

    letters = str(tmp_path / "dead.jsonl")
    sink = HttpCallbackSink(
        f"http://127.0.0.1:{port}/cb/{{source}}",
        params={"batch": batch, "batch_size": 8, "retry_initial": 0.02, "retry_max": 0.2, "dead_letter": letters},
    )
    receiver = Receiver(port, reject=5)
    try:
        with init("local") as rt, rt.start_inference(Inference(pipeline=single(FailNegative))) as proc:
            handle = proc.add_driver("cb", SourceSinkDriver, sources={"cam": counting(20)}, sinks={"http": sink})
            final = SourceSinkDriver.wait(handle, timeout=60)
    finally:
        receiver.close()
    assert sorted(r["index"] for r in receiver.records()) == [i for i in range(20) if i != 5]
    dead = read_jsonl(letters)
    assert [d["index"] for d in dead] == [5] and "422" in dead[0]["error"] and dead[0]["sink"] == "http"
    assert final["sources"]["cam"]["dead_lettered"] == 1 and final["sources"]["cam"]["written"] == 19
    assert final["sinks"]["http"]["lost"] == 0


def test_url_template_is_checked_when_made() -> None:
    with pytest.raises(SinkError, match="may use only"):
        HttpCallbackSink("http://x/{camera}")
