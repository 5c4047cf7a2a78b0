"""HttpCallbackSink against hostile receivers and records on 127.0.0.1: a record with no strict JSON form, a
receiver answering a byte at a time, secrets in the URL, redirects, refused credentials, and a source that
numbers from 0 again."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rvai_sdk.drivers import Record, SinkContext
from rvai_sdk.exc import SinkError
from rvai_sdk.extensions.drivers._stream_outlet import Outlet
from rvai_sdk.extensions.sinks.http_callback_sink import HttpCallbackSink
from tests.conftest import require_extra
from tests._servers import free_port
from tests.extensions.source_sink.support import wait_until

pytestmark = pytest.mark.timeout(60)


class Polygon:
    """A custom value type as docs/guides/custom_types.md writes one: ``to_json`` is ``points.tolist()``.

    A vertex that is NaN (an unset corner) makes a JSON form with a float NaN in it.
    """

    def __init__(self, points: list[list[float]]) -> None:
        self.points = points

    def to_json(self) -> list[list[float]]:
        return self.points


def rec(index: int, outputs: dict[str, Any] | None = None) -> Record:
    return Record(source="cam", sid="cam", index=index, timestamp=0.0, outputs=outputs or {})


class Receiver:
    """Collects POSTed JSON; answers ``code`` (with ``location``) to paths other than ``/ok``."""

    def __init__(self, port: int, code: int = 200, location: str | None = None) -> None:
        self.bodies: list[tuple[str, Any]] = []
        self.answered: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = 200 if self.path.startswith("/ok") else code
                with receiver.lock:
                    receiver.answered.append(answer)
                    if answer == 200:
                        receiver.bodies.append((self.path, body))
                self.send_response(answer)
                if location and answer != 200:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def indexes(self) -> list[int]:
        with self.lock:
            return [b["index"] for _, b in self.bodies]

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


def outlet_for(sink: HttpCallbackSink) -> tuple[Outlet, threading.Event, list[tuple[int, bool]]]:
    abort = threading.Event()
    settled: list[tuple[int, bool]] = []
    outlet = Outlet("http", sink, SinkContext(ref="http", outputs={}), abort,
                    settle=lambda records, ok: settled.extend((r.index, ok) for r in records))
    outlet.start()
    return outlet, abort, settled


def stop(outlet: Outlet, abort: threading.Event) -> None:
    abort.set()
    outlet.close()
    outlet.thread.join(10)


# -- a record with no strict JSON form (a NaN from a custom type) is dead-lettered, not retried for ever


def test_a_record_with_no_json_form_is_dead_lettered_not_retried_forever(port: int, tmp_path: Any) -> None:
    receiver = Receiver(port)
    sink = HttpCallbackSink(f"http://127.0.0.1:{port}/ok/{{source}}",
                            params={"retry_initial": 0.01, "retry_max": 0.05, "dead_letter": str(tmp_path / "dead.jsonl")})
    outlet, abort, _ = outlet_for(sink)
    try:
        outlet.put(rec(0))
        outlet.put(rec(1, {"zone": Polygon([[float("nan"), 0.0], [1.0, 1.0], [2.0, 0.0]])}))
        outlet.put(rec(2))
        wait_until(lambda: outlet.stats()["dead_lettered"] == 1 and receiver.indexes() == [0, 2], timeout=10,
                   what="record 1 dead-lettered (docs: 'a record with no JSON form' is a RecordError), 0 and 2 delivered",
                   explain=lambda: (outlet.stats(), receiver.indexes()))
    finally:
        stop(outlet, abort)
        receiver.close()


# -- a receiver answering a byte at a time cannot hold the sink past its timeout (httpx's is per read)


def test_a_receiver_trickling_its_answer_times_out_within_the_sinks_timeout(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port))
    done = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):  # one byte each 0.2 s: each read well within the 0.5 s timeout
                if done.wait(0.2):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    sink = HttpCallbackSink(f"http://127.0.0.1:{port}/cb", params={"timeout": 0.5})
    sink.open(SinkContext(ref="http", outputs={}))
    outcome: list[BaseException | None] = []
    finished = threading.Event()

    def write() -> None:
        try:
            sink.write([rec(0)])
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)
        finished.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        assert finished.wait(30.0), "write() still blocked long past its 0.5 s timeout: a slow receiver wedges the sink"
        assert isinstance(outcome[0], SinkError)
        assert "no complete answer within 0.5 s" in str(outcome[0])
    finally:
        done.set()
        writer.join(10)
        sink.close()
        listener.close()


# -- a password or a token in the callback URL is never shown in errors, stats or logs


def test_a_password_in_the_url_is_not_shown_in_errors(port: int, caplog: pytest.LogCaptureFixture) -> None:
    sink = HttpCallbackSink(
        f"http://ann:s3cret@127.0.0.1:{port}/cb/{{source}}?token=t0ken", params={"retry_initial": 0.01, "retry_max": 0.05}
    )
    assert "s3cret" not in repr(sink)  # the convention: "URLs always hide their password"
    outlet, abort, _ = outlet_for(sink)  # nothing listens on the port: the write fails
    try:
        outlet.put(rec(0))
        stats = wait_until(lambda: (s := outlet.stats())["write_failures"] >= 1 and s, timeout=10, what="a failed write")
        assert "s3cret" not in str(stats["last_error"]), stats["last_error"]
        assert "t0ken" not in str(stats["last_error"]), stats["last_error"]
        assert f"http://ann:***@127.0.0.1:{port}/cb/cam?token=***" in str(stats["last_error"])
        assert "s3cret" not in caplog.text and "t0ken" not in caplog.text
    finally:
        stop(outlet, abort)


# -- redirects: 307/308 keep the POST and are followed; another one is named and retried, never dead-lettered


def test_a_permanent_redirect_keeping_the_post_is_followed(port: int) -> None:
    receiver = Receiver(port, code=308, location="/ok/moved")
    sink = HttpCallbackSink(f"http://127.0.0.1:{port}/old/{{source}}", params={"retry_initial": 0.01, "retry_max": 0.05})
    outlet, abort, _ = outlet_for(sink)
    try:
        outlet.put(rec(0))
        wait_until(lambda: outlet.stats()["written"] == 1, timeout=10, what="record 0 written", explain=outlet.stats)
        assert receiver.bodies == [("/ok/moved", receiver.bodies[0][1])] and receiver.indexes() == [0]
        assert outlet.stats()["write_failures"] == 0
    finally:
        stop(outlet, abort)
        receiver.close()


@pytest.mark.parametrize(
    ("code", "expected"),
    [(301, "pointing to http://127.0.0.1:{port}/ok/moved"), (401, "check the credentials"), (403, "check the credentials")],
)
def test_a_redirect_turning_the_post_into_a_get_or_refused_credentials_hold_the_records_back(
    port: int, tmp_path: Any, code: int, expected: str
) -> None:
    # Not the records' fault: dead-lettering them would lose every result until the URL or token is fixed.
    receiver = Receiver(port, code=code, location=f"http://127.0.0.1:{port}/ok/moved")
    sink = HttpCallbackSink(f"http://127.0.0.1:{port}/old/{{source}}",
                            params={"retry_initial": 0.01, "retry_max": 0.05, "dead_letter": str(tmp_path / "dead.jsonl")})
    outlet, abort, _ = outlet_for(sink)
    try:
        outlet.put(rec(0))
        stats = wait_until(lambda: (s := outlet.stats())["write_failures"] >= 2 and s, timeout=10, what="failed writes")
        assert expected.format(port=port) in str(stats["last_error"]), stats["last_error"]
        assert stats["dead_lettered"] == 0 and stats["written"] == 0 and receiver.indexes() == []
        assert stats["sink"] == {"posts": 0, "refused": 0}
    finally:
        stop(outlet, abort)
        receiver.close()


# -- the sink's counter of posts the receiver took does not count refused ones


def test_posts_counts_only_posts_the_receiver_took(port: int) -> None:
    receiver = Receiver(port, code=503)
    sink = HttpCallbackSink(f"http://127.0.0.1:{port}/down/{{source}}", params={"retry_initial": 0.01, "retry_max": 0.05})
    outlet, abort, _ = outlet_for(sink)
    try:
        outlet.put(rec(0))
        stats = wait_until(lambda: (s := outlet.stats())["write_failures"] >= 3 and s, timeout=10, what="3 failures")
        assert receiver.indexes() == [] and stats["written"] == 0
        assert stats["sink"]["posts"] == 0, f"nothing was taken, yet the sink says {stats['sink']}"
    finally:
        stop(outlet, abort)
        receiver.close()


# -- "already delivered" is remembered per record, not by (source, index): a source replaced or re-added
#    numbers from 0 again (without a position store), and its new records must not be taken for delivered ones


class Run:
    def __init__(self, name: str) -> None:
        self.name = name

    def to_json(self) -> str:
        return self.name


def test_a_new_runs_record_with_an_index_already_delivered_in_a_failed_batch_is_still_sent(port: int) -> None:
    answered: list[int] = []
    bodies: list[Any] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                code = 503 if len(answered) == 1 else 200  # the second POST fails once
                answered.append(code)
                if code == 200:
                    bodies.append((body["outputs"]["run"], body["index"]))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = HttpCallbackSink(f"http://127.0.0.1:{port}/cb", params={"retry_initial": 0.01, "retry_max": 0.05, "batch_size": 10})
    abort = threading.Event()
    outlet = Outlet("http", sink, SinkContext(ref="http", outputs={}), abort)
    for run in ("first", "second"):  # the source ran, was replaced, and its new run numbers from 0 again
        for index in (0, 1):
            outlet.put(Record(source="cam", sid="cam", index=index, timestamp=0.0, outputs={"run": Run(run)}))
    outlet.start()
    try:
        stats = wait_until(lambda: (s := outlet.stats())["written"] == 4 and s, timeout=10, what="4 written")
        with lock:
            delivered = sorted(bodies)
        assert delivered == [("first", 0), ("first", 1), ("second", 0), ("second", 1)], (
            f"the sink counts {stats['written']} written, the receiver got {delivered}"
        )
    finally:
        abort.set()
        outlet.close()
        outlet.thread.join(10)
        server.shutdown()
        server.server_close()


# -- a redirect to another origin is not followed: the sink's headers (a token) would go there


def test_a_redirect_to_another_origin_is_named_and_the_token_never_sent_there(tmp_path: Any) -> None:
    seen: list[str | None] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{elsewhere.server_address[1]}/steal"
    port = free_port()
    receiver = Receiver(port, code=307, location=target)
    sink = HttpCallbackSink(f"http://localhost:{port}/cb/{{source}}", headers={"Authorization": "Bearer s3cret"},
                            params={"retry_initial": 0.01, "retry_max": 0.05, "dead_letter": str(tmp_path / "dead.jsonl")})
    outlet, abort, _ = outlet_for(sink)
    try:
        outlet.put(rec(0))
        stats = wait_until(lambda: (s := outlet.stats())["write_failures"] >= 2 and s, timeout=10, what="failed writes")
        assert f"pointing to {target}" in str(stats["last_error"]) and "another origin" in str(stats["last_error"])
        assert seen == [] and stats["written"] == 0 and stats["dead_lettered"] == 0
    finally:
        stop(outlet, abort)
        receiver.close()
        elsewhere.shutdown()
        elsewhere.server_close()


def test_repr_hides_a_token_in_the_query() -> None:
    text = repr(HttpCallbackSink("http://ann:pw@h/cb/{source}?token=abc&x=1"))
    assert "abc" not in text and "pw" not in text and "token=***" in text


def test_a_timeout_that_fires_as_the_answer_arrives_does_not_break_the_next_post(monkeypatch: pytest.MonkeyPatch) -> None:
    # The watchdog takes the expired action just as the answer arrives: the POST succeeds, then the action
    # closes that client. The next POST must get a working client, not a closed one.
    import rvai_sdk.extensions.sinks.http_callback_sink as module

    taken, release = threading.Event(), threading.Event()
    real_arm = module._Watchdog.arm
    armed: list[int] = []

    def arm(self: Any, seconds: float, action: Any) -> None:
        armed.append(1)
        if len(armed) > 1:
            return real_arm(self, seconds, action)

        def late() -> None:
            taken.set()
            assert release.wait(10)
            action()

        return real_arm(self, seconds, late)

    monkeypatch.setattr(module._Watchdog, "arm", arm)

    class Answers(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            taken.wait(10)  # answers once the deadline passed and the watchdog took its action
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = HttpCallbackSink(f"http://127.0.0.1:{server.server_address[1]}/cb", params={"timeout": 0.1})
    sink.open(SinkContext(ref="http", outputs={}))
    outcome: list[BaseException | None] = []

    def first() -> None:
        try:
            sink.write([rec(0)])
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    writer = threading.Thread(target=first, daemon=True)
    try:
        writer.start()
        assert taken.wait(10), "the watchdog never fired"
        release.set()
        writer.join(10)
        assert len(outcome) == 1 and (outcome[0] is None or isinstance(outcome[0], SinkError)), outcome
        sink.write([rec(1)])  # a healthy receiver: the next POST goes through
        assert sink.stats()["posts"] == 1 + (outcome[0] is None)
    finally:
        release.set()
        sink.close()
        server.shutdown()
        server.server_close()
