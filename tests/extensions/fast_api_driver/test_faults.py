"""Issue 12, the HTTP half: each fault a hostile or careless caller found, reproduced against a real
uvicorn server on 127.0.0.1 with real requests (httpx), on every runtime where the runtime matters."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIClientError, FastAPIDriver
from rvai_sdk.runtime import Inference, Runtime, init
from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.types import Image, Integer, String, Value
from tests.extensions.fast_api_driver._pipelines import http_pipeline
from tests.extensions.fast_api_driver.test_fast_api_driver import body, error_of, serve_in_thread, serving

pytestmark = pytest.mark.timeout(90)

PICTURE = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


def huge_png(width: int = 12000, height: int = 12000) -> bytes:
    """A valid greyscale PNG of ``width`` x ``height`` black pixels: about 140 KiB that decode to ``width*height`` bytes."""
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then black pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge() -> bytes:
    return huge_png()


# -- bounded input ----------------------------------------------------------------------------------


def test_a_small_body_holding_a_12000_by_12000_png_is_refused_with_422_before_it_is_decoded(
    runtime: Runtime, huge: bytes
) -> None:
    encoded = base64.b64encode(huge).decode("ascii")
    assert len(encoded) < 1 << 20  # the body limit (32 MiB) does not stop it
    with serving(runtime, http_pipeline()) as (proc, handle, url), httpx.Client(base_url=url, timeout=60) as http:
        refused = http.post("/predict", json={"inputs": {"x": 1, "image": encoded}, "sid": "a"})
        assert refused.status_code == 422, refused.text[:300]
        error = error_of(refused)
        assert error["type"] == "InputValidationError" and error["field"] == "inputs.image"
        assert "12000x12000" in error["message"] and "max_image_pixels" in error["message"]

        uploaded = http.post("/predict", data={"x": "1"}, files={"image": ("huge.png", huge, "image/png")})
        assert uploaded.status_code == 422 and error_of(uploaded)["field"] == "inputs.image"
        tasked = http.post("/tasks", json={"inputs": {"x": 1, "image": encoded}})
        assert tasked.status_code == 422 and error_of(tasked)["field"] == "inputs.image"
        batch = http.post("/predict/batch", json={"requests": [{"inputs": {"x": 1, "image": encoded}}, body(1)]})
        results = batch.json()["results"]
        assert results[0]["error"]["field"] == "requests[0].inputs.image" and results[1]["outputs"]["count"] == 1

        # the limit is a driver parameter: a 2x3 picture has 6 pixels
        handle.set_parameters({"max_image_pixels": 5})
        small = http.post("/predict", json=body(1))
        assert small.status_code == 422 and "more than the limit of 5 pixels" in error_of(small)["message"]
        handle.set_parameters({"max_image_pixels": 6})
        assert http.post("/predict", json=body(1)).status_code == 200


def test_three_huge_images_at_once_leave_the_driver_process_small(huge: bytes) -> None:
    encoded = base64.b64encode(huge).decode("ascii")
    with init("local") as rt, serving(rt, http_pipeline()) as (proc, handle, url):
        driver = psutil.Process(handle.pid)
        before = driver.memory_info().rss

        def post(_: int) -> int:
            with httpx.Client(base_url=url, timeout=60) as http:
                return http.post("/predict", json={"inputs": {"x": 1, "image": encoded}}).status_code

        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(post, range(3))) == [422, 422, 422]
        grown = driver.memory_info().rss - before
        assert grown < 100 * (1 << 20), f"the driver grew by {grown >> 20} MiB"  # each image would be 137 MiB decoded


def test_a_sid_longer_than_the_limit_is_refused_with_422_naming_where_it_came_from(runtime: Runtime) -> None:
    with serving(runtime, http_pipeline()) as (proc, handle, url), httpx.Client(base_url=url) as http:
        long_sid = "s" * (1 << 20)
        in_body = http.post("/predict", json=body(1, sid=long_sid))
        assert in_body.status_code == 422, in_body.text[:300]
        assert error_of(in_body)["field"] == "sid" and "max_sid_length" in error_of(in_body)["message"]
        in_header = http.post("/predict", json=body(1), headers={"X-State-Id": "h" * 300})
        assert in_header.status_code == 422 and error_of(in_header)["field"] == "X-State-Id"
        in_batch = http.post("/predict/batch", json={"requests": [body(1, sid="b" * 257), body(1, sid="b")]})
        results = in_batch.json()["results"]
        assert results[0]["error"]["field"] == "requests[0].sid" and results[1]["outputs"]["count"] == 1
        in_form = http.post("/predict", data={"x": "1", "sid": "f" * 257}, files={"image": ("p.png", Image(PICTURE).to_png())})
        assert in_form.status_code == 422 and error_of(in_form)["field"] == "sid"
        assert http.post("/tasks", json=body(1, sid="t" * 257)).status_code == 422
        # 256 characters are fine
        assert http.post("/predict", json=body(1, sid="k" * 256)).json()["outputs"]["count"] == 1
        assert proc.stats()["sids"]["live"] <= 2


# -- callbacks (SSRF) -------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request; answers 200, or 307 to ``server.redirect`` when set."""

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        self.server.seen.append((self.path, self.rfile.read(length)))  # type: ignore[attr-defined]
        self.server.hit.set()  # type: ignore[attr-defined]
        redirect = self.server.redirect  # type: ignore[attr-defined]
        self.send_response(307 if redirect else 200)
        if redirect:
            self.send_header("Location", redirect)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def recorder(redirect: str | None = None) -> contextlib.AbstractContextManager[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.hit = threading.Event()  # type: ignore[attr-defined]
    server.redirect = redirect  # type: ignore[attr-defined]
    return serve_in_thread(server)


def test_callback_urls_to_loopback_private_link_local_and_multicast_addresses_are_refused(runtime: Runtime) -> None:
    with recorder() as internal, serving(runtime, http_pipeline()) as (proc, handle, url), httpx.Client(base_url=url) as http:
        port = internal.server_port
        forbidden = [
            f"http://127.0.0.1:{port}/",
            f"http://localhost:{port}/",
            f"http://2130706433:{port}/",  # 127.0.0.1 as one number
            f"http://user@127.0.0.1:{port}/",
            f"http://0x7f.1:{port}/",
            f"http://[::1]:{port}/",
            f"http://[::ffff:127.0.0.1]:{port}/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://0.0.0.0:5432/",
        ]
        for callback_url in forbidden:
            refused = http.post("/tasks", json=body(1, callback_url=callback_url))
            assert refused.status_code == 422, (callback_url, refused.text)
            error = error_of(refused)
            assert error["field"] == "callback_url" and "callback_allow" in error["message"], (callback_url, error)
        assert internal.seen == []

        # listed in the allow-list, the same receiver gets its callback
        handle.set_parameters({"callback_allow": ["127.0.0.0/8"]})
        with FastAPIClient(process=handle) as client:
            task_id = client.predict_task({"x": 2, "image": PICTURE}, callback_url=f"http://2130706433:{port}/done")
            assert internal.hit.wait(30)
            assert client.task(task_id, wait=20)["status"] == "done"
        assert json.loads(internal.seen[0][1])["id"] == task_id


def test_a_callback_redirected_to_an_address_not_allowed_is_not_followed() -> None:
    with recorder() as target, recorder(redirect="") as front, init("debug") as rt:
        target_url = f"http://127.0.0.1:{target.server_port}/stolen"
        front.redirect = target_url  # type: ignore[attr-defined]
        parameters = {"callback_allow": ["localhost"], "callback_retries": 0}  # the name, not its addresses
        with serving(rt, http_pipeline(), parameters) as (proc, handle, url), FastAPIClient(process=handle) as client:
            task_id = client.predict_task({"x": 1, "image": PICTURE}, callback_url=f"http://localhost:{front.server_port}/hook")
            assert front.hit.wait(30)
            callback = client.task(task_id, wait=20)["callback"]
            for _ in range(200):  # the record is updated after the POST was answered: bounded re-reads
                if callback["status"] != "pending":
                    break
                callback = client.task(task_id, wait=0.05)["callback"]
            assert callback["status"] == "failed" and "callback_allow" in callback["last_error"], callback
        assert target.seen == []


# -- simple cross-origin requests (CSRF) and DNS rebinding -------------------------------------------


def test_json_routes_refuse_bodies_a_cross_origin_page_can_send_without_asking(runtime: Runtime) -> None:
    with serving(runtime, http_pipeline()) as (proc, handle, url), httpx.Client(base_url=url) as http:
        content = json.dumps(body(1, sid="csrf")).encode()
        for route in ("/predict", "/tasks"):
            for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
                headers = {"content-type": content_type} if content_type else {}
                refused = http.post(route, content=content, headers=headers)
                assert refused.status_code == 415, (route, content_type, refused.text)
                assert error_of(refused)["type"] == "UnsupportedMediaType"
        batch = http.post("/predict/batch", content=json.dumps({"requests": [body(1)]}), headers={"content-type": "text/plain"})
        assert batch.status_code == 415
        # a cross-site form may send multipart: refused when its Origin is another site's
        form = {"x": "1", "sid": "csrf"}
        files = {"image": ("p.png", Image(PICTURE).to_png(), "image/png")}
        cross = http.post("/predict", data=form, files=files, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and error_of(cross)["type"] == "CrossOriginRequest"
        assert http.post("/predict", data=form, files=files).status_code == 200  # no Origin: not a browser
        assert proc.predict({"x": 1, "image": Image(PICTURE)}, sid="csrf").result()["count"] == 2  # one served
        # JSON with a charset, and the page's own origin, are fine
        same = http.post(
            "/predict", content=content, headers={"content-type": "application/json; charset=utf-8", "Origin": url}
        )
        assert same.status_code == 200


def test_a_server_on_a_loopback_address_answers_only_to_loopback_host_names(runtime: Runtime) -> None:
    with serving(runtime, http_pipeline()) as (proc, handle, url), httpx.Client(base_url=url) as http:
        port = url.rsplit(":", 1)[1]
        for host in ("rebind.evil.example", f"rebind.evil.example:{port}", "10.0.0.1"):
            refused = http.get("/pipeline", headers={"Host": host})
            assert refused.status_code == 400, (host, refused.text)
            assert error_of(refused)["type"] == "InvalidHost" and "allowed_hosts" in error_of(refused)["message"]
            assert http.post("/predict", json=body(1), headers={"Host": host}).status_code == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert http.get("/pipeline", headers={"Host": host}).status_code == 200, host
        handle.set_parameters({"allowed_hosts": ["api.internal"]})
        assert http.get("/pipeline", headers={"Host": f"api.internal:{port}"}).status_code == 200
        assert http.get("/pipeline", headers={"Host": "other.internal"}).status_code == 400


def test_the_bearer_scheme_is_case_insensitive(runtime: Runtime) -> None:
    with serving(runtime, http_pipeline(), {"api_key": "s3cret"}) as (proc, handle, url), httpx.Client(base_url=url) as http:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            answered = http.post("/predict", json=body(1), headers={"Authorization": f"{scheme} s3cret"})
            assert answered.status_code == 200, (scheme, answered.text)
        for wrong in ("Basic s3cret", "Bearer other", "s3cret", "Bearers3cret"):
            assert http.post("/predict", json=body(1), headers={"Authorization": wrong}).status_code == 401, wrong


# -- a failed driver ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_client_wait_raises_at_once_with_the_failure_of_a_failed_driver(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=http_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver, {"host": "192.0.2.1"})  # TEST-NET: not this machine's
        with pytest.raises(FastAPIClientError, match="FAILED: .*cannot listen on 192.0.2.1") as raised:
            with FastAPIClient(process=handle) as client:
                client.wait(timeout=600)  # the test's own timeout (60 s) fails it if this waits
        assert raised.value.error_type == "FAILED"
        assert handle.status.name == "FAILED"


# -- decoding a big body never stalls the event loop ---------------------------------------------------------

DECODING = threading.Event()
RELEASE = threading.Event()


class Held(Value):
    """A text value whose decoding (from_json) waits until RELEASE is set (at most 30 s): a slow decode."""

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Held:
        return value if isinstance(value, Held) else cls(str(value))

    def to_json(self) -> Any:
        return self.text

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Held:
        if obj == "hold":
            DECODING.set()
            RELEASE.wait(30)
        return cls(str(obj))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {"type": "string"}

    @classmethod
    def fake(cls, rng: Any = None) -> Held:
        return cls("fake")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Held) and other.text == self.text


@dataclasses.dataclass
class HeldIn(Inputs):
    text: Held = Inputs.field()
    padding: String = Inputs.field()


@dataclasses.dataclass
class LengthOut(Outputs):
    length: Integer = Outputs.field()


class Length(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: HeldIn) -> LengthOut:
        return LengthOut(length=Integer(len(inputs.text.text) + len(inputs.padding)))


@pytest.mark.parametrize("route", ["/predict/batch", "/tasks"])
def test_a_big_batch_or_task_body_is_decoded_off_the_event_loop_so_health_answers_meanwhile(route: str) -> None:
    """POST /predict/batch and POST /tasks parsed and decoded their bodies (base64 images...) on the event loop:
    an 8 MB batch froze /health and every other request for seconds."""
    from rvai_sdk.pipeline import PipelineFactory

    pf = PipelineFactory(name="held")
    cell_ = pf.add_cell(ref="length", cell=Length())
    pf.declare_input(ref="text", input=cell_.inputs.text)
    pf.declare_input(ref="padding", input=cell_.inputs.padding)
    pf.declare_output(ref="length", output=cell_.outputs.length)
    item = {"inputs": {"text": "hold", "padding": "x" * 100_000}}  # over 64 KiB: decoded off the loop
    payload = {"requests": [item]} if route == "/predict/batch" else item
    DECODING.clear()
    RELEASE.clear()
    with init("debug") as rt, serving(rt, pf.build(), {"task_store": "memory"}) as (_, _, url):
        with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
            try:
                posted = pool.submit(http.post, route, json=payload)
                assert DECODING.wait(30), "the body's decoding started"
                assert http.get("/health", timeout=10).status_code == 200  # the loop is free while it decodes
            finally:
                RELEASE.set()
            assert posted.result(timeout=30).status_code in (200, 202)


# -- a request in flight when the driver stops ----------------------------------------------------------------


def test_a_request_in_flight_when_the_driver_stops_gets_a_json_503_not_uvicorns_plain_500(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn cancels a handler still running 2 s into its shutdown and answers 'Internal Server Error' in
    plain text: a client could not tell a stop from a bug, nor that it may send the request again."""
    from tests.extensions.fast_api_driver._task_pipelines import GATE_ENV, held_pipeline
    from tests.extensions.source_sink.support import wait_until

    gate = tmp_path / "open"
    monkeypatch.setenv(GATE_ENV, str(gate))
    with init("debug") as rt, rt.start_inference(Inference(pipeline=held_pipeline())) as proc:
        handle = proc.add_driver("webapi", FastAPIDriver)
        with FastAPIClient(process=handle) as client:
            client.wait(timeout=30)
            url = client.base_url
        with httpx.Client(base_url=url, timeout=60) as http, ThreadPoolExecutor(1) as pool:
            try:
                held = pool.submit(http.post, "/predict", json={"inputs": {"x": -1}, "sid": "s"})
                wait_until(lambda: proc.stats()["cells"]["hold"]["running"] == 1, what="the request to run")
                proc.remove_driver("webapi")
                answer = held.result(timeout=60)
            finally:
                gate.touch()
        assert answer.status_code == 503 and answer.headers["content-type"] == "application/json", answer.text
        assert answer.headers["retry-after"] == "1"
        error = answer.json()["error"]
        assert error["type"] == "DriverStopping" and "may still run in the inference process" in error["message"]
