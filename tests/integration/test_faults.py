"""Faults fail loudly and never wedge (issue 12, core): output checks, deadlines, stuck calls, bounded sids.

Every test runs on debug, local and ray (the ``runtime`` fixture): real processes, real sockets.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.exc import CellError, DeadlineExceededError, InputValidationError, RvaiError
from rvai_sdk.runtime import Inference, ProcessStatus, Runtime
from rvai_sdk.types import Integer
from tests._sync import Sync, SyncServer
from tests.conftest import AddOne, LoadsWhenLetIn, XIn, YOut, branches_pipeline, require_extra, single

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def sync() -> Iterator[SyncServer]:
    server = SyncServer()
    yield server
    server.close()


class BadOutputs(Cell):
    """x == 1: a YOut whose field was never set; x == 2: a field deleted; x == 3: re-assigned to a str;
    x == 4: re-assigned to a plain int (coerced losslessly); otherwise x + 1."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 1:
            return YOut.__new__(YOut)
        out = YOut(y=Integer(inputs.x + 1))
        if inputs.x == 2:
            del out.y
        elif inputs.x == 3:
            out.y = "not a number"  # type: ignore[assignment]
        elif inputs.x == 4:
            out.y = 5  # type: ignore[assignment]
        return out


class BadBatchItems(Cell):
    """A batched cell whose item for x == 1 has its field never set."""

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: Parameters, inputs_list: Sequence[XIn]
    ) -> list[YOut]:
        return [YOut.__new__(YOut) if i.x == 1 else YOut(y=Integer(i.x + 1)) for i in inputs_list]


@cell(concurrency=2)
class Hang(Cell):
    """Holds x == 99 until the event 'release' is set (at most 60 s); otherwise x + 1."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        assert model_path is not None
        return Sync(model_path)

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 99:
            context.model.set(f"entered-{context.sid}")
            context.model.wait("release", timeout=60)
        return YOut(y=Integer(inputs.x + 1))


def test_a_cell_returning_outputs_with_a_field_never_set_fails_that_request_and_every_later_request_is_answered(
    runtime: Runtime,
) -> None:
    with runtime.start_inference(Inference(pipeline=single(BadOutputs))) as proc:
        with pytest.raises(CellError, match=r"cell 'c0' \(BadOutputs\).*output field 'y' not set") as info:
            proc.predict({"x": 1}, sid="a").result(timeout=20)
        assert info.value.ref == "c0" and info.value.field == "y" and info.value.sid == "a"
        with pytest.raises(CellError, match="output field 'y' not set"):
            proc.predict({"x": 2}, sid="b").result(timeout=20)
        with pytest.raises(CellError, match=r"output field 'y' holds str 'not a number'") as info:
            proc.predict({"x": 3}, sid="a").result(timeout=20)
        assert info.value.field == "y"
        assert proc.predict({"x": 4}, sid="c").result(timeout=20) == {"y": Integer(5)}
        # Every later request, on every sid, is still answered: no worker thread died.
        futures = [proc.predict({"x": 10 + i}, sid=f"s{i % 3}") for i in range(12)]
        assert [f.result(timeout=20) for f in futures] == [{"y": Integer(11 + i)} for i in range(12)]
        assert proc.status is ProcessStatus.RUNNING
        assert proc.is_ready()
        assert proc.stats()["cells"]["c0"]["failures"] == 3


def test_a_request_failed_by_one_branch_still_runs_its_other_branches_so_their_state_never_depends_on_timing(
    runtime: Runtime,
) -> None:
    # check raises for x < 0; count and remember (batched) are stateful branches beside it. Ten requests of
    # one sid in flight at once, every other one failing: each of them reaches count and remember, in order.
    xs = [-1 if i % 2 else i for i in range(10)]
    with runtime.start_inference(Inference(pipeline=branches_pipeline())) as proc:
        futures = [proc.predict({"x": x}, sid="s") for x in xs]
        for x, future in zip(xs, futures):
            if x < 0:
                with pytest.raises(CellError, match="negative input -1") as info:
                    future.result(timeout=20)
                assert info.value.ref == "check" and info.value.sid == "s"
            else:
                assert future.result(timeout=20)["checked"] == Integer(x + 1)
        last = proc.predict({"x": 100}, sid="s").result(timeout=20)
        assert last["count"] == Integer(11)
        assert [int(x) for x in last["seen"]] == [*xs, 100]
        stats = proc.stats()
        assert (stats["requests"]["failed"], stats["requests"]["succeeded"]) == (5, 6)
        assert stats["cells"]["after"]["calls"] == 6  # the failed cell's own successor never ran for them


def test_a_batched_cell_item_with_a_field_never_set_fails_that_item_only(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(BadBatchItems))) as proc:
        bad = proc.predict({"x": 1}, sid="a")
        good = [proc.predict({"x": x}, sid=f"s{x}") for x in (2, 3, 4)]
        with pytest.raises(CellError, match=r"call_batch\(\) item \d+ returned YOut with output field 'y' not set"):
            bad.result(timeout=20)
        assert [f.result(timeout=20) for f in good] == [{"y": Integer(x + 1)} for x in (2, 3, 4)]
        assert proc.predict({"x": 5}, sid="a").result(timeout=20) == {"y": Integer(6)}


def test_a_request_past_its_deadline_fails_naming_the_cell_and_sid_while_other_sids_are_served(
    runtime: Runtime, sync: SyncServer
) -> None:
    inference = Inference(pipeline=single(Hang), models={"c0": sync.address}, stuck_after=0.2)
    proc = runtime.start_inference(inference)
    try:
        with pytest.raises(DeadlineExceededError, match=r"sid 'cam-1'.*deadline of 0.5 s in cell 'c0'") as info:
            proc.predict({"x": 99}, sid="cam-1", timeout=0.5).result(timeout=30)
        error = info.value
        assert isinstance(error, TimeoutError) and isinstance(error, RvaiError)
        assert (error.ref, error.sid, error.timeout) == ("c0", "cam-1", 0.5)
        assert Sync(sync.address).wait("entered-cam-1", timeout=10)
        # Another sid still gets its answer (the cell allows two calls at once).
        assert proc.predict({"x": 1}, sid="cam-2", timeout=20).result(timeout=30) == {"y": Integer(2)}
        # The call still running past stuck_after makes the process report it.
        stuck = _wait_for(lambda: proc.stats()["stuck"])
        assert stuck[0]["cell"] == "c0" and stuck[0]["sid"] == "cam-1" and stuck[0]["seconds"] > 0.2
        assert not proc.is_ready()
        assert proc.stats()["requests"]["deadline_exceeded"] == 1
    finally:
        sync.set("release")
    assert _wait_for(proc.is_ready)
    assert proc.predict({"x": 2}, sid="cam-1").result(timeout=30) == {"y": Integer(3)}
    proc.stop()


def test_the_inference_request_timeout_is_the_default_deadline(runtime: Runtime, sync: SyncServer) -> None:
    inference = Inference(pipeline=single(Hang), models={"c0": sync.address}, request_timeout=0.5)
    proc = runtime.start_inference(inference)
    try:
        with pytest.raises(DeadlineExceededError, match="deadline of 0.5 s"):
            proc.predict({"x": 99}, sid="cam-1").result(timeout=30)
        # A request's own timeout wins over the default.
        assert proc.predict({"x": 1}, timeout=20).result(timeout=30) == {"y": Integer(2)}
        with pytest.raises(InputValidationError, match="timeout must be a number of seconds > 0") as info:
            proc.predict({"x": 1}, timeout=0)
        assert info.value.field == "timeout"
    finally:
        sync.set("release")
    proc.stop()


def test_a_request_with_a_deadline_years_away_leaves_every_other_deadline_kept(runtime: Runtime, sync: SyncServer) -> None:
    """One client's huge timeout (1e10 s overflows a thread wait) used to end the process's deadline thread:
    from then on no request of any client ever timed out. An infinite one is refused, naming the field."""
    proc = runtime.start_inference(Inference(pipeline=single(Hang), models={"c0": sync.address}))
    try:
        assert proc.predict({"x": 1}, sid="far", timeout=1e10).result(timeout=30) == {"y": Integer(2)}
        assert proc.predict({"x": 2}, sid="far", timeout=1e300).result(timeout=30) == {"y": Integer(3)}
        with pytest.raises(DeadlineExceededError, match="deadline of 0.5 s"):
            proc.predict({"x": 99}, sid="near", timeout=0.5).result(timeout=30)
        with pytest.raises(InputValidationError, match=r"timeout must be .*None \(no deadline\), got inf") as info:
            proc.predict({"x": 1}, timeout=float("inf"))
        assert info.value.field == "timeout"
    finally:
        sync.set("release")
    proc.stop()


def test_an_endless_default_deadline_is_refused_where_it_is_set_not_at_every_request() -> None:
    """A driver's request_timeout=inf was taken, then every request without its own deadline was refused,
    blaming a 'timeout' field its client never sent."""
    from rvai_sdk.exc import ParameterError
    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIDriverParameters
    from rvai_sdk.extensions.drivers.grpc_driver import GrpcDriver
    from rvai_sdk.types import Float

    with pytest.raises(ParameterError, match=r"Inference\(request_timeout=...\) must be > 0 seconds or None \(none\), got inf"):
        Inference(pipeline=single(AddOne), request_timeout=float("inf"))
    with pytest.raises(ParameterError, match="request_timeout must be > 0 seconds or None"):
        FastAPIDriverParameters(request_timeout=Float(float("inf")))
    require_extra("grpc")
    with pytest.raises(ParameterError, match="request_timeout"):
        GrpcDriver({"request_timeout": float("inf")})


def test_stop_returns_and_the_process_is_stopped_while_a_call_hangs(runtime: Runtime, sync: SyncServer) -> None:
    proc = runtime.start_inference(Inference(pipeline=single(Hang), models={"c0": sync.address}))
    try:
        hung = proc.predict({"x": 99}, sid="cam-1")
        assert Sync(sync.address).wait("entered-cam-1", timeout=20)
        proc.stop(timeout=0.5)
        assert proc.status is ProcessStatus.STOPPED
        with pytest.raises(RvaiError):
            hung.result(timeout=10)
    finally:
        if runtime.name == "debug":  # a thread cannot be killed: let it return (local and ray killed theirs)
            sync.set("release")


def test_a_sid_longer_than_the_limit_is_refused_on_predict_and_on_the_driver_path(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(AddOne))) as proc:
        assert proc.predict({"x": 1}, sid="s" * 256).result(timeout=20) == {"y": Integer(2)}
        with pytest.raises(InputValidationError, match="sid is 1048576 characters long, more than the limit of 256") as info:
            proc.predict({"x": 1}, sid="s" * (1 << 20))
        assert info.value.field == "sid"
        with pytest.raises(InputValidationError, match="limit of 256"):
            proc.restricted().predict({"x": 1}, sid="s" * 257)
        assert proc.sids() == ["s" * 256]
        with pytest.raises(InputValidationError, match="not valid Unicode text") as info:  # no store could keep it
            proc.predict({"x": 1}, sid="cam-\udc80")
        assert info.value.field == "sid"
        with pytest.raises(InputValidationError, match="not valid Unicode text"):
            proc.restricted().predict({"x": 1}, sid="\ud800")
        assert proc.predict({"x": 1}, sid="kamera-ü-📷").result(timeout=20) == {"y": Integer(2)}
    with runtime.start_inference(Inference(pipeline=single(AddOne), max_sid_length=8)) as proc:
        with pytest.raises(InputValidationError, match="limit of 8.*Inference\\(max_sid_length=...\\)"):
            proc.predict({"x": 1}, sid="123456789")
        assert proc.predict({"x": 1}, sid="12345678").result(timeout=20) == {"y": Integer(2)}


def _wait_for(condition: Any, timeout: float = 20.0) -> Any:
    """Poll ``condition`` until it is truthy (it reads state of another process); its value."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        tick.wait(0.05)


def test_over_http_a_request_past_its_deadline_is_a_504_and_a_stuck_call_makes_ready_503(
    runtime: Runtime, sync: SyncServer
) -> None:
    require_extra("fastapi")
    import httpx

    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIDriver

    inference = Inference(pipeline=single(Hang), models={"c0": sync.address}, stuck_after=0.2)
    proc = runtime.start_inference(inference)
    try:
        http = proc.add_driver("webapi", FastAPIDriver, {"request_timeout": 30.0})
        base = f"http://127.0.0.1:{http.get_service('http')['port']}"
        with httpx.Client(base_url=base, timeout=30) as client:
            assert _wait_for(lambda: _ready_status(client) == 200)
            answer = client.post(
                "/predict", json={"inputs": {"x": 99}, "sid": "cam-1"}, headers={"X-Request-Timeout": "0.5"}
            )
            assert answer.status_code == 504, answer.text
            error = answer.json()["error"]
            assert error["type"] == "DeadlineExceededError" and error["cell"] == "c0"
            assert "sid 'cam-1'" in error["message"] and "deadline of 0.5 s" in error["message"]
            assert _wait_for(lambda: _ready_status(client) == 503)  # the call is still stuck
            bad = client.post("/predict", json={"inputs": {"x": 1}}, headers={"X-Request-Timeout": "soon"})
            assert bad.status_code == 422 and "X-Request-Timeout" in bad.json()["error"]["message"]
            long_sid = client.post("/predict", json={"inputs": {"x": 1}, "sid": "s" * 300})
            assert long_sid.status_code == 422, long_sid.text
            assert long_sid.json()["error"]["field"] == "sid" and "256" in long_sid.json()["error"]["message"]
            sync.set("release")
            assert _wait_for(lambda: _ready_status(client) == 200)
            served = client.post("/predict", json={"inputs": {"x": 1}, "sid": "cam-1"})
            assert served.status_code == 200 and served.json()["outputs"] == {"y": 2}
    finally:
        sync.set("release")
        proc.stop()


def _ready_status(client: Any) -> int:
    import httpx

    try:
        return int(client.get("/ready").status_code)
    except httpx.TransportError:  # not listening yet
        return 0


@pytest.mark.parametrize("runtime_name", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_the_opt_in_supervisor_restarts_a_process_whose_call_is_stuck_and_one_that_was_killed(
    runtime_name: str, sync: SyncServer, request: pytest.FixtureRequest
) -> None:
    import os
    import signal

    from rvai_sdk.exc import ProcessError
    from rvai_sdk.runtime import init

    if runtime_name == "ray":
        request.getfixturevalue("ray_instance")
    inference = Inference(pipeline=single(Hang), models={"c0": sync.address}, stuck_after=0.5, supervise=True)
    with init(runtime_name) as rt, rt.start_inference(inference) as proc:
        hung = proc.predict({"x": 99}, sid="cam-1")
        with pytest.raises(ProcessError):  # the stuck process was replaced: the request failed, loudly
            hung.result(timeout=60)
        assert _wait_for(lambda: proc.supervisor_restarts and proc.is_ready(), timeout=60)
        assert "cell 'c0' (sid 'cam-1') was stuck" in proc.supervisor_restarts[0]
        assert proc.predict({"x": 1}, sid="cam-1").result(timeout=30) == {"y": Integer(2)}
        if runtime_name == "local":
            os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
            assert _wait_for(lambda: len(proc.supervisor_restarts) == 2 and proc.is_ready(), timeout=60)
            assert "the process failed" in proc.supervisor_restarts[1]
            assert proc.predict({"x": 2}, sid="cam-1").result(timeout=30) == {"y": Integer(3)}


class HoldsTheInterpreter(Cell):
    """x == 99 runs a regular expression that backtracks for ages in one C call holding the GIL; otherwise x + 1."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 99:
            re.match(r"(a+)+$", "a" * 64 + "b")
        return YOut(y=Integer(inputs.x + 1))


def test_the_supervisor_restarts_a_process_that_cannot_answer_because_a_call_holds_the_interpreter() -> None:
    """Such a process can neither report the call stuck nor expire deadlines: the supervisor counts its silence."""
    from rvai_sdk.exc import ProcessError
    from rvai_sdk.runtime import init

    inference = Inference(pipeline=single(HoldsTheInterpreter), stuck_after=1, supervise=True)
    with init("local") as rt, rt.start_inference(inference) as proc:
        assert proc.predict({"x": 1}, sid="cam-1").result(timeout=30) == {"y": Integer(2)}
        hog = proc.predict({"x": 99}, sid="cam-1", timeout=2)
        with pytest.raises(ProcessError):  # the mute process was replaced: the request failed, loudly
            hog.result(timeout=60)
        assert _wait_for(lambda: proc.supervisor_restarts and proc.is_ready(), timeout=60)
        assert "did not answer" in proc.supervisor_restarts[0]
        assert proc.predict({"x": 1}, sid="cam-1").result(timeout=30) == {"y": Integer(2)}


def test_a_long_model_reload_is_not_taken_for_a_mute_process(tmp_path: Path) -> None:
    """stats() and readiness answer while set_models loads (they queued behind it: the supervisor saw a process
    that did not answer and killed it right after a successful reload)."""
    from rvai_sdk.runtime import init

    first, second = tmp_path / "m1", tmp_path / "m2"
    first.mkdir()
    second.mkdir()
    inference = Inference(pipeline=single(LoadsWhenLetIn), models={"c0": str(first)}, stuck_after=1, supervise=True)
    with init("local") as rt, rt.start_inference(inference) as proc:
        (second / "gate").touch()
        swapping = threading.Thread(target=proc.set_models, args=({"c0": str(second)},), daemon=True)
        swapping.start()
        try:
            assert _wait_for(lambda: (second / "entered").exists(), timeout=60), "the reload never began"
            answered: list[Any] = []
            asking = threading.Thread(target=lambda: answered.append((proc.stats(), proc.is_ready())), daemon=True)
            asking.start()
            asking.join(30)  # the reload waits far longer: only an answer that does not queue behind it returns
            assert answered and answered[0][1], "stats() or readiness waited for the reload"
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(2)}  # served meanwhile
        finally:
            (second / "gate").unlink()
        swapping.join(60)
        assert not swapping.is_alive()
        assert proc.get_models() == {"c0": str(second)}
        assert proc.supervisor_restarts == []


def test_the_debug_runtime_refuses_the_supervisor_with_a_clear_error(sync: SyncServer) -> None:
    from rvai_sdk.exc import ParameterError
    from rvai_sdk.runtime import init

    with init("debug") as rt:
        with pytest.raises(ParameterError, match="debug runtime cannot do"):
            rt.start_inference(Inference(pipeline=single(AddOne), supervise=True))


def test_over_http_bad_outputs_are_a_500_naming_cell_and_field_and_the_server_keeps_answering(runtime: Runtime) -> None:
    require_extra("fastapi")
    import httpx

    from rvai_sdk.extensions.drivers.fast_api_driver import FastAPIDriver

    with runtime.start_inference(Inference(pipeline=single(BadOutputs))) as proc:
        http = proc.add_driver("webapi", FastAPIDriver)
        base = f"http://127.0.0.1:{http.get_service('http')['port']}"
        with httpx.Client(base_url=base, timeout=30) as client:
            assert _wait_for(lambda: _ready_status(client) == 200)
            for x, found in ((1, "not set"), (3, "holds str 'not a number'")):
                answer = client.post("/predict", json={"inputs": {"x": x}, "sid": f"s{x}"})
                assert answer.status_code == 500, answer.text
                error = answer.json()["error"]
                assert error["cell"] == "c0" and "output field 'y'" in error["message"] and found in error["message"]
                assert "AttributeError" not in answer.text
            answers = [client.post("/predict", json={"inputs": {"x": 10 + i}, "sid": f"s{i % 3}"}) for i in range(6)]
            assert [a.json()["outputs"] for a in answers] == [{"y": 11 + i} for i in range(6)]
            assert _ready_status(client) == 200
