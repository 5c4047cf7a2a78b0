"""Model update without losing requests or state (issue 15 item 4): drain-then-swap on one process,
rolling across ray replicas, kept across ``restart()``, a failing ``load_model`` changes nothing.

The cell's model is named by its model path (``<sync address>|<log file>|<tag>``) and its
``version`` parameter (read by ``load_model``). A tag or version containing ``gated`` makes
``load_model`` announce itself and wait for the test's go (so requests are seen flowing while
the new model loads); ``fail`` makes it raise; ``once`` loads once and fails after that (on
the second ray replica); ``slow<N>`` makes it take N seconds. Every load is logged (start and end,
with the pid).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Outputs, Parameters
from rvai_sdk.exc import CellError, ParameterError, ProcessError, ProcessStateError
from rvai_sdk.runtime import Inference, ProcessStatus, Runtime, init
from rvai_sdk.types import Integer, String
from tests._sync import Sync, SyncServer
from tests.conftest import AddOne, Counter, XIn, single

LIMIT = 60.0
"""Seconds any one wait of these tests may take (two loaded cores)."""


@dataclass
class SwapParams(Parameters):
    version: String = Parameters.field(default=String("p1"))


@dataclass
class SwapOut(Outputs):
    n: Integer = Outputs.field()
    model: String = Outputs.field()


@cell(state=Counter)
class Swappable(Cell):
    """Counts per sid and says which model (``tag/version``) answered."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: SwapParams, model_path: str | None) -> Any:
        assert model_path is not None
        address, log, tag = model_path.split("|")
        name = f"{tag}/{parameters.version}"
        with open(log, "a") as out:
            out.write(f"start {os.getpid()} {name}\n")
        if "fail" in name:
            raise FileNotFoundError(f"no weights for {name}")
        if "once" in name:  # loads on the first replica that tries, fails on the next
            marker = Path(log).with_name(name.replace("/", "_") + ".loaded")
            if marker.exists():
                raise FileNotFoundError(f"{name} loads only once")
            marker.touch()
        slow = re.search(r"slow(\d+)", name)
        if slow:  # a load that takes that many seconds (longer than the runtime's start_timeout, in the test)
            Sync(address).wait(f"never-{name}", timeout=float(slow.group(1)))
        if "gated" in name:
            sync = Sync(address)
            sync.set(f"loading-{name}")
            assert sync.wait(f"go-{name}", timeout=LIMIT)
        with open(log, "a") as out:
            out.write(f"end {os.getpid()} {name}\n")
        return name

    @classmethod
    def call(cls, context: InferenceContext, parameters: SwapParams, inputs: XIn) -> SwapOut:
        context.state.n = Integer(context.state.n + 1)
        return SwapOut(n=context.state.n, model=String(context.model))


class Models:
    """Model paths for :class:`Swappable` on the test's sync server, and the log of their loads."""

    def __init__(self, sync: SyncServer, tmp_path: Path) -> None:
        self.sync = sync
        self.log = tmp_path / "loads.log"
        self.log.touch()

    def path(self, tag: str) -> str:
        return f"{self.sync.address}|{self.log}|{tag}"

    def loads(self) -> list[str]:
        """The log's lines: ``start <pid> <model>`` / ``end <pid> <model>``."""
        return self.log.read_text().splitlines()

    def loaded(self) -> list[str]:
        """The models whose load finished, in order."""
        return [line.split()[2] for line in self.loads() if line.startswith("end ")]


class Load:
    """Threads that each send requests for their own sids, one at a time, until stopped (bounded).

    Each request records the test's phase when it was sent and when its result came back;
    :meth:`check` asks, per request: no failure, the sid's counter exact, and the model the
    phases require (``old`` while the new model had not been let go, ``new`` once the swap returned).
    """

    def __init__(self, proc: Any, threads: int = 4, sids_per_thread: int = 3, max_requests: int = 5000) -> None:
        self.proc = proc
        self.phase = "before"
        self.errors: list[str] = []
        self.records: list[tuple[str, str, str]] = []  # (phase sent, phase done, model)
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._max = max_requests
        self._threads = [
            threading.Thread(target=self._run, args=([f"t{t}-s{s}" for s in range(sids_per_thread)],), daemon=True)
            for t in range(threads)
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, sids: list[str]) -> None:
        deadline = time.monotonic() + 10 * LIMIT
        for i in range(self._max):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            sid = sids[i % len(sids)]
            sent = self.phase
            try:
                out = self.proc.predict({"x": 0}, sid=sid).result(timeout=LIMIT)
            except Exception as exc:
                with self._cond:
                    self.errors.append(f"{sid}: {type(exc).__name__}: {exc}")
                    self._cond.notify_all()
                return
            done = self.phase
            with self._cond:
                n = self.counts[sid] = self.counts.get(sid, 0) + 1
                if int(out["n"]) != n:
                    self.errors.append(f"{sid}: counter {int(out['n'])} on its request {n}")
                self.records.append((sent, done, str(out["model"])))
                self._cond.notify_all()

    def more(self, n: int) -> None:
        """Wait until ``n`` more requests succeeded (fails the test on a failed request or a timeout)."""
        deadline = time.monotonic() + LIMIT
        with self._cond:
            target = len(self.records) + n
            while len(self.records) < target and not self.errors:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"only {len(self.records)} of {target} requests done within {LIMIT} s")
                self._cond.wait(left)
        assert not self.errors, self.errors[:5]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(LIMIT)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"

    def check(self, old: str, new: str) -> None:
        """No request failed, every counter exact, each request saw the model its phases allow."""
        assert not self.errors, self.errors[:5]
        for sent, done, model in self.records:
            if done in ("before", "loading"):  # the new model was not let go before it returned
                assert model == old, (sent, done, model)
            elif sent == "swapped":  # sent after the swap returned
                assert model == new, (sent, done, model)
            else:
                assert model in (old, new), (sent, done, model)
        assert sum(1 for _, done, _ in self.records if done == "loading") >= 1


@pytest.fixture
def sync() -> Iterator[SyncServer]:
    server = SyncServer()
    yield server
    server.close()


@pytest.fixture
def models(sync: SyncServer, tmp_path: Path) -> Models:
    return Models(sync, tmp_path)


def swap_under_load(proc: Any, load: Load, sync: SyncServer, change: Callable[[], None], new: str) -> None:
    """Run ``change`` (whose load is gated on ``new``) while ``load`` runs; check requests flow throughout."""
    load.more(20)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            change()
        except BaseException as exc:
            errors.append(exc)

    changer = threading.Thread(target=run, daemon=True)
    changer.start()
    assert Sync(sync.address).wait(f"loading-{new}", timeout=LIMIT), "the new model never started loading"
    load.phase = "loading"
    load.more(20)  # requests keep succeeding, with the old model, while the new one loads
    load.phase = "gate"
    sync.set(f"go-{new}")
    changer.join(LIMIT)
    assert not changer.is_alive() and not errors, errors
    load.phase = "swapped"
    load.more(20)


@pytest.mark.parametrize("how", ["parameter", "path"])
def test_a_model_swap_under_load_loses_no_request_keeps_every_state_and_survives_restart(
    runtime: Runtime, sync: SyncServer, models: Models, how: str
) -> None:
    inference = Inference(pipeline=single(Swappable), models={"c0": models.path("m1")})
    with runtime.start_inference(inference) as proc:
        old = "m1/p1"
        if how == "parameter":
            new = "m1/gated-p2"
            change: Callable[[], None] = lambda: proc.set_parameters({"c0": {"version": "gated-p2"}})
            failing: Callable[[], None] = lambda: proc.set_parameters({"c0": {"version": "fail-p3"}})
        else:
            new = "gated-m2/p1"
            change = lambda: proc.set_models({"c0": Path(models.path("gated-m2"))})
            failing = lambda: proc.set_models({"c0": models.path("fail-m3")})
        with Load(proc) as load:
            swap_under_load(proc, load, sync, change, new)
            # A failing load_model changes nothing: the new model keeps serving, every state goes on.
            with pytest.raises(CellError, match=r"load_model of cell 'c0' \(Swappable\) failed: FileNotFoundError: no weights"):
                failing()
            load.more(20)
        load.check(old, new)
        assert len(load.counts) == 12 and sum(load.counts.values()) == len(load.records) >= 80
        for sid, n in load.counts.items():  # the states held across the swap and the failed one
            assert proc.get_state(sid)["c0"].n == n
        assert str(proc.get_parameters()["c0"].version) == ("gated-p2" if how == "parameter" else "p1")
        assert proc.get_models() == {"c0": models.path("m1" if how == "parameter" else "gated-m2")}
        assert models.loaded() == [old, new]
        proc.restart()  # the new model (path and parameters) is what the fresh process loads
        assert str(proc.predict({"x": 0}, sid="after").result(timeout=LIMIT)["model"]) == new
        assert models.loaded() == [old, new, new]
        assert proc.get_models() == {"c0": models.path("m1" if how == "parameter" else "gated-m2")}


def test_set_models_rejects_bad_refs_and_paths_and_changes_nothing(runtime: Runtime, models: Models) -> None:
    pf_models = {"c0": models.path("m1")}
    with runtime.start_inference(Inference(pipeline=single(Swappable), models=pf_models)) as proc:
        with pytest.raises(ParameterError, match=r"set_models\(\.\.\.\) names unknown cell ref 'nope'; the pipeline's cells are: c0"):
            proc.set_models({"nope": "/m.onnx"})
        with pytest.raises(ParameterError, match=r"set_models\(\.\.\.\)\['c0'\] must be a model path \(str or pathlib.Path\), got int"):
            proc.set_models({"c0": 3})  # type: ignore[dict-item]
        assert proc.get_models() == pf_models
        assert str(proc.predict({"x": 0}).result(timeout=LIMIT)["model"]) == "m1/p1"
        assert models.loaded() == ["m1/p1"]
    with pytest.raises(ProcessStateError, match=r"cannot set models: .* is STOPPED"):
        proc.set_models({"c0": models.path("m2")})


def test_set_models_on_a_cell_without_load_model_is_refused(runtime: Runtime) -> None:
    with runtime.start_inference(Inference(pipeline=single(AddOne))) as proc:
        with pytest.raises(ParameterError, match=r"set_models\(\.\.\.\) names cell 'c0', which has no load_model\(\)"):
            proc.set_models({"c0": "/m.onnx"})
        assert proc.get_models() == {}
        assert int(proc.predict({"x": 1}).result(timeout=LIMIT)["y"]) == 2


def test_the_supervisor_restarts_a_killed_process_with_the_new_model(models: Models) -> None:
    inference = Inference(pipeline=single(Swappable), models={"c0": models.path("m1")}, supervise=True, stuck_after=30)
    with init("local") as rt, rt.start_inference(inference) as proc:
        proc.set_models({"c0": models.path("m2")})
        proc.set_parameters({"c0": {"version": "p2"}})
        assert str(proc.predict({"x": 0}).result(timeout=LIMIT)["model"]) == "m2/p2"
        pid = proc.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + LIMIT
        while not (proc.supervisor_restarts and proc.status is ProcessStatus.RUNNING and proc.pid != pid):
            assert time.monotonic() < deadline, "the supervisor did not restart the process"
            time.sleep(0.05)
        assert str(proc.predict({"x": 0}).result(timeout=LIMIT)["model"]) == "m2/p2"
        assert models.loaded() == ["m1/p1", "m2/p1", "m2/p2", "m2/p2"]


# -- ray: rolling across replicas ----------------------------------------------------------------


@pytest.mark.ray
def test_ray_replicas_swap_one_at_a_time_and_replicas_started_later_load_the_new_model(
    ray_instance: None, sync: SyncServer, models: Models
) -> None:
    with init("ray") as rt, rt.start_inference(Inference(pipeline=single(Swappable), models={"c0": models.path("m1")})) as proc:
        proc.set_replicas(2)
        pids = {r["index"]: r["pid"] for r in proc.replicas()}
        with Load(proc) as load:
            swap_under_load(proc, load, sync, lambda: proc.set_models({"c0": models.path("gated-m2")}), "gated-m2/p1")
            with pytest.raises(CellError, match=r"load_model of cell 'c0' \(Swappable\) failed"):
                proc.set_parameters({"c0": {"version": "fail"}})
            load.more(20)
        load.check("m1/p1", "gated-m2/p1")
        for sid, n in load.counts.items():
            assert proc.get_state(sid)["c0"].n == n
        # One replica loaded at a time: each start is followed by its own end before the next start.
        swap = [line for line in models.loads() if "gated-m2/p1" in line]
        assert [line.split()[0] for line in swap] == ["start", "end", "start", "end"]
        assert swap[0].split()[1] == swap[1].split()[1] == str(pids[0])
        assert swap[2].split()[1] == swap[3].split()[1] == str(pids[1])
        # The failed change was rolled back: replica 0 loaded "fail", raised; nothing else happened.
        assert [line for line in models.loads() if "fail" in line] == [f"start {pids[0]} gated-m2/fail"]
        # A roll that fails on replica 1 swaps replica 0 back: nothing changes.
        with pytest.raises(CellError, match=r"load_model of cell 'c0' \(Swappable\) failed: FileNotFoundError: once-m3/p1 loads only once"):
            proc.set_models({"c0": models.path("once-m3")})
        assert [line for line in models.loads()[-5:]] == [
            f"start {pids[0]} once-m3/p1", f"end {pids[0]} once-m3/p1", f"start {pids[1]} once-m3/p1",
            f"start {pids[0]} gated-m2/p1", f"end {pids[0]} gated-m2/p1",
        ]
        assert proc.get_models() == {"c0": models.path("gated-m2")}
        for replica in range(2):
            sid = next(f"y{i}" for i in range(1000) if proc.replica_for(f"y{i}") == replica)
            assert str(proc.predict({"x": 0}, sid=sid).result(timeout=LIMIT)["model"]) == "gated-m2/p1"
        # A replica killed later, and one added, start with the new model.
        os.kill(pids[1], signal.SIGKILL)
        deadline = time.monotonic() + LIMIT
        while not any(r["index"] == 1 and r["pid"] != pids[1] for r in proc.replicas()):
            assert time.monotonic() < deadline, "replica 1 was not started again"
            time.sleep(0.05)
        proc.set_replicas(3)
        for replica in range(3):
            sid = next(f"x{i}" for i in range(1000) if proc.replica_for(f"x{i}") == replica)
            assert str(proc.predict({"x": 0}, sid=sid).result(timeout=LIMIT)["model"]) == "gated-m2/p1"
        assert models.loaded()[-2:] == ["gated-m2/p1", "gated-m2/p1"]


MAIN_SCRIPT = '''
import sys
from dataclasses import dataclass

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.exc import CellError
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Integer, String


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    n: Integer = Outputs.field()
    model: String = Outputs.field()


@dataclass
class Seen(State):
    n: Integer = State.field(default=Integer(0))


@cell(state=Seen)
class Main(Cell):
    @classmethod
    def load_model(cls, context: ModelContext, parameters: Parameters, model_path: str | None) -> str:
        if model_path == "broken":
            raise FileNotFoundError("no weights")
        return str(model_path)

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        context.state.n = Integer(context.state.n + 1)
        return Out(n=context.state.n, model=String(context.model))


pf = PipelineFactory(name="main-swap")
c = pf.add_cell(ref="main", cell=Main())
pf.declare_input(ref="x", input=c.inputs.x)
pf.declare_output(ref="n", output=c.outputs.n)
pf.declare_output(ref="model", output=c.outputs.model)
with init(sys.argv[1]) as rt, rt.start_inference(Inference(pipeline=pf.build(), models={"main": "v1"})) as proc:
    seen = [proc.predict({"x": 0}, sid="a").result(timeout=60)]
    proc.set_models({"main": "v2"})
    seen.append(proc.predict({"x": 0}, sid="a").result(timeout=60))
    try:
        proc.set_models({"main": "broken"})
    except CellError as exc:
        print("refused:", exc.ref)
    seen.append(proc.predict({"x": 0}, sid="a").result(timeout=60))
    proc.restart()
    seen.append(proc.predict({"x": 0}, sid="a").result(timeout=60))
    print(" ".join(f"{int(o['n'])}:{o['model']}" for o in seen))
'''


def test_a_pipeline_defined_in_main_swaps_its_model_on_local(tmp_path: Path) -> None:
    script = tmp_path / "swap_script.py"
    script.write_text(MAIN_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(script), "local"], capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-2:] == ["refused: main", "1:v1 2:v2 3:v2 1:v2"]


def test_with_a_state_store_every_sid_continues_across_a_swap_and_a_restart(runtime: Runtime, models: Models, tmp_path: Path) -> None:
    inference = Inference(
        pipeline=single(Swappable), models={"c0": models.path("m1")}, state_store=str(tmp_path / "states.db")
    )
    sids = [f"s{i}" for i in range(5)]
    with runtime.start_inference(inference) as proc:
        assert [int(proc.predict({"x": 0}, sid=sid).result(timeout=LIMIT)["n"]) for sid in sids] == [1] * 5
        proc.set_models({"c0": models.path("m2")})
        outs = [proc.predict({"x": 0}, sid=sid).result(timeout=LIMIT) for sid in sids]
        assert [(int(o["n"]), str(o["model"])) for o in outs] == [(2, "m2/p1")] * 5
        proc.restart()
        outs = [proc.predict({"x": 0}, sid=sid).result(timeout=LIMIT) for sid in sids]
        assert [(int(o["n"]), str(o["model"])) for o in outs] == [(3, "m2/p1")] * 5


SLOW_START = 25.0
"""The runtime's start_timeout in the slow-load test: it bounds a model swap too."""


@pytest.mark.parametrize(("kind", "how"), [("local", "path"), ("local", "parameter"), ("ray", "path")])
def test_a_swap_that_outlasts_the_load_timeout_fails_and_never_takes_effect_later(
    kind: str, how: str, models: Models, request: pytest.FixtureRequest
) -> None:
    """The caller gives up after start_timeout; the models that finish loading after that are discarded, so the
    failure it was told about stays true: the old model serves on, now and after a restart, and the next change works."""
    if kind == "ray":
        request.getfixturevalue("ray_instance")
    rt = init(kind, start_timeout=SLOW_START)
    try:
        inference = Inference(pipeline=single(Swappable), models={"c0": models.path("m1")})
        with rt.start_inference(inference) as proc:
            assert proc.predict({"x": 0}, sid="a").result(timeout=LIMIT)["model"] == "m1/p1"
            slow = f"slow{int(SLOW_START) + 2}"  # loads for 2 s longer than the caller waits
            with pytest.raises(ProcessError, match="discarded: nothing changed"):
                if how == "path":
                    proc.set_models({"c0": models.path(slow)})
                else:
                    proc.set_parameters({"c0": {"version": slow}})
            assert "end" in models.loads()[-1] and slow in models.loads()[-1]  # the load did finish: it was refused
            assert proc.get_models() == {"c0": models.path("m1")}
            assert str(proc.get_parameters()["c0"].version) == "p1"
            out = proc.predict({"x": 0}, sid="a").result(timeout=LIMIT)
            assert (out["model"], int(out["n"])) == ("m1/p1", 2)
            proc.restart()
            assert proc.predict({"x": 0}, sid="b").result(timeout=LIMIT)["model"] == "m1/p1"
            proc.set_models({"c0": models.path("m2")})  # the next change goes through
            assert proc.predict({"x": 0}, sid="b").result(timeout=LIMIT)["model"] == "m2/p1"
    finally:
        rt.stop()
