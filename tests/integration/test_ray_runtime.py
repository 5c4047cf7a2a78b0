"""The ray runtime beyond the shared contract: replicas, sticky sids, faults, drivers, two nodes.

Runs on a real local Ray instance (the session's ``ray_instance`` fixture); the
two-node test brings up its own two-node cluster with ``ray start`` and talks to
it from a subprocess (one Python process joins one Ray cluster at a time).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import wait
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.drivers import DriverParameters, PipelineDriver
from rvai_sdk.drivers.driver import service_record
from rvai_sdk.exc import DriverError, ProcessError, RvaiError
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.resources import CellResources, DriverResources, DriverResourcesRequest
from rvai_sdk.runtime import Inference, ProcessStatus, RestrictedInferenceProcess, init
from rvai_sdk.types import Image, Integer
from tests._servers import free_port
from tests.conftest import AddOne, XIn, YOut, require_extra, single

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def rt(ray_instance: None) -> Iterator[Any]:
    """A ray runtime on the session's Ray instance."""
    runtime = init("ray")
    try:
        yield runtime
    finally:
        runtime.stop()


def until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


# -- cells ------------------------------------------------------------------------------------


@dataclass
class Tally(State):
    n: Integer = State.field(default=Integer(0))


@dataclass
class CountPidOut(Outputs):
    count: Integer = Outputs.field()
    pid: Integer = Outputs.field()


@cell(state=Tally)
class CountWithPid(Cell):
    """Counts the requests of its sid and says which process served them; holds x == 99 for a minute."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> CountPidOut:
        if inputs.x == 99:
            threading.Event().wait(60)  # a request that stays in flight until its replica is killed
        context.state.n = Integer(context.state.n + 1)
        return CountPidOut(count=context.state.n, pid=Integer(os.getpid()))


def counting() -> Pipeline:
    return single(CountWithPid, name="counting")


@dataclass
class FrameIn(Inputs):
    frame: Image = Inputs.field()


@dataclass
class FrameOut(Outputs):
    frame: Image = Outputs.field()
    total: Integer = Outputs.field()


class Brighten(Cell):
    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: FrameIn) -> FrameOut:
        return FrameOut(frame=Image(inputs.frame + 1), total=Integer(int(inputs.frame.sum(dtype=np.int64))))


# -- drivers ----------------------------------------------------------------------------------


@dataclass
class HttpParameters(DriverParameters):
    offset: Integer = DriverParameters.field(default=Integer(0))


class HttpPredictDriver(PipelineDriver):
    """``GET /predict?x=1&sid=a`` → ``{"y": ...}`` plus the ``offset`` parameter; reports where it runs."""

    parameters_class = HttpParameters

    def resources_request(self) -> DriverResourcesRequest:
        return DriverResourcesRequest(ports=["http"])

    def services(self, resources: DriverResources) -> list[dict[str, Any]]:
        return [service_record("http", resources.ports["http"], resources.host)]

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        driver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                sid = query.get("sid", [None])[0]
                try:
                    out = inference.predict({"x": int(query["x"][0])}, sid=sid).result(timeout=30)
                    body = {k: int(v) for k, v in out.items()}
                    body["offset"] = int(driver.get_parameters().offset)  # type: ignore[attr-defined]
                    body["node"] = _node_id()
                    code = 200
                except Exception as exc:
                    body, code = {"error": f"{type(exc).__name__}: {exc}"}, 500
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("0.0.0.0", resources.ports["http"]), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            self.wait_stopped()
        finally:
            server.shutdown()
            server.server_close()


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class LoopDriver(PipelineDriver):
    """Sends requests for sid 'loop' until stopped."""

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        x = 0
        while not self.stopped.is_set():
            inference.predict({"x": x}, sid="loop").result(timeout=30)
            x += 1
            self.wait_stopped(0.01)


class FailingDriver(PipelineDriver):
    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        inference.predict({"x": 1}).result(timeout=30)
        raise ValueError("the camera is gone")


def listening(service: dict[str, Any]) -> str:
    """Wait (bounded) until the driver's server accepts connections; its base URL."""

    def accepts() -> bool:
        try:
            socket.create_connection((service["address"], service["port"]), timeout=1).close()
        except OSError:
            return False
        return True

    until(accepts, what=f"a server on port {service['port']}")
    return f"http://{service['address']}:{service['port']}/predict"


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


# -- runtime --------------------------------------------------------------------------------


def test_init_ray_joins_the_running_ray_and_leaves_it_running(ray_instance: None) -> None:
    import ray

    rt = init("ray")
    assert rt.started_ray is False  # type: ignore[attr-defined]
    with rt.start_inference(Inference(pipeline=single(AddOne))) as proc:
        assert proc.predict({"x": 1}).result(timeout=30) == {"y": 2}
    rt.stop()
    assert ray.is_initialized()


def test_a_replica_that_cannot_be_placed_fails_start_inference_naming_what_it_needs(ray_instance: None) -> None:
    with init("ray", replica_options={"resources": {"no-such-node": 1}}, start_timeout=2) as rt:
        with pytest.raises(ProcessError, match=r"replica 0 .* was not placed and started within 2 s; it needs .*no-such-node"):
            rt.start_inference(Inference(pipeline=single(AddOne)))


def test_a_gpu_cell_on_a_cluster_without_gpus_fails_unless_it_allows_the_cpu(rt: Any) -> None:
    if rt.cluster_resources().get("GPU"):
        pytest.skip("this Ray instance has a GPU")
    with pytest.raises(ProcessError, match=r"cell 'c0' asks for 0.5 GPU but the Ray cluster has 0"):
        rt.start_inference(Inference(pipeline=single(AddOne), resources={"c0": CellResources(gpus=0.5)}))
    inference = Inference(pipeline=single(AddOne), resources={"c0": CellResources(gpus=0.5, cpus=0, allow_cpu=True)})
    with rt.start_inference(inference) as proc:
        assert proc.predict({"x": 1}).result(timeout=30) == {"y": 2}


# -- replicas and sticky sids -----------------------------------------------------------------


def test_four_replicas_serve_fifty_sids_each_with_an_exact_sequence_on_one_replica(rt: Any) -> None:
    steps = 12
    sids = [f"cam-{i}" for i in range(50)]
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        proc.set_replicas(4)
        assert proc.get_replicas() == 4
        pids = {r["index"]: r["pid"] for r in proc.replicas()}
        assert len(set(pids.values())) == 4
        futures = [(sid, proc.predict({"x": step}, sid=sid)) for step in range(steps) for sid in sids]
        done, _ = wait([f for _, f in futures], timeout=60)
        assert len(done) == len(futures)
        counts: dict[str, list[int]] = {}
        served_by: dict[str, set[int]] = {}
        for sid, future in futures:
            out = future.result()
            counts.setdefault(sid, []).append(int(out["count"]))
            served_by.setdefault(sid, set()).add(int(out["pid"]))
        for sid in sids:
            assert counts[sid] == list(range(1, steps + 1)), f"sid {sid} saw {counts[sid]}"
            assert served_by[sid] == {pids[proc.replica_for(sid)]}, f"sid {sid} was served by {served_by[sid]}"
        assert {proc.replica_for(sid) for sid in sids} == {0, 1, 2, 3}, "some replica got no sid"
        assert sorted(proc.sids()) == sorted(sids)
        stats = proc.stats()
        assert stats["requests"]["succeeded"] == steps * len(sids)
        assert [r["index"] for r in stats["replicas"]] == [0, 1, 2, 3]
        assert sum(r["requests"]["succeeded"] for r in stats["replicas"]) == steps * len(sids)
        for sid in sids[:5]:
            assert proc.get_state(sid)["c0"].n == steps


def test_sid_none_requests_spread_over_the_replicas(rt: Any) -> None:
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        proc.set_replicas(2)
        futures = [proc.predict({"x": 0}) for _ in range(200)]
        outs = [f.result(timeout=60) for f in futures]
        assert {int(o["count"]) for o in outs} == {1}
        assert {int(o["pid"]) for o in outs} == {r["pid"] for r in proc.replicas()}
        assert proc.sids() == []


def test_scaling_moves_few_sids_and_a_moved_sid_keeps_its_state(rt: Any) -> None:
    sids = [f"s{i}" for i in range(60)]
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        proc.set_replicas(3)
        for _ in range(2):
            wait([proc.predict({"x": 0}, sid=sid) for sid in sids], timeout=60)
        before = {sid: proc.replica_for(sid) for sid in sids}
        proc.set_replicas(4)
        after = {sid: proc.replica_for(sid) for sid in sids}
        moved = {sid for sid in sids if before[sid] != after[sid]}
        assert moved, "no sid moved to the new replica"
        assert all(after[sid] == 3 for sid in moved), "a sid moved between two old replicas"
        assert len(moved) < len(sids) / 2
        pids = {r["index"]: r["pid"] for r in proc.replicas()}
        outs = {sid: proc.predict({"x": 0}, sid=sid) for sid in sids}
        for sid, future in outs.items():
            out = future.result(timeout=60)
            assert int(out["count"]) == 3, sid  # handed over with its state: no fresh start
            assert int(out["pid"]) == pids[after[sid]], sid
        proc.set_replicas(1)
        assert proc.get_replicas() == 1
        assert sorted(proc.sids()) == sorted(sids)  # the removed replicas handed every sid over before stopping
        outs = {sid: proc.predict({"x": 0}, sid=sid) for sid in sids}
        for sid, future in outs.items():
            assert int(future.result(timeout=60)["count"]) == 4, sid
        assert len(proc.replicas()) == 1


def test_set_replicas_rejects_a_bad_count(rt: Any) -> None:
    with rt.start_inference(Inference(pipeline=single(AddOne))) as proc:
        with pytest.raises(Exception, match=r"set_replicas\(\) takes an int >= 1, got 0"):
            proc.set_replicas(0)


def test_large_frames_round_trip_through_the_object_store(rt: Any) -> None:
    frame = np.random.default_rng(1).integers(0, 200, size=(1080, 1920, 3), dtype=np.uint8)
    pipeline = PipelineFactory(name="frames")
    brighten = pipeline.add_cell(ref="b", cell=Brighten())
    pipeline.declare_input(ref="frame", input=brighten.inputs.frame)
    pipeline.declare_output(ref="frame", output=brighten.outputs.frame)
    pipeline.declare_output(ref="total", output=brighten.outputs.total)
    with rt.start_inference(Inference(pipeline=pipeline.build())) as proc:
        futures = [proc.predict({"frame": Image(frame)}, sid="cam") for _ in range(4)]
        for future in futures:
            out = future.result(timeout=60)
            assert isinstance(out["frame"], Image)
            assert np.array_equal(out["frame"], frame + 1)
            assert out["total"] == int(frame.sum(dtype=np.int64))


# -- faults -------------------------------------------------------------------------------------


def test_a_killed_replica_fails_its_pending_requests_and_restarts_with_fresh_state(rt: Any) -> None:
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        proc.set_replicas(2)
        sids = [f"k{i}" for i in range(20)]
        victim = proc.replica_for(sids[0])
        doomed = [s for s in sids if proc.replica_for(s) == victim]
        spared = [s for s in sids if proc.replica_for(s) != victim]
        assert spared, "every sid landed on one replica"
        for sid in sids:
            proc.predict({"x": 0}, sid=sid).result(timeout=30)
        held = proc.predict({"x": 99}, sid=doomed[0])
        until(lambda: proc.stats()["replicas"][victim]["requests"]["in_flight"] == 1, what="the held request")
        old = {r["index"]: r for r in proc.replicas()}
        os.kill(old[victim]["pid"], signal.SIGKILL)
        with pytest.raises(ProcessError, match=rf"replica {victim} of the inference process of pipeline 'counting' died"):
            held.result(timeout=10)
        for sid in spared:  # the other replica never noticed
            assert int(proc.predict({"x": 0}, sid=sid).result(timeout=30)["count"]) == 2
        until(lambda: proc.replicas()[victim]["generation"] != old[victim]["generation"], what="the restarted replica")
        assert proc.replicas()[victim]["pid"] != old[victim]["pid"]
        assert proc.status is ProcessStatus.RUNNING
        for sid in doomed:  # state on the dead replica is gone: its sids start over
            assert int(proc.predict({"x": 0}, sid=sid).result(timeout=30)["count"]) == 1
        assert proc.replicas()[1 - victim]["pid"] == old[1 - victim]["pid"]


def test_restart_replaces_every_replica_and_drivers_keep_sending(rt: Any) -> None:
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        proc.set_replicas(2)
        driver = proc.add_driver("http", HttpPredictDriver)
        url = listening(driver.get_service("http")) + "?x=0&sid=a"
        assert get_json(url)["count"] == 1
        before = {r["pid"] for r in proc.replicas()}
        proc.restart()
        assert proc.status is ProcessStatus.RUNNING
        assert proc.get_replicas() == 2
        assert not before & {r["pid"] for r in proc.replicas()}
        assert get_json(url)["count"] == 1, "after a restart a sid starts over"
        assert driver.status is ProcessStatus.RUNNING


def test_a_killed_driver_is_reported_failed_and_inference_keeps_serving(rt: Any) -> None:
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        driver = proc.add_driver("loop", LoopDriver)
        until(lambda: "loop" in proc.sids(), what="the driver's first request")
        os.kill(driver.pid, signal.SIGKILL)
        until(lambda: driver.status is ProcessStatus.FAILED, what="the driver to be reported failed")
        assert driver.failure is not None and "driver 'loop'" in driver.failure and "died" in driver.failure
        assert not driver.is_alive()
        with pytest.raises(DriverError, match="cannot get parameters: driver 'loop' is FAILED"):
            driver.get_parameters()
        assert proc.status is ProcessStatus.RUNNING
        assert int(proc.predict({"x": 0}, sid="other").result(timeout=30)["count"]) == 1
        again = proc.add_driver("loop", LoopDriver)  # a failed ref can be re-added
        assert again.status is ProcessStatus.RUNNING
        proc.remove_driver("loop")
        assert again.status is ProcessStatus.STOPPED


def test_a_driver_raising_in_run_is_failed_with_its_error_text(rt: Any) -> None:
    with rt.start_inference(Inference(pipeline=single(AddOne))) as proc:
        driver = proc.add_driver("bad", FailingDriver)
        until(lambda: driver.status is ProcessStatus.FAILED, what="the driver to fail")
        assert driver.failure is not None
        assert driver.failure.startswith("driver 'bad' (FailingDriver) failed: ValueError: the camera is gone")
        assert proc.predict({"x": 1}).result(timeout=30) == {"y": 2}


def test_a_factory_that_raises_fails_add_driver_naming_the_ref(rt: Any) -> None:
    def broken() -> PipelineDriver:
        raise RuntimeError("no config")

    with rt.start_inference(Inference(pipeline=single(AddOne))) as proc:
        with pytest.raises(DriverError, match=r"driver 'cfg': its factory .*broken raised RuntimeError: no config"):
            proc.add_driver("cfg", broken)
        assert proc.list_drivers() == []


# -- drivers ----------------------------------------------------------------------------------


def test_an_http_driver_on_ray_serves_through_the_replicas_and_publishes_its_node_address(rt: Any) -> None:
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        proc.set_replicas(2)
        driver = proc.add_driver("http", HttpPredictDriver, {"offset": 3})
        assert driver.status is ProcessStatus.RUNNING and driver.is_alive()
        service = driver.get_service("http")
        assert service["taggedAddresses"]["lan"]["address"] == driver.host  # type: ignore[attr-defined]
        base = listening(service)
        for sid in ["a", "b", "c", "d"]:
            assert [get_json(f"{base}?x=0&sid={sid}")["count"] for _ in range(3)] == [1, 2, 3]
        assert proc.get_state("a")["c0"].n == 3
        assert get_json(f"{base}?x=0")["offset"] == 3
        driver.set_parameters({"offset": 7})
        assert driver.get_parameters().offset == 7  # type: ignore[attr-defined]
        assert get_json(f"{base}?x=0")["offset"] == 7
        proc.set_replicas(3)  # the driver learns the new replica set
        counts = [get_json(f"{base}?x=0&sid=s{i}")["count"] for i in range(12)]
        assert counts == [1] * 12
        assert proc.stats()["requests"]["succeeded"] >= 12 + 14
        assert proc.get_driver("http") is driver
        proc.remove_driver(driver.pid)
        assert driver.status is ProcessStatus.STOPPED
        assert proc.list_drivers() == []


def test_stopping_the_process_stops_its_drivers(rt: Any) -> None:
    proc = rt.start_inference(Inference(pipeline=counting()))
    driver = proc.add_driver("loop", LoopDriver)
    proc.stop()
    assert driver.status is ProcessStatus.STOPPED
    assert proc.status is ProcessStatus.STOPPED
    with pytest.raises(ProcessError, match="is STOPPED"):
        proc.predict({"x": 1})


# -- two nodes ---------------------------------------------------------------------------------


def two_node_check(address: str) -> None:
    """Run in a subprocess joined to the two-node cluster; prints one JSON line with what it saw."""
    import ray

    # One CPU per replica and one CPU per node: two replicas can only be placed one on each node.
    rt = init("ray", address=address, replica_options={"num_cpus": 1}, log_to_driver=False)
    node_of = {n["NodeID"]: ("node2" if "node2" in n["Resources"] else "head") for n in ray.nodes() if n["Alive"]}
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        proc.set_replicas(2)
        replica_nodes = sorted({node_of[r["node"]] for r in proc.replicas()})
        proc.set_driver_options("http", resources={"node2": 0.01})
        driver = proc.add_driver("http", HttpPredictDriver)
        base = listening(driver.get_service("http"))
        counts = {sid: [get_json(f"{base}?x=0&sid={sid}")["count"] for _ in range(3)] for sid in ["a", "b", "c", "d", "e"]}
        print(
            json.dumps(
                {
                    "replica_nodes": replica_nodes,
                    "driver_node": node_of[driver.node],  # type: ignore[attr-defined]
                    "answered_on": node_of[get_json(base + "?x=0")["node"]],
                    "counts": counts,
                    "serving_replicas": sorted({proc.replica_for(sid) for sid in counts}),
                }
            )
        )
    rt.stop()


@pytest.mark.timeout(180)
def test_two_nodes_hold_replicas_and_a_driver_on_the_second_node_reaches_them(tmp_path: Path) -> None:
    require_extra("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--include-dashboard=false", "--block", "--disable-usage-stats"]
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        with open(tmp_path / "head.log", "wb") as log:
            nodes.append(
                subprocess.Popen(
                    [str(ray_bin), "start", "--head", f"--port={port}", '--resources={"head": 1}', *common],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )
            )
        with open(tmp_path / "node2.log", "wb") as log:
            worker = [str(ray_bin), "start", f"--address={address}", '--resources={"node2": 1}', *common]
            worker.remove("--include-dashboard=false")
            nodes.append(subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        code = (
            "import json, sys, time, ray\n"
            f"deadline = time.monotonic() + 90\n"
            "while True:\n"
            "    try:\n"
            f"        ray.init(address={address!r}, log_to_driver=False); break\n"
            "    except ConnectionError:\n"
            "        if time.monotonic() > deadline: raise\n"
            "        time.sleep(0.5)\n"
            "while len([n for n in ray.nodes() if n['Alive']]) < 2:\n"
            "    if time.monotonic() > deadline: raise SystemExit('the second node never joined')\n"
            "    time.sleep(0.2)\n"
            "from tests.integration.test_ray_runtime import two_node_check\n"
            f"two_node_check({address!r})\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=150, env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen["replica_nodes"] == ["head", "node2"], seen
        assert seen["driver_node"] == "node2"
        assert seen["answered_on"] == "node2"
        assert seen["counts"] == {sid: [1, 2, 3] for sid in "abcde"}
    finally:
        for node in nodes:
            if node.poll() is None:
                node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=10)


def test_a_cell_whose_module_the_workers_cannot_import_fails_start_naming_the_module(
    rt: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere_cells.py").write_text(
        "from rvai_sdk.cell import Cell\n"
        "from rvai_sdk.context import InferenceContext\n"
        "from rvai_sdk.data import Parameters\n"
        "from tests.conftest import XIn, YOut\n"
        "class Elsewhere(Cell):\n"
        "    @classmethod\n"
        "    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:\n"
        "        return YOut(y=inputs.x)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("elsewhere_cells")
    try:
        with pytest.raises(ProcessError, match=r"replica 0 .* could not be created: ModuleNotFoundError: No module named 'elsewhere_cells'; classes defined in a module"):
            rt.start_inference(Inference(pipeline=single(module.Elsewhere)))
    finally:
        sys.modules.pop("elsewhere_cells", None)


def test_init_ray_without_a_running_ray_starts_one_and_stop_shuts_it_down() -> None:
    require_extra("ray")
    code = (
        "import ray\n"
        "from rvai_sdk.runtime import Inference, init\n"
        "from tests.conftest import AddOne, single\n"
        "rt = init('ray', num_cpus=1, log_to_driver=False)\n"
        "assert rt.started_ray and ray.is_initialized()\n"
        "with rt.start_inference(Inference(pipeline=single(AddOne))) as proc:\n"
        "    assert proc.predict({'x': 1}).result(timeout=60) == {'y': 2}\n"
        "rt.stop()\n"
        "assert not ray.is_initialized()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=100,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


class LoadsOnce(Cell):
    """load_model fails once the file ``<model_path>.broken`` exists."""

    @classmethod
    def load_model(cls, context: Any, parameters: Parameters, model_path: str | None) -> Any:
        if model_path is not None and Path(model_path + ".broken").exists():
            raise OSError(f"weights at {model_path} are corrupt")
        return "model"

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        return YOut(y=inputs.x)


def test_a_replica_that_cannot_be_started_again_fails_the_process_saying_why(rt: Any, tmp_path: Path) -> None:
    model = str(tmp_path / "weights.pt")
    with rt.start_inference(Inference(pipeline=single(LoadsOnce), models={"c0": model})) as proc:
        assert proc.predict({"x": 3}).result(timeout=30) == {"y": 3}
        Path(model + ".broken").touch()
        os.kill(proc.replicas()[0]["pid"], signal.SIGKILL)
        until(lambda: proc.status is ProcessStatus.FAILED, what="the process to be marked failed")
        assert proc.failure is not None
        assert "replica 0 of the inference process of pipeline 'single' died and could not be started again" in proc.failure
        assert "weights at" in proc.failure and "are corrupt" in proc.failure
        with pytest.raises(ProcessError, match="is FAILED"):
            proc.predict({"x": 1})
        Path(model + ".broken").unlink()
        proc.restart()
        assert proc.status is ProcessStatus.RUNNING
        assert proc.predict({"x": 4}).result(timeout=30) == {"y": 4}


# -- while a replica is started again -------------------------------------------------------------


def _wait_while(gate: Path) -> None:
    """Wait while ``gate`` exists, at most a minute (a model, or a camera, slow to open)."""
    deadline = time.monotonic() + 60.0
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class SlowToLoad(Cell):
    """load_model waits while the file ``<model_path>.gate`` exists; says which process served a request."""

    @classmethod
    def load_model(cls, context: Any, parameters: Parameters, model_path: str | None) -> Any:
        if model_path is not None:
            _wait_while(Path(model_path + ".gate"))
        return "model"

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> CountPidOut:
        return CountPidOut(count=inputs.x, pid=Integer(os.getpid()))


def _known_dead(proc: Any, sid: str) -> bool:
    """Whether the link knows the replica of ``sid`` died: a request of that sid is refused on the spot."""
    try:
        sent = proc.predict({"x": 0}, sid=sid)
    except ProcessError:
        return True
    try:
        sent.result(timeout=30)
    except ProcessError:  # in flight when the replica died: now the link knows
        pass
    return False


def test_sid_none_requests_go_to_the_live_replica_while_a_dead_one_is_started_again(rt: Any, tmp_path: Path) -> None:
    model = str(tmp_path / "weights.pt")
    with rt.start_inference(Inference(pipeline=single(SlowToLoad, name="slow-load"), models={"c0": model})) as proc:
        proc.set_replicas(2)
        old = {r["index"]: r for r in proc.replicas()}
        owned = next(sid for sid in (f"s{i}" for i in range(200)) if proc.replica_for(sid) == 0)
        Path(model + ".gate").touch()  # replica 0's replacement waits in load_model
        try:
            os.kill(old[0]["pid"], signal.SIGKILL)
            until(lambda: _known_dead(proc, owned), what="the link to learn that replica 0 died")
            served = {int(proc.predict({"x": i}).result(timeout=30)["pid"]) for i in range(20)}
            assert served == {old[1]["pid"]}, "a request without a sid went to the dead replica"
        finally:
            Path(model + ".gate").unlink()
        until(lambda: proc.replicas()[0]["generation"] != old[0]["generation"], what="replica 0 started again")
        assert int(proc.predict({"x": 5}, sid=owned).result(timeout=30)["count"]) == 5


def test_stop_does_not_wait_for_a_replica_being_started_again(rt: Any, tmp_path: Path) -> None:
    model = str(tmp_path / "weights.pt")
    proc = rt.start_inference(Inference(pipeline=single(SlowToLoad, name="slow-stop"), models={"c0": model}))
    Path(model + ".gate").touch()  # its replacement would wait in load_model for a minute
    try:
        old = proc.replicas()[0]
        os.kill(old["pid"], signal.SIGKILL)
        until(lambda: _known_dead(proc, "a"), what="the link to learn that the replica died")
        stopper = threading.Thread(target=proc.stop, kwargs={"timeout": 2}, daemon=True)
        stopper.start()
        stopper.join(30)  # the gate stays shut far longer: only a stop that gives the replacement up returns
        assert not stopper.is_alive(), "stop() waited for the replica being started again"
        assert proc.status is ProcessStatus.STOPPED and proc.failure is None
    finally:
        Path(model + ".gate").unlink()
        proc.stop()


class RetryingLoopDriver(PipelineDriver):
    """Sends requests for sid 'loop' until stopped; one that fails (its replica died) is sent again later."""

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        while not self.stopped.is_set():
            try:
                inference.predict({"x": 0}, sid="loop").result(timeout=30)
            except ProcessError:
                pass
            self.wait_stopped(0.05)


def gated_loop_driver(gate: str) -> RetryingLoopDriver:
    """A driver whose construction waits while ``gate`` exists (a camera slow to open); it marks its start."""
    Path(gate + ".entered").touch()
    _wait_while(Path(gate))
    return RetryingLoopDriver()


def test_a_driver_added_while_a_replica_is_started_again_reaches_the_new_replica(rt: Any, tmp_path: Path) -> None:
    gate = str(tmp_path / "camera")
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        old = proc.replicas()[0]
        Path(gate).touch()
        added: list[Any] = []
        adding = threading.Thread(target=lambda: added.append(proc.add_driver("loop", gated_loop_driver, gate)), daemon=True)
        adding.start()
        try:
            until(lambda: Path(gate + ".entered").exists(), what="the driver to start (with the routes of then)")
            os.kill(old["pid"], signal.SIGKILL)
            until(lambda: proc.replicas()[0]["generation"] != old["generation"], what="the replica started again")
        finally:
            Path(gate).unlink()
        adding.join(60)
        assert added and added[0].status is ProcessStatus.RUNNING
        until(lambda: "loop" in proc.sids(), what="the driver's requests to reach the new replica")
        proc.remove_driver("loop")


def test_a_restart_after_a_failed_one_starts_as_many_replicas_as_before(rt: Any, tmp_path: Path) -> None:
    model = str(tmp_path / "weights.pt")
    with rt.start_inference(Inference(pipeline=single(LoadsOnce), models={"c0": model})) as proc:
        proc.set_replicas(3)
        Path(model + ".broken").touch()
        with pytest.raises(RvaiError, match="are corrupt"):
            proc.restart()
        assert proc.status is ProcessStatus.FAILED
        Path(model + ".broken").unlink()
        proc.restart()
        assert proc.status is ProcessStatus.RUNNING
        assert proc.get_replicas() == 3, "the failed restart's empty replica set was taken for the count wanted"
