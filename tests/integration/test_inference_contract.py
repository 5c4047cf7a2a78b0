"""The inference contract every runtime must keep: outputs, state, errors, parameters, life cycle."""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.drivers import PipelineDriver
from rvai_sdk.exc import (
    CellError,
    DeadlockError,
    InputValidationError,
    ParameterError,
    ProcessStateError,
    UnknownRuntimeError,
    UnknownSidError,
)
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.resources import DriverResources
from rvai_sdk.runtime import BatchingPolicy, Inference, ProcessStatus, RestrictedInferenceProcess, Runtime, init
from rvai_sdk.types import Integer, List, String
from tests._sync import Sync, SyncServer, eventually
from tests.conftest import (
    AddOne,
    LoadsWhenLetIn,
    Seen,
    SeqOut,
    BatchRemember,
    Count,
    FailNegative,
    Remember,
    Scale,
    ScaleParams,
    XIn,
    YOut,
    chain_pipeline,
    diamond_pipeline,
    single,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sync() -> Iterator[SyncServer]:
    server = SyncServer()
    yield server
    server.close()


def test_predict_returns_typed_outputs_by_output_ref(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(AddOne))) as proc:
        out = proc.predict({"x": Integer(1)}).result(timeout=10)
    assert out == {"y": 2}
    assert type(out["y"]) is Integer


def test_plain_lossless_inputs_are_coerced(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(AddOne))) as proc:
        assert proc.predict({"x": 41}).result(timeout=10)["y"] == 42
        assert proc.predict({"x": 2.0}).result(timeout=10)["y"] == 3


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"x": "one"}, r"input 'x': expected Integer, got str"),
        ({"x": 1.5}, r"input 'x': expected Integer"),
        ({}, r"missing input 'x' \(Integer\)"),
        ({"x": 1, "z": 2}, r"has no input 'z'; its inputs are: x"),
    ],
)
def test_bad_inputs_raise_input_validation_error_naming_the_input(
    runtime: Runtime, inputs: dict[str, Any], match: str
) -> None:
    with runtime.start_inference(Inference(pipeline=single(AddOne))) as proc:
        with pytest.raises(InputValidationError, match=match):
            proc.predict(inputs)
        assert proc.predict({"x": 1}).result(timeout=10) == {"y": 2}


def test_a_sid_that_is_not_a_string_is_rejected(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(AddOne))) as proc:
        with pytest.raises(InputValidationError, match="sid must be a str or None, got int"):
            proc.predict({"x": 1}, sid=7)  # type: ignore[arg-type]


def test_five_cell_diamond_with_fan_in_computes_every_branch(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=diamond_pipeline())) as proc:
        outs = [proc.predict({"x": x}, sid="s").result(timeout=10) for x in range(5)]
    for x, out in enumerate(outs):
        assert out["sum"] == 2 * (x + 1) + (x + 1)
        assert out["count"] == x + 1
        assert list(out["seen"]) == [v + 1 for v in range(x + 1)]


@pytest.mark.timeout(180)
def test_hundred_interleaved_sids_each_keep_their_own_state_sequence(runtime: Runtime) -> None:
    rng = random.Random(7)
    sids = [f"cam-{i}" for i in range(100)]
    sends = [(sid, step) for step in range(8) for sid in sids]
    rng.shuffle(sends)
    # keep each sid's own sends in step order while interleaving sids randomly
    per_sid: dict[str, int] = {}
    ordered = []
    for sid, _ in sends:
        per_sid[sid] = per_sid.get(sid, 0) + 1
        ordered.append((sid, per_sid[sid] * 10 + int(sid.split("-")[1]) * 1000))
    with runtime.start_inference(Inference(pipeline=diamond_pipeline())) as proc:
        futures = [(sid, x, proc.predict({"x": x}, sid=sid)) for sid, x in ordered]
        done, _ = wait([f for _, _, f in futures], timeout=120)  # a bound (800 requests on a loaded machine)
        assert len(done) == len(futures)
        expected: dict[str, list[int]] = {}
        for sid, x, future in futures:
            expected.setdefault(sid, []).append(x + 1)
            out = future.result()
            assert list(out["seen"]) == expected[sid], f"sid {sid} saw its inputs out of order"
            assert out["count"] == len(expected[sid])
        assert sorted(proc.sids()) == sorted(sids)


def test_sid_none_runs_with_fresh_state_that_is_not_kept(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        assert [proc.predict({"x": 0}).result(timeout=10)["y"] for _ in range(3)] == [1, 1, 1]
        assert proc.sids() == []
        assert [proc.predict({"x": 0}, sid="a").result(timeout=10)["y"] for _ in range(3)] == [1, 2, 3]


def test_a_failing_cell_fails_only_its_request_with_ref_sid_and_traceback(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=chain_pipeline(AddOne, FailNegative))) as proc:
        futures = [proc.predict({"x": x}, sid=f"s{x}") for x in (-5, 3, -2, 4)]
        with pytest.raises(CellError, match=r"cell 'c1' \(FailNegative\) failed for sid 's-5': ValueError: negative input -4") as info:
            futures[0].result(timeout=10)
        assert info.value.ref == "c1"
        assert info.value.sid == "s-5"
        assert info.value.cause_type == "ValueError"
        assert "raise ValueError" in info.value.remote_traceback
        assert str(info.value).count("Original traceback:") == 1
        assert futures[1].result(timeout=10) == {"y": 4}
        with pytest.raises(CellError):
            futures[2].result(timeout=10)
        assert futures[3].result(timeout=10) == {"y": 5}
        assert proc.status is ProcessStatus.RUNNING
        stats = proc.stats()
        assert stats["requests"]["failed"] == 2
        assert stats["requests"]["succeeded"] == 2


class WrongReturn(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return {"y": 1}  # type: ignore[return-value]


@dataclass
class StrOut(Outputs):
    y: Integer = Outputs.field()


class WrongValue(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> StrOut:
        return StrOut(y="not a number")  # type: ignore[arg-type]


def test_a_cell_returning_the_wrong_type_fails_the_request_naming_the_cell(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(WrongReturn))) as proc:
        with pytest.raises(CellError, match=r"cell 'c0' \(WrongReturn\).*returned dict; it must return YOut"):
            proc.predict({"x": 1}).result(timeout=10)
    with runtime.start_inference(Inference(pipeline=single(WrongValue))) as proc:
        with pytest.raises(CellError, match=r"StrOut\.y: expected Integer, got str"):
            proc.predict({"x": 1}).result(timeout=10)


def test_parameters_take_effect_for_the_next_request(runtime: Runtime) -> None:
    inference = Inference(pipeline=single(Scale), parameters={"c0": ScaleParams(factor=3)})
    with runtime.start_inference(inference) as proc:
        assert proc.predict({"x": 2}).result(timeout=10) == {"value": 6.0}
        proc.set_parameters({"c0": {"offset": 1.5}})
        assert proc.predict({"x": 2}).result(timeout=10) == {"value": 7.5}
        params = proc.get_parameters()["c0"]
        assert isinstance(params, ScaleParams)
        assert (params.factor, params.offset) == (3, 1.5)
        proc.set_parameters({"c0": ScaleParams(factor=10)})
        assert proc.predict({"x": 2}).result(timeout=10) == {"value": 20.0}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"c0": {"offset": 11.0}}, ParameterError, r"ScaleParams\.offset: .*11"),
        ({"c0": {"factor": "big"}}, ParameterError, r"ScaleParams\.factor: expected Integer"),
        ({"c0": {"nope": 1}}, ParameterError, r"cell 'c0': ScaleParams has no parameter 'nope'"),
        ({"zz": {"factor": 1}}, ParameterError, r"unknown cell ref 'zz'"),
        ({"c0": 5}, ParameterError, r"parameters for cell 'c0' must be a ScaleParams"),
    ],
)
def test_rejected_parameters_name_the_field_and_change_nothing(
    runtime: Runtime, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    with runtime.start_inference(Inference(pipeline=single(Scale))) as proc:
        with pytest.raises(error, match=match):
            proc.set_parameters(change)
        assert proc.predict({"x": 2}).result(timeout=10) == {"value": 4.0}


def test_inference_rejects_unknown_refs_and_bad_parameters_up_front() -> None:
    pipeline = single(Scale)
    with pytest.raises(ParameterError, match="unknown cell ref 'nope'"):
        Inference(pipeline=pipeline, parameters={"nope": {}})
    with pytest.raises(ParameterError, match=r"ScaleParams\.offset"):
        Inference(pipeline=pipeline, parameters={"c0": {"offset": 100.0}})
    with pytest.raises(ParameterError, match="names unknown cell ref 'x9'"):
        Inference(pipeline=pipeline, models={"x9": "/tmp/m"})
    with pytest.raises(ParameterError, match="has no call_batch"):
        Inference(pipeline=pipeline, batching={"c0": BatchingPolicy()})


@dataclass
class ModelParams(Parameters):
    weights: String = Parameters.field(default=String("v1"))
    threshold: Integer = Parameters.field(default=Integer(0))


class WithModel(Cell):
    """Logs each load to ``<model_path>.log`` (readable from the test whatever process loads it)."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: ModelParams, model_path: str | None) -> Any:
        assert model_path is not None
        with open(model_path + ".log", "a") as log:
            log.write(f"{context.ref} {parameters.weights} {model_path}\n")
        return {"weights": str(parameters.weights)}

    @classmethod
    def call(cls, context: InferenceContext, parameters: ModelParams, inputs: XIn) -> YOut:
        assert context.model is not None
        return YOut(y=inputs.x + (100 if context.model["weights"] == "v2" else 0) + parameters.threshold)


def test_load_model_runs_once_and_again_only_when_a_parameter_it_read_changes(runtime: Runtime, tmp_path: Path) -> None:
    model = str(tmp_path / "m.pt")

    def loads() -> list[str]:
        return Path(model + ".log").read_text().splitlines()

    inference = Inference(pipeline=single(WithModel), models={"c0": model})
    with runtime.start_inference(inference) as proc:
        assert loads() == [f"c0 v1 {model}"]
        assert [proc.predict({"x": 1}).result(timeout=10)["y"] for _ in range(3)] == [1, 1, 1]
        proc.set_parameters({"c0": {"threshold": 5}})
        assert len(loads()) == 1, "threshold is not read by load_model: no reload"
        assert proc.predict({"x": 1}).result(timeout=10)["y"] == 6
        proc.set_parameters({"c0": {"weights": "v2"}})
        assert loads() == [f"c0 v1 {model}", f"c0 v2 {model}"]
        assert proc.predict({"x": 1}).result(timeout=10)["y"] == 106


class BrokenModel(Cell):
    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        raise FileNotFoundError("no weights at /nowhere")

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return YOut(y=inputs.x)


def test_a_failing_load_model_fails_start_inference_naming_the_cell(runtime: Runtime) -> None:
    with pytest.raises(CellError, match=r"load_model of cell 'c0' \(BrokenModel\) failed: FileNotFoundError"):
        runtime.start_inference(Inference(pipeline=single(BrokenModel)))


def test_drop_state_makes_the_next_request_start_fresh(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        assert [proc.predict({"x": 0}, sid="a").result(timeout=10)["y"] for _ in range(2)] == [1, 2]
        assert proc.get_state("a")["c0"].n == 2
        proc.drop_state("a")
        with pytest.raises(UnknownSidError, match="no state is kept for sid 'a'"):
            proc.get_state("a")
        with pytest.raises(UnknownSidError, match="no state is kept for sid 'a'"):
            proc.drop_state("a")
        assert proc.predict({"x": 0}, sid="a").result(timeout=10)["y"] == 1


def test_kept_states_are_bounded_dropping_the_least_recently_used(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(Count), max_states=3)) as proc:
        for sid in ["a", "b", "c", "d", "a", "e"]:
            proc.predict({"x": 0}, sid=sid).result(timeout=10)
        assert proc.sids() == ["d", "a", "e"]
        assert proc.stats()["sids"]["evicted"] == 3
        # 'a' was evicted after its first request, so its second kept state started over
        assert proc.predict({"x": 0}, sid="a").result(timeout=10)["y"] == 2
        assert proc.predict({"x": 0}, sid="b").result(timeout=10)["y"] == 1
        assert proc.sids() == ["e", "a", "b"]


def test_stop_is_idempotent_and_predict_after_stop_names_the_state(runtime: Runtime) -> None:
    proc = runtime.start_inference(Inference(pipeline=single(AddOne)))
    assert proc.status is ProcessStatus.RUNNING
    proc.stop()
    proc.stop()
    assert proc.status is ProcessStatus.STOPPED
    with pytest.raises(ProcessStateError, match="is STOPPED") as info:
        proc.predict({"x": 1})
    assert info.value.state == "STOPPED"


class IdleDriver(PipelineDriver):
    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        self.wait_stopped()


def slow_to_open_driver(address: str) -> IdleDriver:
    """A driver whose construction (a camera opening) waits for the event 'open', once it set 'constructing'."""
    sync = Sync(address)
    sync.set("constructing")
    sync.wait("open", timeout=30)
    return IdleDriver()


def test_a_driver_still_starting_when_the_process_stops_is_stopped_and_add_driver_says_so(
    runtime: Runtime, sync: SyncServer
) -> None:
    """stop() stops the drivers it sees; one that finished starting after it used to run on, attached to a
    stopped process, past rt.stop() too."""
    proc = runtime.start_inference(Inference(pipeline=single(AddOne)))
    outcome: list[Any] = []

    def add() -> None:
        try:
            outcome.append(proc.add_driver("cam", slow_to_open_driver, sync.address))
        except Exception as exc:
            outcome.append(exc)

    adding = threading.Thread(target=add, daemon=True)
    adding.start()
    try:
        assert Sync(sync.address).wait("constructing", timeout=30), "the driver never started"
        proc.stop()
    finally:
        sync.set("open")
    adding.join(60)
    assert not adding.is_alive(), "add_driver never returned"
    assert len(outcome) == 1 and isinstance(outcome[0], ProcessStateError), outcome
    assert "stopped while driver 'cam' started" in str(outcome[0])
    assert not any(driver.is_alive() for driver in proc.list_drivers())


def test_a_stop_during_a_restart_leaves_nothing_running_and_restart_says_it_was_stopped(
    runtime: Runtime, tmp_path: Path
) -> None:
    name = f"restart-race-{uuid.uuid4().hex[:8]}"
    proc = runtime.start_inference(Inference(pipeline=single(LoadsWhenLetIn, name=name), models={"c0": str(tmp_path)}))
    (tmp_path / "gate").touch()  # the restart's load waits
    errors: list[BaseException] = []

    def restart() -> None:
        try:
            proc.restart()
        except BaseException as exc:
            errors.append(exc)

    restarting = threading.Thread(target=restart, daemon=True)
    restarting.start()
    try:
        eventually(lambda: (tmp_path / "entered").exists(), "the restart to load its model")
        proc.stop()
    finally:
        (tmp_path / "gate").unlink()
    restarting.join(60)
    assert not restarting.is_alive(), "restart never returned"
    assert len(errors) == 1 and isinstance(errors[0], ProcessStateError), errors
    assert "was stopped while it started" in str(errors[0])
    assert proc.status is ProcessStatus.STOPPED
    # what the restart launched was stopped too: no executor of this pipeline runs in this process (debug)
    eventually(lambda: not [t for t in threading.enumerate() if t.name.startswith(f"rvai-{name}-")], "its threads to end")


def _pipeline_built_beside_a_connection() -> tuple[Any, Any]:
    """Data classes and a cell defined in a function that also holds what no cell uses: an open database."""
    import sqlite3

    log_db = sqlite3.connect(":memory:")  # the caller's: it must not travel with the classes (it cannot)
    ballast = np.zeros(1_000_000)  # nor 8 MB of the caller's data

    @dataclass
    class InnerIn(Inputs):
        x: Integer = Inputs.field()

    @dataclass
    class InnerOut(Outputs):
        y: Integer = Outputs.field()

    class Inner(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: InnerIn) -> InnerOut:
            return InnerOut(y=Integer(inputs.x + 1))

    pf = PipelineFactory(name="inner")
    node = pf.add_cell(ref="c", cell=Inner())
    pf.declare_input(ref="x", input=node.inputs.x)
    pf.declare_output(ref="y", output=node.outputs.y)
    assert ballast.size and "log_db" not in (getattr(InnerIn, "_rvai_localns", None) or {})
    return pf.build(), log_db


def test_classes_defined_in_a_function_take_only_the_names_their_annotations_use(runtime: Runtime) -> None:
    """They kept the function's whole scope: on local and ray an unpicklable local (a connection) failed the
    start, and a large one was sent to every child process, while the debug runtime ran the same code."""
    pipeline, log_db = _pipeline_built_beside_a_connection()
    try:
        with runtime.start_inference(Inference(pipeline=pipeline)) as proc:
            assert proc.predict({"x": 1}).result(timeout=30) == {"y": Integer(2)}
    finally:
        log_db.close()


def test_runtime_stop_stops_its_processes_and_refuses_new_ones() -> None:
    rt = init("debug")
    proc = rt.start_inference(Inference(pipeline=single(AddOne)))
    assert rt.list_inferences() == [proc]
    rt.stop()
    assert proc.status is ProcessStatus.STOPPED
    with pytest.raises(ProcessStateError, match="runtime is stopped"):
        rt.start_inference(Inference(pipeline=single(AddOne)))


def test_unknown_runtime_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownRuntimeError, match=r"unknown runtime 'gpu-cluster'; valid runtimes: debug, local, ray"):
        init("gpu-cluster")


@cell(state=Seen, max_batch_size=8, max_batch_wait=0.05)
class LoggedBatchRemember(Cell):
    """BatchRemember that logs each batch's sids as a line of ``<model_path>`` (readable across processes)."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        return model_path

    @classmethod
    def call_batch(
        cls, contexts: list[InferenceContext], parameters: Parameters, inputs_list: list[XIn]
    ) -> list[SeqOut]:
        with open(context_log(contexts), "a") as log:
            log.write(" ".join(str(c.sid) for c in contexts) + "\n")
        outs = []
        for context, inputs in zip(contexts, inputs_list):
            context.state.xs = List[Integer]([*context.state.xs, inputs.x])
            outs.append(SeqOut(y=inputs.x, seen=context.state.xs))
        return outs


def context_log(contexts: list[InferenceContext]) -> str:
    path: str = contexts[0].model
    return path


def test_batched_cell_gets_distinct_sids_per_batch_and_matches_one_by_one_results(
    runtime: Runtime, tmp_path: Path
) -> None:
    sids = [f"s{i}" for i in range(32)]
    sends = [(sid, 100 + 40 * step + i) for step in range(6) for i, sid in enumerate(sids)]
    with runtime.start_inference(Inference(pipeline=single(Remember))) as proc:
        reference = [proc.predict({"x": x}, sid=sid).result(timeout=10) for sid, x in sends]
    log = tmp_path / "batches.log"
    with runtime.start_inference(Inference(pipeline=single(LoggedBatchRemember), models={"c0": str(log)})) as proc:
        futures = [proc.predict({"x": x}, sid=sid) for sid, x in sends]
        results = [f.result(timeout=30) for f in futures]
        stats = proc.stats()["cells"]["c0"]
    assert [dict(r) for r in results] == [dict(r) for r in reference]
    batches = [line.split() for line in log.read_text().splitlines()]
    assert batches, "the batched cell was never called"
    for batch_sids in batches:
        assert len(batch_sids) <= 8
        assert len(set(batch_sids)) == len(batch_sids), f"a batch held one sid twice: {batch_sids}"
    assert max(len(b) for b in batches) > 1, "no batch held more than one request"
    assert sum(stats["batch_sizes"].values()) == stats["calls"]
    assert stats["items"] == len(sends)


def test_one_failing_item_of_a_batch_fails_alone(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(BatchRemember))) as proc:
        futures = {x: proc.predict({"x": x}, sid=f"s{x}") for x in (11, 12, 13, 14)}
        with pytest.raises(CellError, match="unlucky 13") as info:
            futures[13].result(timeout=10)
        assert info.value.sid == "s13"
        assert [futures[x].result(timeout=10)["y"] for x in (11, 12, 14)] == [11, 12, 14]


def test_a_lone_request_to_a_batched_cell_does_not_wait_for_the_batch_to_fill(runtime: Runtime) -> None:
    inference = Inference(pipeline=single(BatchRemember), batching={"c0": BatchingPolicy(max_batch_size=64, max_batch_wait=600)})
    with runtime.start_inference(inference) as proc:
        assert proc.predict({"x": 1}, sid="a").result(timeout=10)["y"] == 1


class SyncCell(Cell):
    """A cell whose model is a :class:`Sync` client on the test's server (its model path is the address)."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        assert model_path is not None
        return Sync(model_path)


class Gate(SyncCell):
    """Passes x through, but holds x == 99 until the event 'gate' is set."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 99:
            assert context.model.wait("gate", timeout=30)
        return YOut(y=inputs.x)


def test_a_batch_is_dispatched_after_max_wait_while_others_are_still_upstream(runtime: Runtime, sync: SyncServer) -> None:
    pf = PipelineFactory(name="gated")
    gate = pf.add_cell(ref="gate", cell=Gate())
    remember = pf.add_cell(ref="remember", cell=BatchRemember())
    pf.declare_input(ref="x", input=gate.inputs.x)
    pf.connect(gate.outputs.y, remember.inputs.x)
    pf.declare_output(ref="y", output=remember.outputs.y)
    inference = Inference(
        pipeline=pf.build(),
        models={"gate": sync.address},
        batching={"remember": BatchingPolicy(max_batch_size=8, max_batch_wait=0.02)},
    )
    with runtime.start_inference(inference) as proc:
        first = proc.predict({"x": 1}, sid="a")
        held = proc.predict({"x": 99}, sid="b")
        try:
            # The batch of `first` cannot fill (`held` is stuck upstream): it must go after max_batch_wait.
            assert first.result(timeout=20) == {"y": 1}
            assert not held.done()
        finally:
            sync.set("gate")
        assert held.result(timeout=10) == {"y": 99}


class Stage1(SyncCell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 2:
            context.model.set("stage1-has-2")
        return YOut(y=inputs.x)


class Stage2(SyncCell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 1:
            # Request 1 holds stage 2 until request 2 has reached stage 1: that needs pipelining.
            assert context.model.wait("stage1-has-2", timeout=20), "stage 1 did not run request 2 while stage 2 ran request 1"
        return YOut(y=inputs.x)


def test_consecutive_requests_pipeline_through_the_cells(runtime: Runtime, sync: SyncServer) -> None:
    inference = Inference(pipeline=chain_pipeline(Stage1, Stage2), models={"c0": sync.address, "c1": sync.address})
    with runtime.start_inference(inference) as proc:
        futures = [proc.predict({"x": x}, sid="same") for x in (1, 2)]
        assert [f.result(timeout=30)["y"] for f in futures] == [1, 2]


class BranchA(SyncCell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        assert context.model.barrier("branches", 2, timeout=20), "branch b never ran alongside branch a"
        return YOut(y=inputs.x + 1)


class BranchB(SyncCell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        assert context.model.barrier("branches", 2, timeout=20), "branch a never ran alongside branch b"
        return YOut(y=inputs.x + 2)


def test_independent_branches_run_at_the_same_time(runtime: Runtime, sync: SyncServer) -> None:
    from tests.conftest import Sum

    pf = PipelineFactory(name="branches")
    a = pf.add_cell(ref="a", cell=BranchA())
    b = pf.add_cell(ref="b", cell=BranchB())
    s = pf.add_cell(ref="s", cell=Sum())
    pf.declare_input(ref="x", input=a.inputs.x)
    pf.declare_input(ref="x", input=b.inputs.x)
    pf.connect(a.outputs.y, s.inputs.x)
    pf.connect(b.outputs.y, s.inputs.y)
    pf.declare_output(ref="y", output=s.outputs.y)
    inference = Inference(pipeline=pf.build(), models={"a": sync.address, "b": sync.address})
    with runtime.start_inference(inference) as proc:
        assert proc.predict({"x": 1}).result(timeout=30) == {"y": 5}


def test_context_managers_stop_process_and_runtime() -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(AddOne))) as proc:
        assert proc.predict({"x": 1}, sid="cam-1").result(timeout=10) == {"y": 2}
    assert proc.status is ProcessStatus.STOPPED
    assert rt.list_inferences() == []


class Gates(SyncCell):
    """Passes x through; holds x == 1 until the event 'open-1' is set, and x == 99 until 'open-99' is."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x in (1, 99):
            assert context.model.wait(f"open-{inputs.x}", timeout=30)
        return YOut(y=inputs.x)


def test_a_completion_callback_that_waits_on_its_own_process_raises_deadlock_error_at_once(
    runtime: Runtime, sync: SyncServer
) -> None:
    # A callback runs on the thread that delivers the process's answers (the link's reader, Ray's
    # callback thread, an executor worker): a wait there for another answer could never end on
    # local and ray. Every runtime refuses it at once, naming the call; sending and chaining work.
    inference = Inference(pipeline=single(Gates), models={"c0": sync.address})
    with runtime.start_inference(inference) as proc:
        refused: dict[str, str] = {}
        tried = threading.Event()
        chained: Future[Any] = Future()

        def callback(first: Future[dict[str, Any]]) -> None:
            held = proc.predict({"x": 99})  # held by the gate until the test opens it: not done here
            for name, waits in (
                ("result()", held.result),
                ("exception()", held.exception),
                ("get_parameters()", proc.get_parameters),
                ("stats()", proc.stats),
            ):
                try:
                    waits()
                except DeadlockError as exc:
                    refused[name] = str(exc)
            held.add_done_callback(lambda done: chained.set_result(done.result()))
            tried.set()

        proc.predict({"x": 1}).add_done_callback(callback)  # held: the callback runs where answers arrive
        sync.set("open-1")
        assert tried.wait(30), "the callback never ran to its end: a wait in it hung"
        sync.set("open-99")
        assert chained.result(timeout=30) == {"y": 99}
        assert proc.predict({"x": 2}).result(timeout=10) == {"y": 2}
    assert sorted(refused) == ["exception()", "get_parameters()", "result()", "stats()"]
    for name, message in refused.items():
        assert message.startswith(f"{name} was called from a completion callback") and "'single'" in message
