"""The local runtime with real processes: crashes, restarts, shared memory, GPUs, and the parent dying."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.drivers import PipelineDriver
from rvai_sdk.exc import ProcessError, ProcessStateError
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.resources import CellResources, DriverResources
from rvai_sdk.runtime import Inference, ProcessStatus, RestrictedInferenceProcess, Runtime, init
from rvai_sdk.types import Image, Integer
from tests._sync import Sync, SyncServer, eventually
from tests.conftest import Count, ScaleParams, XIn, YOut, single
from tests.integration.test_drivers import wait_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local() -> Iterator[Runtime]:
    rt = init("local")
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture
def sync() -> Iterator[SyncServer]:
    server = SyncServer()
    yield server
    server.close()


@cell(concurrency=8)
class Hold(Cell):
    """x < 0 exits the process with code -x; x == 99 blocks until the event 'release' is set."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        return Sync(model_path) if model_path else None

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x < 0:
            os._exit(-int(inputs.x))
        if inputs.x == 99:
            context.model.wait("release", timeout=60)
        return YOut(y=inputs.x)


class Prober(PipelineDriver):
    """Sends a request every few milliseconds; counts successes and the error types it sees."""

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        self.ok = 0
        self.errors: dict[str, int] = {}
        while not self.stopped.wait(0.005):
            try:
                inference.predict({"x": 1}, sid="probe").result(timeout=30)
                self.ok += 1
            except Exception as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1

    def stats(self) -> dict[str, Any]:
        return {"ok": getattr(self, "ok", 0), "errors": dict(getattr(self, "errors", {}))}


@pytest.mark.parametrize("how", ["sigkill", "os._exit in a cell"])
def test_a_dead_inference_process_fails_pending_futures_promptly_and_restart_brings_it_back(
    local: Runtime, sync: SyncServer, how: str
) -> None:
    proc = local.start_inference(Inference(pipeline=single(Hold), models={"c0": sync.address}))
    prober = proc.add_driver("prober", Prober)
    wait_until(lambda: prober.stats()["ok"] > 0, what="the driver's first success")
    pending = [proc.predict({"x": 99}, sid=f"s{i}") for i in range(5)]
    pid = proc.pid
    assert pid is not None
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
        expected = "killed by signal SIGKILL"
    else:
        proc.predict({"x": -3}, sid="exit")
        expected = "exited with code 3"
    done, not_done = wait(pending, timeout=2.0)
    assert not not_done, "pending futures must fail within 2 s of the process dying"
    for future in done:
        with pytest.raises(ProcessError, match=rf"lost the inference process of pipeline 'single' \(.*{expected}\)"):
            future.result()
    wait_until(lambda: proc.status is ProcessStatus.FAILED, what="status FAILED")
    assert proc.failure is not None and expected in proc.failure
    with pytest.raises(ProcessStateError, match="is FAILED"):
        proc.predict({"x": 1})
    wait_until(lambda: prober.stats()["errors"].get("ProcessError", 0) > 0, what="the driver to see ProcessError")
    assert prober.status is ProcessStatus.RUNNING, "a dead inference process does not take its drivers down"

    proc.restart()
    assert proc.status is ProcessStatus.RUNNING
    assert proc.pid != pid
    assert proc.predict({"x": 5}, sid="again").result(timeout=10) == {"y": 5}
    ok_before = prober.stats()["ok"]
    wait_until(lambda: prober.stats()["ok"] > ok_before, what="the driver to be served by the new process")
    assert [d.ref for d in proc.list_drivers()] == ["prober"]
    proc.stop()


def test_restart_keeps_parameters_and_starts_state_fresh(local: Runtime) -> None:
    with local.start_inference(Inference(pipeline=single(Count))) as proc:
        assert [proc.predict({"x": 0}, sid="a").result(timeout=10)["y"] for _ in range(2)] == [1, 2]
        proc.restart()
        assert proc.sids() == []
        assert proc.predict({"x": 0}, sid="a").result(timeout=10)["y"] == 1
    from tests.conftest import Scale

    with local.start_inference(Inference(pipeline=single(Scale))) as proc:
        proc.set_parameters({"c0": ScaleParams(factor=Integer(5))})
        proc.restart()
        assert proc.predict({"x": 2}).result(timeout=10) == {"value": 10.0}
        proc.set_parameters({"c0": {"offset": 1.0}})
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        wait_until(lambda: proc.status is ProcessStatus.FAILED, what="status FAILED")
        proc.restart()
        assert proc.predict({"x": 2}).result(timeout=10) == {"value": 11.0}, "parameters survive a crash"


class Exits(PipelineDriver):
    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        inference.predict({"x": 1}).result(timeout=30)
        os._exit(9)


def test_a_driver_process_dying_is_reported_and_nothing_else_stops(local: Runtime) -> None:
    from tests.integration.test_drivers import CountingDriver, results_of

    with local.start_inference(Inference(pipeline=single(Count))) as proc:
        healthy = proc.add_driver("healthy", CountingDriver)
        dying = proc.add_driver("dying", Exits)
        wait_until(lambda: dying.status is ProcessStatus.FAILED, what="the dying driver to be FAILED")
        assert dying.failure == f"driver 'dying' (pid {dying.pid}) exited with code 9"
        assert not dying.is_alive()
        assert results_of(healthy, 3) == [1, 2, 3]
        assert proc.predict({"x": 0}, sid="z").result(timeout=10) == {"y": 1}


@pytest.fixture
def shm_entries() -> Iterator[set[str]]:
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield before


def image_pipeline() -> Any:
    from dataclasses import dataclass

    @dataclass
    class FrameIn(Inputs):
        frame: Image = Inputs.field()
        extra: Integer = Inputs.field()

    @dataclass
    class FrameOut(Outputs):
        frame: Image = Outputs.field()
        mean: Integer = Outputs.field()

    class Identity(Cell):
        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameIn) -> FrameOut:
            return FrameOut(frame=inputs.frame, mean=Integer(int(inputs.frame[:8, :8].mean()) + inputs.extra))

    pf = PipelineFactory(name="frames")
    cell = pf.add_cell(ref="identity", cell=Identity())
    pf.declare_input(ref="frame", input=cell.inputs.frame)
    pf.declare_input(ref="extra", input=cell.inputs.extra)
    pf.declare_output(ref="frame", output=cell.outputs.frame)
    pf.declare_output(ref="mean", output=cell.outputs.mean)
    return pf.build()


def test_large_frames_round_trip_exactly_through_a_reused_shared_memory_pool(local: Runtime, shm_entries: set[str]) -> None:
    rng = np.random.default_rng(1)
    frames = [Image(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)) for _ in range(3)]
    small = Image(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
    with local.start_inference(Inference(pipeline=image_pipeline())) as proc:

        def returned() -> bool:  # the slots of all but the last request came back
            pool = proc._backend.pool  # type: ignore[attr-defined]
            return pool is None or pool.stats()["leased"] <= 1

        for i in range(12):
            frame = frames[i % 3]
            # A frame's slot comes back when the inference process drops the frame and its release thread
            # says so: the last request's stays leased until the next one, and on a loaded machine earlier
            # ones can still be on their way when the next is sent. Wait for those, so that reuse is measured.
            eventually(returned, "the earlier requests' shared-memory slots came back")
            out = proc.predict({"frame": frame, "extra": i}, sid="cam").result(timeout=30)
            assert type(out["frame"]) is Image
            assert np.array_equal(out["frame"], frame)
            assert out["mean"] == int(frame[:8, :8].mean()) + i
            del out
        out = proc.predict({"frame": small, "extra": 0}).result(timeout=10)
        assert np.array_equal(out["frame"], small)
        pool = proc._backend.pool  # type: ignore[attr-defined]
        assert pool is not None
        assert 1 <= pool.stats()["slots"] <= 3, f"slots are reused, not made per request: {pool.stats()}"
        held = proc.predict({"frame": frames[0], "extra": 0}).result(timeout=10)["frame"]
        assert np.array_equal(held, frames[0]), "a result stays valid while held, whatever is sent after it"
        for frame in frames:
            proc.predict({"frame": frame, "extra": 0}).result(timeout=10)
        assert np.array_equal(held, frames[0])
    assert set(os.listdir("/dev/shm")) <= shm_entries


def test_no_shared_memory_outlives_a_killed_inference_process(local: Runtime, shm_entries: set[str]) -> None:
    frame = Image(np.full((720, 1280, 3), 7, dtype=np.uint8))
    proc = local.start_inference(Inference(pipeline=image_pipeline()))
    assert proc.predict({"frame": frame, "extra": 1}).result(timeout=30)["mean"] == 8
    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
    wait_until(lambda: proc.status is ProcessStatus.FAILED, what="status FAILED")
    proc.stop()
    assert set(os.listdir("/dev/shm")) <= shm_entries


def test_no_child_survives_its_parent_being_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            from rvai_sdk.runtime import init, Inference
            from tests.conftest import single, Count
            from tests.integration.test_drivers import CountingDriver

            rt = init("local")
            proc = rt.start_inference(Inference(pipeline=single(Count)))
            driver = proc.add_driver("d", CountingDriver)
            print(json.dumps([proc.pid, driver.pid]), flush=True)
            sys.stdin.read()
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as parent:
        try:
            assert parent.stdout is not None
            children = json.loads(parent.stdout.readline())
            assert all(psutil.pid_exists(pid) for pid in children)
            parent.send_signal(signal.SIGKILL)
            parent.wait(10)

            def gone(pid: int) -> bool:
                try:
                    return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    return True

            wait_until(lambda: all(gone(pid) for pid in children), timeout=10, what=f"children {children} to exit")
        finally:
            if parent.poll() is None:
                parent.kill()


class DeviceCell(Cell):
    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        return context.device

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        assert context.device == context.model
        return YOut(y=inputs.x + (1000 if context.device.startswith("cuda") else 0))


def _has_gpu() -> bool:
    from rvai_sdk.runtime._devices import gpu_ids

    return bool(gpu_ids())


@pytest.mark.skipif(_has_gpu(), reason="checks the behaviour on a machine without a GPU")
def test_asking_for_a_gpu_without_one_fails_at_start_unless_cpu_is_allowed(local: Runtime) -> None:
    with pytest.raises(ProcessError, match=r"cell 'c0' asks for 0.5 GPU but no CUDA GPU is visible.*allow_cpu=True"):
        local.start_inference(Inference(pipeline=single(DeviceCell), resources={"c0": CellResources(gpus=0.5)}))
    inference = Inference(pipeline=single(DeviceCell), resources={"c0": CellResources(gpus=0.5, allow_cpu=True)})
    with local.start_inference(inference) as proc:
        assert proc.predict({"x": 1}).result(timeout=10) == {"y": 1}


class TorchCell(Cell):
    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        import torch

        model = torch.nn.Linear(4, 1).to(context.device)
        with torch.no_grad():
            model.weight.fill_(1.0)
            model.bias.fill_(0.0)
        return model

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        import torch

        with torch.no_grad():
            x = torch.full((1, 4), float(inputs.x), device=context.device)
            y = context.model(x)
        assert y.device.type == "cuda"
        return YOut(y=Integer(int(y.item())))


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="no NVIDIA GPU on this machine")
def test_a_torch_cell_runs_on_the_gpu_in_the_local_runtime(local: Runtime) -> None:
    inference = Inference(pipeline=single(TorchCell), resources={"c0": CellResources(gpus=0.5)})
    with local.start_inference(inference) as proc:
        assert proc.predict({"x": 2}).result(timeout=60) == {"y": 8}


def test_a_script_defining_its_cells_in_main_runs_on_the_local_runtime_without_a_main_guard(tmp_path: Path) -> None:
    """Cells, data classes and drivers from ``__main__`` travel by value: string annotations,
    parametrised types (``List[Point]``) and driver parameters resolve in the children."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            '''
            from __future__ import annotations

            import dataclasses
            from dataclasses import dataclass

            from rvai_sdk.cell import Cell, cell
            from rvai_sdk.context import InferenceContext
            from rvai_sdk.data import Inputs, Outputs, Parameters, State
            from rvai_sdk.drivers import DriverParameters, PipelineDriver
            from rvai_sdk.pipeline import PipelineFactory
            from rvai_sdk.runtime import Inference, init
            from rvai_sdk.types import Integer, List, Point, String


            @dataclass
            class PointsIn(Inputs):
                points: List[Point] = Inputs.field()


            @dataclass
            class CountOut(Outputs):
                count: Integer = Outputs.field()


            @dataclass
            class Seen(State):
                total: Integer = State.field(default=Integer(0))


            @cell(state=Seen)
            class CountPoints(Cell):
                @classmethod
                def call(cls, context: InferenceContext, parameters: Parameters, inputs: PointsIn) -> CountOut:
                    context.state.total = Integer(context.state.total + len(inputs.points))
                    return CountOut(count=context.state.total)


            @dataclass
            class SenderParameters(DriverParameters):
                sid: String = DriverParameters.field(default=String("cam"))


            class Sender(PipelineDriver):
                parameters_class = SenderParameters

                def run(self, inference, resources):
                    sid = str(self.get_parameters().sid)
                    self.last = int(inference.predict({"points": [(1, 2)]}, sid=sid).result(timeout=30)["count"])
                    self.wait_stopped()

                def stats(self):
                    return {"last": getattr(self, "last", None)}


            pf = PipelineFactory(name="points")
            c = pf.add_cell(ref="count", cell=CountPoints())
            pf.declare_input(ref="points", input=c.inputs.points)
            pf.declare_output(ref="count", output=c.outputs.count)
            pipeline = pf.build()

            with init("local") as rt, rt.start_inference(Inference(pipeline=pipeline)) as proc:
                print(int(proc.predict({"points": [(0, 0), (1, 1)]}, sid="cam").result(timeout=30)["count"]))
                driver = proc.add_driver("sender", Sender, {"sid": "cam"})
                import time
                deadline = time.monotonic() + 30
                while driver.stats()["last"] is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                print(driver.stats()["last"])
            '''
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "3"]


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="no NVIDIA GPU on this machine")
def test_frames_reaching_a_gpu_pipeline_arrive_in_pinned_memory(local: Runtime) -> None:
    from dataclasses import dataclass

    @dataclass
    class FrameIn(Inputs):
        frame: Image = Inputs.field()

    @dataclass
    class PinnedOut(Outputs):
        pinned: Integer = Outputs.field()

    class Pinned(Cell):
        @classmethod
        def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
            return PinnedOut

        @classmethod
        def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameIn) -> PinnedOut:
            import torch

            return PinnedOut(pinned=Integer(int(torch.from_numpy(np.asarray(inputs.frame)).is_pinned())))

    pf = PipelineFactory(name="pinned")
    cell_ = pf.add_cell(ref="c0", cell=Pinned())
    pf.declare_input(ref="frame", input=cell_.inputs.frame)
    pf.declare_output(ref="pinned", output=cell_.outputs.pinned)
    inference = Inference(pipeline=pf.build(), resources={"c0": CellResources(gpus=1)})
    frame = Image(np.zeros((720, 1280, 3), dtype=np.uint8))
    with local.start_inference(inference) as proc:
        assert proc.predict({"frame": frame}).result(timeout=60) == {"pinned": 1}


class Lingers(Cell):
    """A fast cell (x passes through), except that x == 99 blocks until the event 'release' is set."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> Any:
        return Sync(model_path) if model_path else None

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        if inputs.x == 99:
            assert context.model.wait("release", timeout=60), "the test never released the call"
        return YOut(y=inputs.x)


def test_a_usually_fast_cell_that_hangs_never_holds_up_the_requests_and_control_calls_behind_it(
    local: Runtime, sync: SyncServer
) -> None:
    # A lone request to a fast cell runs on the server's reading thread (no hand-off). If that
    # call hangs, the connection must still be read: the next request's deadline fires on time,
    # stats() answers, and everything works again once the call returns.
    from rvai_sdk.exc import DeadlineExceededError

    inference = Inference(pipeline=single(Lingers), models={"c0": sync.address})
    with local.start_inference(inference) as proc:
        for x in range(40):  # enough calls for the cell to count as fast
            assert proc.predict({"x": x}).result(timeout=10) == {"y": x}
        hung = proc.predict({"x": 99})
        with pytest.raises(DeadlineExceededError):
            proc.predict({"x": 2}, timeout=0.5).result(timeout=30)  # queued behind the hung call
        assert proc.stats()["requests"]["submitted"] == 42  # every request was read, the hung one too
        assert not hung.done()
        sync.set("release")
        assert hung.result(timeout=30) == {"y": 99}
        assert [proc.predict({"x": x}).result(timeout=10)["y"] for x in range(5)] == list(range(5))
