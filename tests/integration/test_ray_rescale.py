"""Rescaling on ray under load: moved sids keep their state and their order (issue 15, items 3 and 7).

A counting pipeline (each response carries its sid's counter and the serving replica's
pid) runs under continuous load from several threads of this process and from a driver
actor (each with a RayLink of its own), while ``set_replicas`` goes 1 -> 3 -> 1. Every
sid's responses must count 1, 2, 3, ... exactly, in the order each caller sent them: no
reset (a sid that started fresh), no duplicate or gap (an update lost or applied twice,
or two requests run out of order). With the state in memory (handed over replica to
replica) and with an SQLite state store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.drivers import PipelineDriver
from rvai_sdk.execution.state_store import RedisStateStore, SqliteStateStore
from rvai_sdk.pipeline import Pipeline
from rvai_sdk.resources import DriverResources
from rvai_sdk.runtime import Inference, RestrictedInferenceProcess, init
from rvai_sdk.types import Integer
from tests.conftest import require_extra, single
from tests.integration.test_ray_runtime import CountWithPid  # counts its sid's requests, says which process served them

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

THREADS = 4
SIDS_PER_THREAD = 6
DEPTH = 3
"""Requests each load thread has in flight per sid at once (so some are in flight when the replica set changes)."""
PHASE_REQUESTS = 240
"""Responses each phase (1, 3, 1 replicas) waits for before the next change."""
REDIS_URL = "redis://127.0.0.1:6379/0"
DEADLINE = 300.0
"""Seconds the whole load may run (every loop is bounded by it and by a round count)."""


def counting() -> Pipeline:
    return single(CountWithPid, name="rescale-counting")


class Load:
    """Caller threads, each sending ``DEPTH`` requests at a time for each of its own sids until stopped.

    Records, per sid, the (counter, pid) of every response in the order the requests were sent.
    """

    def __init__(self, predict: Callable[..., Future[dict[str, Any]]], prefix: str, threads: int = THREADS) -> None:
        self.predict = predict
        self.sids = [[f"{prefix}{t}-{i}" for i in range(SIDS_PER_THREAD)] for t in range(threads)]
        self.seen: dict[str, list[tuple[int, int]]] = {sid: [] for group in self.sids for sid in group}
        self.errors: list[str] = []
        self.done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(group,), daemon=True) for group in self.sids]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, sids: list[str]) -> None:
        deadline = time.monotonic() + DEADLINE
        for _ in range(100_000):  # bounded in count and in time
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            sent = [(sid, self.predict({"x": 0}, sid=sid)) for _ in range(DEPTH) for sid in sids]
            for sid, future in sent:
                try:
                    out = future.result(timeout=120)
                except Exception as exc:
                    with self._lock:
                        self.errors.append(f"{sid}: {type(exc).__name__}: {exc}")
                    self._stop.set()
                    return
                with self._lock:
                    self.seen[sid].append((int(out["count"]), int(out["pid"])))
                    self.done += 1

    def wait_for(self, responses: int, what: str) -> None:
        """Wait until ``responses`` more responses arrived (fail on an error or after 180 s)."""
        with self._lock:
            target = self.done + responses
        deadline = time.monotonic() + 180
        while True:
            with self._lock:
                if self.errors:
                    pytest.fail(f"a request failed during {what}: {self.errors[0]}")
                if self.done >= target:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {responses} responses during {what}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)
            assert not thread.is_alive(), "a load thread did not finish"


def check_sequences(seen: dict[str, list[tuple[int, int]]], errors: list[str]) -> set[str]:
    """Assert every sid counted 1, 2, 3, ... exactly; the sids served by more than one replica."""
    assert not errors, errors[:3]
    moved = set()
    for sid, responses in seen.items():
        counts = [count for count, _ in responses]
        assert counts, f"sid {sid} got no response"
        assert counts == list(range(1, len(counts) + 1)), f"sid {sid} counted {counts}"
        if len({pid for _, pid in responses}) > 1:
            moved.add(sid)
    return moved


class LoadDriver(PipelineDriver):
    """The same load from a driver actor (its own RayLink); ``stats()`` reports what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.load: Load | None = None

    def run(self, inference: RestrictedInferenceProcess, resources: DriverResources) -> None:
        self.load = Load(inference.predict, "drv", threads=2)
        self.load.start()
        self.wait_stopped()
        self.load.stop()

    def stats(self) -> dict[str, Any]:
        load = self.load
        if load is None:
            return {"done": 0, "seen": {}, "errors": []}
        with load._lock:
            return {"done": load.done, "seen": {k: list(v) for k, v in load.seen.items()}, "errors": list(load.errors)}


@pytest.fixture(scope="module")
def rt(ray_instance: None) -> Iterator[Any]:
    runtime = init("ray")
    try:
        yield runtime
    finally:
        runtime.stop()


def _driver_done(driver: Any, at_least: int, what: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        stats = driver.stats()
        if stats["errors"]:
            pytest.fail(f"a request of the driver failed during {what}: {stats['errors'][0]}")
        if stats["done"] >= at_least:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for the driver's responses during {what}")
        time.sleep(0.05)


def rescale_under_load(rt: Any, inference: Inference, with_driver: bool = False) -> None:
    with rt.start_inference(inference) as proc:
        driver = proc.add_driver("load", LoadDriver) if with_driver else None
        load = Load(proc.predict, "sid")
        load.start()
        try:
            load.wait_for(PHASE_REQUESTS, "1 replica")
            proc.set_replicas(3)
            assert proc.get_replicas() == 3
            load.wait_for(PHASE_REQUESTS, "3 replicas")
            if driver is not None:
                _driver_done(driver, PHASE_REQUESTS // 2, "3 replicas")
            proc.set_replicas(1)
            assert proc.get_replicas() == 1
            load.wait_for(PHASE_REQUESTS, "1 replica again")
            if driver is not None:
                _driver_done(driver, driver.stats()["done"] + PHASE_REQUESTS // 2, "1 replica again")
        finally:
            load.stop()
        moved = check_sequences(load.seen, load.errors)
        assert moved, "no sid was served by another replica: the rescale moved nothing"
        for sid, responses in list(load.seen.items())[:5]:  # the state in the (one) replica matches the responses
            assert int(proc.get_state(sid)["c0"].n) == len(responses), sid
        if driver is not None:
            stats = driver.stats()
            driver_moved = check_sequences(stats["seen"], stats["errors"])
            assert driver_moved, "no sid of the driver was served by another replica"
            proc.remove_driver(driver.pid)


def test_one_three_one_replicas_under_load_keep_every_sids_sequence_in_memory(rt: Any) -> None:
    rescale_under_load(rt, Inference(pipeline=counting()), with_driver=True)


def test_one_three_one_replicas_under_load_keep_every_sids_sequence_with_sqlite(rt: Any, tmp_path: Path) -> None:
    rescale_under_load(rt, Inference(pipeline=counting(), state_store=SqliteStateStore(tmp_path / "states.db")))


def test_one_three_one_replicas_under_load_keep_every_sids_sequence_with_redis(rt: Any) -> None:
    require_extra("redis")
    import redis

    prefix = f"rvai-test:{uuid.uuid4().hex}:"
    try:
        rescale_under_load(rt, Inference(pipeline=counting(), state_store=RedisStateStore(REDIS_URL, prefix=prefix)))
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_idle_sids_move_with_their_state_and_removed_replicas_hand_over_before_stopping(rt: Any) -> None:
    sids = [f"idle-{i}" for i in range(40)]
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        for _ in range(2):
            for sid in sids:
                proc.predict({"x": 0}, sid=sid).result(timeout=60)
        proc.set_replicas(3)
        by_replica = {r["index"]: r["pid"] for r in proc.replicas()}
        # the take-over moved the idle sids at once: each sid is held by one replica, the one that owns it
        assert sorted(proc.sids()) == sorted(sids)
        owners = {sid: proc.replica_for(sid) for sid in sids}
        assert set(owners.values()) == {0, 1, 2}
        moved = sum(1 for owner in owners.values() if owner != 0)
        # what the replicas say they handed over: replica 0 exported each moved sid, its new owner imported it
        assert proc.stats()["handover"] == {"exported": moved, "imported": moved, "refused": 0, "pull_failures": 0}
        for sid in sids[:10]:
            assert int(proc.get_state(sid)["c0"].n) == 2, sid
        outs = {sid: proc.predict({"x": 0}, sid=sid).result(timeout=60) for sid in sids}
        for sid, out in outs.items():
            assert (int(out["count"]), int(out["pid"])) == (3, by_replica[owners[sid]]), sid
        proc.set_replicas(1)
        assert sorted(proc.sids()) == sorted(sids)
        # the removed replicas' counters went with them; replica 0 imported every sid they held
        assert proc.stats()["handover"] == {"exported": moved, "imported": moved, "refused": 0, "pull_failures": 0}
        outs = {sid: proc.predict({"x": 0}, sid=sid).result(timeout=60) for sid in sids}
        assert {sid: int(out["count"]) for sid, out in outs.items()} == {sid: 4 for sid in sids}


def test_a_stale_link_is_refused_and_resends_to_the_new_owner_in_order(rt: Any) -> None:
    """A caller that did not hear of the change (a RayLink with the old routes) still keeps every sid's order."""
    require_extra("ray")
    from rvai_sdk.transport.ray_link import RayLink

    sids = [f"stale-{i}" for i in range(12)]
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        stale = RayLink("rescale-counting", proc._backend.link.routes(), proc._backend.link.epoch)
        for sid in sids:
            assert int(stale.submit({"x": Integer(0)}, sid).result(timeout=60)["count"]) == 1
        proc.set_replicas(3)
        moved = [sid for sid in sids if proc.replica_for(sid) != 0]
        assert moved
        # the stale link still sends every sid to replica 0: the moved ones are refused there and sent again
        futures = [(sid, stale.submit({"x": Integer(0)}, sid)) for _ in range(3) for sid in sids]
        counts: dict[str, list[int]] = {}
        for sid, future in futures:
            counts.setdefault(sid, []).append(int(future.result(timeout=60)["count"]))
        assert counts == {sid: [2, 3, 4] for sid in sids}
        assert stale.epoch == proc._backend.link.epoch  # it took the new routes from the refusal
        assert [r.index for r in stale.routes()] == [0, 1, 2]


def test_a_link_holds_a_moved_sids_new_requests_until_those_on_the_old_replica_are_done(rt: Any) -> None:
    """Requests sent to the old replica (refused there: it knows the new set) go before those sent after the switch."""
    from rvai_sdk.transport.ray_link import RayLink

    sids = [f"held-{i}" for i in range(24)]
    with rt.start_inference(Inference(pipeline=counting())) as proc:
        link = RayLink("rescale-counting", proc._backend.link.routes(), proc._backend.link.epoch)
        for sid in sids:
            assert int(link.submit({"x": Integer(0)}, sid).result(timeout=60)["count"]) == 1
        proc.set_replicas(3)
        moved = [sid for sid in sids if proc.replica_for(sid) != 0]
        assert moved
        # sent to replica 0 under the old set; the link hears of the new set while they are on their way
        first = [(sid, link.submit({"x": Integer(0)}, sid)) for _ in range(2) for sid in moved]
        link.update(proc._backend.link.routes(), proc._backend.link.epoch)
        then = [(sid, link.submit({"x": Integer(0)}, sid)) for _ in range(2) for sid in moved]
        counts: dict[str, list[int]] = {}
        for sid, future in first + then:
            counts.setdefault(sid, []).append(int(future.result(timeout=60)["count"]))
        assert counts == {sid: [2, 3, 4, 5] for sid in moved}


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
def test_an_old_replica_killed_during_the_hand_over_leaves_its_sids_to_the_store_or_fresh(
    rt: Any, tmp_path: Path, durable: bool
) -> None:
    """The documented outcome: with a durable store the moved sids continue from their checkpoints, else fresh."""
    from rvai_sdk.transport.ray_link import rendezvous

    store = SqliteStateStore(tmp_path / "states.db") if durable else None
    sids = [f"dies-{i}" for i in range(30)]
    moved = [sid for sid in sids if rendezvous(sid, [0, 1, 2]) != 0]
    with rt.start_inference(Inference(pipeline=counting(), state_store=store)) as proc:
        for _ in range(2):
            for sid in sids:
                proc.predict({"x": 0}, sid=sid).result(timeout=60)
        old = proc.replicas()[0]
        # one request that stays in flight on replica 0 for a sid of each new replica: both hand-overs wait on it
        held = [next(sid for sid in moved if rendezvous(sid, [0, 1, 2]) == index) for index in (1, 2)]
        blockers = [proc.predict({"x": 99}, sid=sid) for sid in held]
        _until(lambda: proc.stats()["requests"]["in_flight"] == 2, "the blocking requests to arrive")
        epoch = proc._backend.link.epoch
        errors: list[BaseException] = []

        def scale() -> None:
            try:
                proc.set_replicas(3, timeout=90)
            except BaseException as exc:
                errors.append(exc)

        scaler = threading.Thread(target=scale, daemon=True)
        scaler.start()
        _until(lambda: proc._backend.link.epoch > epoch, "the new replica set to be published")
        os.kill(old["pid"], signal.SIGKILL)  # replica 0 dies while it hands its sids over
        scaler.join(timeout=150)
        assert not scaler.is_alive() and not errors, errors
        for blocker in blockers:
            with pytest.raises(Exception, match="died"):
                blocker.result(timeout=60)
        _until(lambda: proc.replicas()[0]["generation"] != old["generation"], "replica 0 to be started again")
        counts = {sid: int(proc.predict({"x": 0}, sid=sid).result(timeout=60)["count"]) for sid in sids}
        assert counts == {sid: 3 if durable else 1 for sid in sids}


def _until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_a_state_of_a_cell_defined_in_main_is_handed_over(tmp_path: Path) -> None:
    """A user's script (cell, State and its value type in ``__main__``) scales 1 -> 2: moved sids keep counting."""
    require_extra("ray")
    script = tmp_path / "user_script.py"
    script.write_text((Path(__file__).parent / "_main_rescale_script.py").read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=200
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, f"the script failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report = json.loads(lines[-1][len("REPORT ") :])
    assert report["moved"], "no sid moved to the new replica"
    assert report["counts"] == {f"m{i}": 2 for i in range(12)}
