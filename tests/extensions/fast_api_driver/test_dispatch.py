"""The HTTP driver's dispatch alone: which thread submits, parses and encodes a request (the thread hops).

The port is a real ``RestrictedInferenceProcess`` whose ``predict`` records the thread
that calls it and answers from a thread of its own, as the transport's reader does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rvai_sdk.exc import CellError, InputValidationError
from rvai_sdk.extensions.drivers.http.codec import Codec
from rvai_sdk.extensions.drivers.http.dispatch import Dispatcher
from rvai_sdk.drivers import RestrictedInferenceProcess
from rvai_sdk.transport.link import Link
from rvai_sdk.types import Image, Integer
from tests.extensions.fast_api_driver._pipelines import gated_pipeline, http_pipeline

pytestmark = pytest.mark.timeout(60)


class RecordingCodec(Codec):
    """A codec that records the thread each encoding runs on."""

    encoded_on: list[str]

    def encode(self, outputs: Any) -> dict[str, Any]:
        self.encoded_on.append(threading.current_thread().name)
        return super().encode(outputs)


class Port(Link):
    """A real port onto a fake inference process (a Link answering from a 'reader' thread, in order)."""

    def __init__(self, pipeline: Any, outputs: dict[str, Any], hold_first_for: int = 0) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.reader = concurrent.futures.ThreadPoolExecutor(1, "fake-reader")
        self.hold_first_for = hold_first_for
        self.all_in = threading.Event()  # set once hold_first_for requests reached the port
        self.outputs = outputs
        self.fail: BaseException | None = None
        self.port = RestrictedInferenceProcess(pipeline, self)

    def call(self, method: str, *args: Any, timeout: float | None = 60.0) -> Any:
        return True if method in ("ready", "ping") else {}

    def close(self) -> None:
        pass

    def submit(self, inputs: dict[str, Any], sid: str | None, timeout: float | None = None) -> concurrent.futures.Future[Any]:
        self.calls.append((threading.current_thread().name, sid))
        if len(self.calls) == self.hold_first_for:
            self.all_in.set()
        if self.fail is not None:
            raise self.fail
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        hold = self.all_in if len(self.calls) == 1 and self.hold_first_for else None
        self.reader.submit(self._answer, future, hold, sid)
        return future

    def _answer(self, future: concurrent.futures.Future[Any], hold: threading.Event | None, sid: str | None) -> None:
        if hold is not None:
            assert hold.wait(30), "the later requests never reached the port"
        if sid == "bad":
            future.set_exception(CellError("boom", ref="count", sid=sid))
        else:
            future.set_result(dict(self.outputs))


def run(dispatcher: Dispatcher, body: Callable[[], Any]) -> Any:
    async def main() -> Any:
        dispatcher.start(asyncio.get_running_loop())
        try:
            return await body()
        finally:
            dispatcher.stop()

    return asyncio.run(main())


def test_an_idle_server_submits_from_the_event_loop_and_a_busy_one_from_its_submitting_thread_in_order() -> None:
    fake = Port(gated_pipeline(), {"y": Integer(2)}, hold_first_for=4)  # the first answer waits for the other three
    codec = RecordingCodec(gated_pipeline())
    codec.encoded_on = []
    dispatcher = Dispatcher(fake.port, codec)
    inputs = {"x": Integer(1)}

    async def body() -> Any:
        first = asyncio.ensure_future(dispatcher.run(inputs, "a", None))
        later = [asyncio.ensure_future(dispatcher.run(inputs, sid, None)) for sid in ("b", "c", "d")]
        return await asyncio.gather(first, *later)

    results = run(dispatcher, body)
    assert results == [{"y": 2}] * 4
    assert fake.calls[0] == ("MainThread", "a")  # idle: no hop to send
    assert fake.calls[1:] == [("rvai-http-submit", sid) for sid in ("b", "c", "d")]  # busy: one thread, in order
    assert codec.encoded_on == ["MainThread"] * 4  # small outputs are encoded on the loop, no hop


def test_a_large_body_is_parsed_decoded_and_submitted_by_one_worker_and_image_outputs_are_encoded_by_a_worker() -> None:
    flipped = Image(np.zeros((4, 4, 3), np.uint8))
    fake = Port(http_pipeline(), {"flipped": flipped, "count": Integer(1)})
    codec = RecordingCodec(http_pipeline())
    codec.encoded_on = []
    dispatcher = Dispatcher(fake.port, codec)
    parsed_on: list[str] = []

    def parse() -> tuple[dict[str, Any], str | None]:
        parsed_on.append(threading.current_thread().name)
        return {"x": Integer(1), "image": flipped}, "cam-1"

    outputs, sid = run(dispatcher, lambda: dispatcher.run_parsed(parse, None))
    assert sid == "cam-1" and outputs["count"] == 1 and isinstance(outputs["flipped"], str)
    assert parsed_on[0].startswith("rvai-http-worker") and fake.calls == [(parsed_on[0], "cam-1")]  # one hop out
    assert len(codec.encoded_on) == 1 and codec.encoded_on[0].startswith("rvai-http-worker")  # not the loop, not the reader


def test_failures_on_every_path_reach_the_awaiting_request() -> None:
    fake = Port(gated_pipeline(), {"y": Integer(2)})
    dispatcher = Dispatcher(fake.port, Codec(gated_pipeline()))

    def parse_fails() -> tuple[dict[str, Any], str | None]:
        raise InputValidationError("input 'x': not a number", field="x")

    async def body() -> list[BaseException]:
        failures: list[BaseException] = []
        for attempt in (
            lambda: dispatcher.run({"x": Integer(1)}, "bad", None),  # the answer is a cell failure
            lambda: dispatcher.run_parsed(parse_fails, None),  # the worker's parse fails
        ):
            try:
                await attempt()
            except Exception as exc:
                failures.append(exc)
        fake.fail = InputValidationError("sid must be a str", field="sid")
        try:
            await dispatcher.run_parsed(lambda: ({"x": Integer(1)}, "s"), None)  # predict refuses on the worker
        except Exception as exc:
            failures.append(exc)
        return failures

    failures = run(dispatcher, body)
    assert [type(f) for f in failures] == [CellError, InputValidationError, InputValidationError]
    assert failures[1].field == "x" and failures[2].field == "sid"  # type: ignore[attr-defined]
