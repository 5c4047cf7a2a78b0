"""Log records of the inference process and of drivers reach the parent's handlers, named by process, on every runtime."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, Runtime
from rvai_sdk.types import Integer

pytestmark = pytest.mark.timeout(120)


@dataclass
class LIn(Inputs):
    x: Integer = Inputs.field()


@dataclass
class LOut(Outputs):
    y: Integer = Outputs.field()


@cell
class Chatty(Cell):
    """Logs each input at INFO and a caught error with its traceback."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: LIn) -> LOut:
        log = logging.getLogger("tests.chatty")
        log.info("chatty got %d", inputs.x)
        log.debug("chatty debug %d", inputs.x)  # below the parent's level: never sent
        try:
            raise KeyError(f"missing-{inputs.x}")
        except KeyError:
            log.exception("chatty caught")
        return LOut(y=inputs.x)


def chatty_pipeline() -> Pipeline:
    pf = PipelineFactory(name="chatty")
    c = pf.add_cell(ref="chatty", cell=Chatty())
    pf.declare_input(ref="x", input=c.inputs.x)
    pf.declare_output(ref="y", output=c.outputs.y)
    return pf.build()


def wait_for(records: list[logging.LogRecord], test: object, what: str, timeout: float = 30.0) -> list[logging.LogRecord]:
    """The records ``test`` accepts, once there is one (records from children arrive on their own thread)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        found = [r for r in list(records) if test(r)]  # type: ignore[operator]
        if found:
            return found
        if time.monotonic() > deadline:
            seen = [f"{r.processName} {r.name}: {r.getMessage()}" for r in records]
            raise AssertionError(f"no {what} within {timeout:g} s; records seen: {seen}")
        pause.wait(0.05)


def test_records_of_cells_and_drivers_reach_the_parents_handlers_named_by_process(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.dummy_sink import DummySink
    from rvai_sdk.extensions.sources.dummy_source import DummySource

    caplog.set_level(logging.INFO)  # before start: children take the parent's levels when they start
    name = type(runtime).__name__.lower()
    remote = not name.startswith("debug")
    with runtime.start_inference(Inference(pipeline=chatty_pipeline())) as proc:
        assert proc.predict({"x": 7}).result(timeout=30) == {"y": 7}
        got = wait_for(caplog.records, lambda r: r.name == "tests.chatty" and r.getMessage() == "chatty got 7", "cell record")
        assert got[0].levelno == logging.INFO
        if remote:
            assert got[0].processName == "inference[chatty]"
        caught = wait_for(caplog.records, lambda r: r.getMessage() == "chatty caught", "record with traceback")[0]
        text = caught.exc_text or logging.Formatter().formatException(caught.exc_info)  # type: ignore[arg-type]
        assert "KeyError: 'missing-7'" in text and "in call" in text
        assert not [r for r in caplog.records if r.getMessage().startswith("chatty debug")]

        stream = proc.add_driver(
            "cams", SourceSinkDriver, sources={"cam": DummySource(params={"count": 3, "rate": 0})}, sinks={"log": DummySink()}
        )
        try:
            results = wait_for(
                caplog.records,
                lambda r: r.name == "rvai_sdk.sinks.dummy" and " #2 " in r.getMessage(),
                "the dummy sink's record of the third result",
            )
        finally:
            proc.remove_driver(stream.pid)
        if remote:
            assert results[0].processName == "driver[cams]"
        assert getattr(results[0], "source", None) == "cam" and getattr(results[0], "index", None) == 2


def test_importing_the_library_configures_no_logging() -> None:
    code = (
        "import logging, rvai_sdk, rvai_sdk.cli, rvai_sdk.runtime, rvai_sdk._logging\n"
        "import rvai_sdk.extensions.drivers.fast_api_driver, rvai_sdk.extensions.drivers.source_sink_driver\n"
        "import rvai_sdk.extensions.sinks.dummy_sink\n"
        "root = logging.getLogger()\n"
        "assert root.handlers == [] and root.level == logging.WARNING, (root.handlers, root.level)\n"
        "assert all(not getattr(l, 'handlers', None) for l in logging.root.manager.loggerDict.values()"
        " if getattr(l, 'name', '').startswith('rvai_sdk')), 'an rvai_sdk logger has a handler'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_receiver_takes_records_only_from_holders_of_its_key_and_a_stalled_stranger_holds_up_no_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import json
    import socket
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    from rvai_sdk._logging import LogReceiver

    caplog.set_level(logging.INFO)
    receiver = LogReceiver()
    stranger = socket.create_connection(receiver.address)  # connects, never answers the challenge
    try:
        with pytest.raises(AuthenticationError):
            Client(receiver.address, authkey=b"not the key")
        with Client(receiver.address, authkey=receiver.authkey) as conn:
            record = {"name": "tests.forwarded", "msg": "from a child", "levelno": logging.INFO, "levelname": "INFO",
                      "processName": "driver[x]"}
            conn.send_bytes(json.dumps(record).encode())
            got = wait_for(caplog.records, lambda r: r.name == "tests.forwarded", "the forwarded record")
        assert got[0].getMessage() == "from a child" and got[0].processName == "driver[x]"
    finally:
        stranger.close()
        receiver.close()
