"""A bounded chaos test on the local runtime: steady load while processes are SIGKILLed and restarted.

HTTP and Python clients send requests while the inference process is killed
(SIGKILL) and restarted three times and the HTTP driver twice. Afterwards every
request got either its answer or an ``RvaiError``, no client hung, and the
process serves correctly. Bounded in count (requests per client) and time (a
timeout on every wait); it asserts outcomes, never timings.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from rvai_sdk.exc import RvaiError
from rvai_sdk.runtime import Inference, ProcessStatus, init
from rvai_sdk.types import Integer
from tests.conftest import AddOne, Double, chain_pipeline, require_extra

pytestmark = pytest.mark.timeout(300)

REQUESTS_PER_CLIENT = 400
"""Each client sends this many requests at most, then stops."""


def _until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Wait for ``condition`` (state of other processes) with a timeout; its value."""
    done = threading.Event()
    waited = 0.0
    while True:
        value = condition()
        if value:
            return value
        if waited > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        done.wait(0.02)
        waited += 0.02


def test_under_load_killing_and_restarting_the_inference_process_and_a_driver_loses_no_answer() -> None:
    require_extra("fastapi")
    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIClient, FastAPIDriver

    outcomes: Counter[str] = Counter()
    unexpected: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    progress = threading.Condition(lock)

    def record(kind: str, detail: str = "") -> None:
        with progress:
            outcomes[kind] += 1
            if detail:
                unexpected.append(detail)
            progress.notify_all()

    with init("local") as rt:
        proc = rt.start_inference(Inference(pipeline=chain_pipeline(AddOne, Double), stuck_after=None))
        drivers = {"http": proc.add_driver("webapi", FastAPIDriver)}

        def python_client(n: int) -> None:
            pace = threading.Event()
            for i in range(REQUESTS_PER_CLIENT):
                if stop.is_set():
                    return
                try:
                    out = proc.predict({"x": i}, sid=f"py-{n}", timeout=20).result(timeout=30)
                except RvaiError:
                    record("error")
                    pace.wait(0.01)  # the process is down: do not spin
                except BaseException as exc:  # a hang (TimeoutError of result()) or a foreign error
                    record("unexpected", f"python client {n}, request {i}: {type(exc).__name__}: {exc}")
                else:
                    if out == {"y": Integer((i + 1) * 2)}:
                        record("answer")
                    else:
                        record("unexpected", f"python client {n}, request {i}: wrong answer {out}")

        def http_client(n: int) -> None:
            pace = threading.Event()
            for i in range(REQUESTS_PER_CLIENT):
                if stop.is_set():
                    return
                try:
                    with FastAPIClient(process=drivers["http"], timeout=30) as client:
                        out = client.predict({"x": i}, sid=f"http-{n}")
                except RvaiError:  # FastAPIClientError: 503 while the process is down, refused while the driver is
                    record("error")
                    pace.wait(0.01)
                except BaseException as exc:
                    record("unexpected", f"http client {n}, request {i}: {type(exc).__name__}: {exc}")
                else:
                    if out == {"y": Integer((i + 1) * 2)}:
                        record("answer")
                    else:
                        record("unexpected", f"http client {n}, request {i}: wrong answer {out}")

        threads = [threading.Thread(target=python_client, args=(n,), daemon=True) for n in range(2)]
        threads += [threading.Thread(target=http_client, args=(n,), daemon=True) for n in range(2)]
        for thread in threads:
            thread.start()

        def answers_grow(by: int = 10) -> None:
            with progress:
                start = outcomes["answer"]
                assert progress.wait_for(lambda: outcomes["answer"] >= start + by, timeout=60), "no answers under load"

        try:
            events = ["process", "driver", "process", "driver", "process"]
            for event in events:
                answers_grow()
                if event == "process":
                    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
                    _until(lambda: proc.status is ProcessStatus.FAILED, "the handle to see the process die")
                    proc.restart(timeout=5)
                    assert proc.status is ProcessStatus.RUNNING
                else:
                    handle = drivers["http"]
                    os.kill(handle.pid, signal.SIGKILL)
                    _until(lambda: handle.status is ProcessStatus.FAILED, "the driver handle to see the driver die")
                    proc.remove_driver("webapi")
                    drivers["http"] = proc.add_driver("webapi", FastAPIDriver)
            answers_grow()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a client hung"
        assert not unexpected, unexpected[:5]
        assert outcomes["answer"] > 0
        # Afterwards the process serves correctly, through Python and HTTP.
        assert proc.predict({"x": 5}, sid="after").result(timeout=30) == {"y": Integer(12)}
        with FastAPIClient(process=drivers["http"], timeout=30) as client:
            client.wait(timeout=30)
            assert client.predict({"x": 5}, sid="after-http") == {"y": Integer(12)}
        assert proc.is_ready()
