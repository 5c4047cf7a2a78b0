"""Per-sid state in a durable store (issue 15, items 1-2): real SQLite files, the real Redis, real SIGKILLs.

The counting cell returns its sid's counter after the update, so every successful
reply is a witness: with checkpoint-every, the counters a sid's successful replies
show go up by exactly one per request that was applied. A request in flight at a
crash fails (ProcessError) and is *in doubt*: applied or not. So between two
successful replies the counter may rise by one plus at most the number of in-doubt
requests in between; it never repeats (a lost update) and never rises more (an
update applied twice, or a request applied that nobody sent).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters, State
from rvai_sdk.exc import CellError, ParameterError, ProcessError, RvaiError, UnknownSidError
from rvai_sdk.execution.batching import BatchingPolicy
from rvai_sdk.execution.state_store import OpenStateStore, RedisStateStore, SqliteStateStore
from rvai_sdk.runtime import Inference, ProcessStatus, init
from rvai_sdk.types import Integer
from tests._servers import RedisServer, own_redis  # noqa: F401 (own_redis: a fixture)
from tests._sync import eventually
from tests.conftest import BatchRemember, BatchLog, Count, XIn, YOut, branches_pipeline, damage_checkpoint, require_extra, single

REDIS_URL = "redis://127.0.0.1:6379/0"


def _wait_for(condition: Any, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until it is truthy or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        tick.wait(0.02)


@pytest.fixture
def redis_store() -> Iterator[RedisStateStore]:
    """A Redis store under a prefix of its own, deleted afterwards."""
    require_extra("redis")
    import redis

    prefix = f"rvai-test:{uuid.uuid4().hex}:"
    yield RedisStateStore(REDIS_URL, prefix=prefix)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass
class Held(State):
    n: Integer = State.field(default=Integer(0))


@cell(state=Held)
class HoldsALock(Cell):
    """Puts a value pickle refuses into its state."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        context.state.n = threading.Lock()  # type: ignore[assignment]
        return YOut(y=inputs.x)


# -- crashes under load ---------------------------------------------------------------------------


def _check_witnesses(sid: str, events: list[tuple[str, int]], final: int) -> None:
    """``events``: ("ok", counter) or ("doubt", 0) in send order; ``final``: the counter now."""
    last = 0
    doubt = 0
    applied_in_doubt = 0
    ok = 0
    for kind, value in events:
        if kind == "doubt":
            doubt += 1
            continue
        ok += 1
        rise = value - last
        assert 1 <= rise <= 1 + doubt, (
            f"sid {sid!r}: counter went from {last} to {value} with {doubt} request(s) in doubt in between"
        )
        applied_in_doubt += rise - 1
        last, doubt = value, 0
    assert last <= final <= last + doubt, f"sid {sid!r}: final counter {final}, last reply {last}, {doubt} in doubt"
    applied_in_doubt += final - last
    assert final == ok + applied_in_doubt


def test_fifty_sids_survive_three_sigkills_on_local_with_sqlite(tmp_path: Path) -> None:
    sids = [f"cam-{i}" for i in range(50)]
    events: dict[str, list[tuple[str, int]]] = {sid: [] for sid in sids}
    store = SqliteStateStore(tmp_path / "states.db")
    rounds_between_kills = 4
    with init("local") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
        for kill in range(4):  # 3 kills, then a last stretch of load
            for round_ in range(rounds_between_kills):
                futures = {sid: proc.predict({"x": 1}, sid=sid) for sid in sids}
                if kill < 3 and round_ == rounds_between_kills - 1:
                    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]  # with requests in flight
                for sid, future in futures.items():
                    try:
                        events[sid].append(("ok", int(future.result(timeout=60)["y"])))
                    except ProcessError:
                        events[sid].append(("doubt", 0))
            if kill < 3:
                assert _wait_for(lambda: proc.status is not ProcessStatus.RUNNING), "the killed process still runs"
                proc.restart()
        final = {sid: int(proc.get_state(sid)["c0"].n) for sid in sids}
    for sid in sids:
        _check_witnesses(sid, events[sid], final[sid])
    successes = sum(kind == "ok" for evs in events.values() for kind, _ in evs)
    doubts = sum(kind == "doubt" for evs in events.values() for kind, _ in evs)
    assert successes >= 50 * 4 * 3  # most rounds ran untouched by a kill
    assert doubts >= 1, "no request was in flight at any of the kills: the test did not test a crash under load"


def test_restart_and_the_supervisors_restart_continue_every_sid_from_redis(redis_store: RedisStateStore) -> None:
    sids = [f"s{i}" for i in range(5)]
    inference = Inference(pipeline=single(Count), state_store=redis_store, supervise=True, stuck_after=30)
    with init("local") as rt, rt.start_inference(inference) as proc:
        for expected in (1, 2):
            assert [proc.predict({"x": 1}, sid=s).result(timeout=30)["y"] for s in sids] == [Integer(expected)] * 5
        proc.restart()
        assert [proc.predict({"x": 1}, sid=s).result(timeout=30)["y"] for s in sids] == [Integer(3)] * 5
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        assert _wait_for(lambda: proc.supervisor_restarts and proc.is_ready())
        assert [proc.predict({"x": 1}, sid=s).result(timeout=30)["y"] for s in sids] == [Integer(4)] * 5


def _serving_pid(proc: Any) -> int:
    """The pid of the process that runs the cells: the inference process, or (ray) its one replica."""
    replicas = getattr(proc, "replicas", None)
    return int(replicas()[0]["pid"]) if replicas is not None else int(proc.pid)


@pytest.mark.parametrize("runtime", ["debug", "local", pytest.param("ray", marks=pytest.mark.ray)])
def test_what_a_failed_requests_other_branches_changed_survives_a_sigkill_right_after_it_answers(
    runtime: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # check fails x < 0; count and remember, beside it, still run and change the sid's state. The
    # failed request answers only once that change is in the store, so a SIGKILL right after loses nothing
    # (the debug runtime, whose cells run in this process, restarts instead).
    if runtime == "ray":
        request.getfixturevalue("ray_instance")
    store = SqliteStateStore(tmp_path / "states.db")
    supervised = runtime != "debug"  # replaces the killed process (the debug runtime cannot supervise)
    inference = Inference(pipeline=branches_pipeline(), state_store=store, supervise=supervised, stuck_after=30)
    with init(runtime) as rt, rt.start_inference(inference) as proc:
        assert proc.predict({"x": 1}, sid="a").result(timeout=60)["count"] == 1
        with pytest.raises(CellError, match="negative input -1") as info:
            proc.predict({"x": -1}, sid="a").result(timeout=60)
        assert info.value.ref == "check"
        if runtime == "debug":  # the cells run in this process: a restart reads the store back
            proc.restart()
        else:
            killed = _serving_pid(proc)
            os.kill(killed, signal.SIGKILL)
            eventually(lambda: proc.is_ready() and _serving_pid(proc) != killed, "the killed process is replaced", timeout=120)
        after = proc.predict({"x": 2}, sid="a").result(timeout=60)
        assert after["count"] == 3, "the failed request's count was lost with the process"
        assert [int(x) for x in after["seen"]] == [1, -1, 2]


@pytest.mark.ray
def test_restart_on_ray_continues_from_sqlite_at_a_path_relative_to_the_callers_directory(
    tmp_path: Path, ray_instance: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the replicas' working directory is Ray's, not this one
    inference = Inference(pipeline=single(Count), state_store="states/s.db")
    assert inference.state_store.path == str(tmp_path / "states" / "s.db")  # type: ignore[union-attr]
    with init("ray") as rt, rt.start_inference(inference) as proc:
        assert [proc.predict({"x": 1}, sid="a").result(timeout=60)["y"] for _ in range(3)] == [Integer(n) for n in (1, 2, 3)]
        proc.restart()
        assert proc.predict({"x": 1}, sid="a").result(timeout=60) == {"y": Integer(4)}
    with sqlite3.connect(tmp_path / "states" / "s.db") as db:  # the file the caller named holds the checkpoint
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] >= 1


def test_a_sid_restoring_from_a_hung_store_holds_up_only_itself(own_redis: RedisServer) -> None:
    """A new sid's checkpoint is read outside the executor's lock: while the store hangs (SIGSTOP), a sid
    kept in memory goes on being served; the new one is served, from its checkpoint, once the store answers."""
    own_redis.start()
    store = RedisStateStore(own_redis.url, prefix="hung:", checkpoint=3600.0)  # interval: only restores touch it
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
        assert proc.predict({"x": 1}, sid="warm").result(timeout=30) == {"y": Integer(1)}
        own_redis.freeze()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                cold = pool.submit(lambda: proc.predict({"x": 1}, sid="cold").result(timeout=60))
                for n in range(2, 6):
                    assert proc.predict({"x": 1}, sid="warm").result(timeout=30) == {"y": Integer(n)}
                assert not cold.done(), "the new sid was served although its checkpoint could not be read"
            finally:
                own_redis.thaw()
            assert cold.result(timeout=60) == {"y": Integer(1)}


def test_a_store_that_stops_answering_fails_the_requests_that_need_it_within_its_timeout(own_redis: RedisServer) -> None:
    """A frozen Redis (SIGSTOP) fails, within the store's timeout, the checkpoint of a kept sid (its update stays in
    memory) and the restore of a new one, naming the store; once it answers, the kept update is checkpointed."""
    own_redis.start()
    store = RedisStateStore(own_redis.url, prefix="frozen:", timeout=1.0)
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
        assert proc.predict({"x": 1}, sid="warm").result(timeout=30) == {"y": Integer(1)}
        own_redis.freeze()
        try:
            with pytest.raises(RvaiError, match=r"checkpointing the state of sid 'warm' to the Redis state store .* kept in memory"):
                proc.predict({"x": 1}, sid="warm").result(timeout=60)
            with pytest.raises(ProcessError, match=r"cannot restore the state of sid 'cold' from the Redis state store"):
                proc.predict({"x": 1}, sid="cold").result(timeout=60)
        finally:
            own_redis.thaw()
        assert proc.predict({"x": 1}, sid="warm").result(timeout=30) == {"y": Integer(3)}
        proc.restart()  # from the store: the update the failed checkpoint kept in memory was written with this one
        assert proc.predict({"x": 1}, sid="warm").result(timeout=30) == {"y": Integer(4)}
        assert proc.predict({"x": 1}, sid="cold").result(timeout=30) == {"y": Integer(1)}


# -- drop_state, TTL, errors (debug runtime: the executor in this process) ------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        return SqliteStateStore(tmp_path / "states.db")
    return request.getfixturevalue("redis_store")


def test_drop_state_forgets_the_checkpoint_too(store: Any) -> None:
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
        for _ in range(3):
            proc.predict({"x": 1}, sid="a").result()
        proc.restart()  # memory is empty now; the store still has it
        proc.drop_state("a")
        with pytest.raises(UnknownSidError, match="'a'"):
            proc.get_state("a")
        assert proc.predict({"x": 1}, sid="a").result() == {"y": Integer(1)}
        proc.restart()
        assert proc.predict({"x": 1}, sid="a").result() == {"y": Integer(2)}


class _HeldWrite:
    """Holds the first store write that includes ``sid`` until released (a write in flight when a drop comes)."""

    def __init__(self, sid: str, fail: bool = False) -> None:
        self.sid = sid
        self.fail = fail  # once released, the held write fails instead (the store refused it)
        self.armed = True
        self.held = threading.Event()
        self.release = threading.Event()


_HELD: _HeldWrite | None = None
_HELD_DELETE: _HeldWrite | None = None  # holds the first store delete of its sid the same way
_HELD_LOAD: _HeldWrite | None = None  # and the first read of its sid (a hung store), failing it if ``fail``


class _HoldingOpen(OpenStateStore):
    def __init__(self, inner: OpenStateStore) -> None:
        self._inner = inner

    def load(self, sid: str) -> Any:
        held = _HELD_LOAD
        if held is not None and held.armed and sid == held.sid:
            held.armed = False
            held.held.set()
            assert held.release.wait(60), "the held read was never released"
            if held.fail:
                raise ConnectionError("the store refused the held read (test)")
        return self._inner.load(sid)

    def save(self, checkpoints: Any) -> None:
        checkpoints = list(checkpoints)
        held = _HELD
        if held is not None and held.armed and any(cp[0] == held.sid for cp in checkpoints):
            held.armed = False
            held.held.set()
            assert held.release.wait(60), "the held write was never released"
            if held.fail:
                raise ConnectionError("the store refused the held write (test)")
        self._inner.save(checkpoints)

    def delete(self, sid: str) -> bool:
        held = _HELD_DELETE
        if held is not None and held.armed and sid == held.sid:
            held.armed = False
            held.held.set()
            assert held.release.wait(60), "the held delete was never released"
        return self._inner.delete(sid)

    def close(self) -> None:
        self._inner.close()


class _HoldingSqlite(SqliteStateStore):
    def open(self, ttl: float | None) -> OpenStateStore:
        return _HoldingOpen(super().open(ttl))


class _HoldingRedis(RedisStateStore):
    def open(self, ttl: float | None) -> OpenStateStore:
        return _HoldingOpen(super().open(ttl))


def _inside(thread: threading.Thread, method: str) -> bool:
    """Whether ``thread`` is inside ``Checkpointer.<method>`` now (read off its stack, no timing involved)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == method and frame.f_code.co_filename.endswith("state_store.py"):
            return True
        frame = frame.f_back
    return False


def _holding_store(kind: str, checkpoint: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if kind == "sqlite":
        return _HoldingSqlite(tmp_path / "states.db", checkpoint=checkpoint)
    plain = request.getfixturevalue("redis_store")
    return _HoldingRedis(REDIS_URL, prefix=plain.prefix, checkpoint=checkpoint)


@pytest.mark.parametrize("checkpoint", ["every", 0.05])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_checkpoint_written_while_its_sid_is_dropped_does_not_bring_the_state_back(
    kind: str, checkpoint: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A checkpoint collected before ``drop_state`` and written after its delete would restore the dropped
    state at the next restart: the drop waits for that write, then deletes."""
    global _HELD
    store = _holding_store(kind, checkpoint, tmp_path, request)
    _HELD = _HeldWrite("a")
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            first = proc.predict({"x": 1}, sid="a")  # "every": its own write is held; else the next flush's
            assert _HELD.held.wait(30), "the checkpoint of sid 'a' was never written"
            drop = threading.Thread(target=proc.drop_state, args=("a",), daemon=True)
            drop.start()
            eventually(lambda: not drop.is_alive() or _inside(drop, "delete"), "drop_state reached the store")
            _HELD.release.set()
            drop.join(30)
            assert not drop.is_alive(), "drop_state never returned"
            assert first.result(timeout=30) == {"y": Integer(1)}
            opened = store.open(None)
            try:
                assert opened.load("a") is None, "the dropped sid's checkpoint is back in the store"
            finally:
                opened.close()
            proc.restart()
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}  # fresh, not 2
    finally:
        _HELD.release.set()
        _HELD = None


@pytest.mark.parametrize("checkpoint", ["every", 0.05])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_request_sent_while_its_sid_is_being_dropped_starts_fresh(
    kind: str, checkpoint: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The sid's next request reads the store while drop_state waits for a write of that sid: what it read is
    gone once the drop is done, so it reads again and starts fresh."""
    global _HELD
    store = _holding_store(kind, checkpoint, tmp_path, request)
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}
            opened = store.open(None)
            try:
                assert _wait_for(lambda: opened.load("a") is not None), "the first checkpoint was never written"
            finally:
                opened.close()
            _HELD = _HeldWrite("a")  # the next write of 'a' is held
            first = proc.predict({"x": 1}, sid="a")
            assert _HELD.held.wait(30), "the checkpoint of sid 'a' was never written"
            drop = threading.Thread(target=proc.drop_state, args=("a",), daemon=True)
            drop.start()
            eventually(lambda: not drop.is_alive() or _inside(drop, "delete"), "drop_state reached the store")
            sent: list[Any] = []
            after = threading.Thread(target=lambda: sent.append(proc.predict({"x": 1}, sid="a")), daemon=True)
            after.start()
            eventually(lambda: bool(sent) or _inside(after, "restore"), "the next request of 'a' read the store")
            _HELD.release.set()
            drop.join(30)
            after.join(30)
            assert not drop.is_alive() and sent, "drop_state or the next request never returned"
            assert first.result(timeout=30) == {"y": Integer(2)}
            assert sent[0].result(timeout=30) == {"y": Integer(1)}  # fresh: not 2 or 3 from the dropped checkpoints
            proc.restart()
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(2)}  # its own state goes on
    finally:
        if _HELD is not None:
            _HELD.release.set()
        _HELD = None


@pytest.mark.parametrize("checkpoint", ["every", 0.05])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_drop_waiting_on_its_sids_write_holds_up_no_other_sid(
    kind: str, checkpoint: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """drop_state waits for a write of its sid under way, outside the executor's lock: other sids go on."""
    global _HELD
    store = _holding_store(kind, checkpoint, tmp_path, request)
    _HELD = _HeldWrite("a")
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            assert proc.predict({"x": 1}, sid="b").result(timeout=30) == {"y": Integer(1)}
            first = proc.predict({"x": 1}, sid="a")
            assert _HELD.held.wait(30), "the checkpoint of sid 'a' was never written"
            drop = threading.Thread(target=proc.drop_state, args=("a",), daemon=True)
            drop.start()
            eventually(lambda: not drop.is_alive() or _inside(drop, "delete"), "drop_state reached the store")
            answers: list[Any] = []
            other = threading.Thread(
                target=lambda: answers.extend(proc.predict({"x": 1}, sid="b").result(timeout=30) for _ in range(3)),
                daemon=True,
            )
            other.start()
            other.join(30)
            assert answers == [{"y": Integer(n)} for n in (2, 3, 4)], "sid 'b' waited for the drop of sid 'a'"
            assert drop.is_alive(), "the drop did not wait for the write of its sid"
            _HELD.release.set()
            drop.join(30)
            assert not drop.is_alive(), "drop_state never returned"
            assert first.result(timeout=30) == {"y": Integer(1)}
            proc.restart()
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}  # dropped: fresh
            assert proc.predict({"x": 1}, sid="b").result(timeout=30) == {"y": Integer(5)}
    finally:
        _HELD.release.set()
        _HELD = None


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_get_state_of_a_sid_only_in_a_hung_store_holds_up_no_other_sid_and_names_the_store_when_it_fails(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """get_state of a sid not in memory reads the store outside the executor's lock, as a request does; a read
    that fails is a ProcessError naming the store, not the client library's own exception."""
    global _HELD_LOAD
    store = _holding_store(kind, "every", tmp_path, request)
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            assert proc.predict({"x": 1}, sid="stored").result(timeout=30) == {"y": Integer(1)}
            proc.restart()  # 'stored' is in the store only now
            assert proc.predict({"x": 1}, sid="busy").result(timeout=30) == {"y": Integer(1)}
            for fail in (False, True):
                _HELD_LOAD = _HeldWrite("stored", fail=fail)
                got: list[Any] = []

                def read() -> None:
                    try:
                        got.append(proc.get_state("stored"))
                    except Exception as exc:
                        got.append(exc)

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                assert _HELD_LOAD.held.wait(30), "get_state never read the store"
                answers = [proc.predict({"x": 1}, sid="busy").result(timeout=30) for _ in range(3)]
                assert reader.is_alive() and not got, "the read was not held while 'busy' was served"
                assert [a["y"] for a in answers] == [Integer(n) for n in range(2 + 3 * fail, 5 + 3 * fail)]
                _HELD_LOAD.release.set()
                reader.join(30)
                assert not reader.is_alive(), "get_state never returned"
                if fail:
                    assert isinstance(got[0], ProcessError), got
                    assert store.describe() in str(got[0]) and "'stored'" in str(got[0])
                else:
                    assert [s.n for s in got[0].values()] == [Integer(1)]
    finally:
        if _HELD_LOAD is not None:
            _HELD_LOAD.release.set()
        _HELD_LOAD = None


def _stored(store: Any, sid: str) -> Any:
    opened = store.open(None)
    try:
        return opened.load(sid)
    finally:
        opened.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_second_drop_while_the_first_deletes_forgets_the_request_sent_between_them(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A request sent during a drop's delete writes after it; a second drop_state meanwhile drops that request's
    state too, so its checkpoint, still waiting to be written, is never written."""
    global _HELD_DELETE
    store = _holding_store(kind, "every", tmp_path, request)
    _HELD_DELETE = _HeldWrite("a")
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}
            first = threading.Thread(target=proc.drop_state, args=("a",), daemon=True)
            first.start()
            assert _HELD_DELETE.held.wait(30), "the first drop never reached the store"
            between = proc.predict({"x": 1}, sid="a")  # fresh; its checkpoint waits for the delete
            eventually(lambda: between.done() or any(_inside(t, "commit") for t in threading.enumerate()),
                       "the request's checkpoint waits for the delete")
            proc.drop_state("a")
            _HELD_DELETE.release.set()
            first.join(30)
            assert not first.is_alive(), "the first drop_state never returned"
            assert between.result(timeout=30) == {"y": Integer(1)}
            assert _stored(store, "a") is None, "a checkpoint of sid 'a' was written after its last drop_state"
            proc.restart()
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}
    finally:
        _HELD_DELETE.release.set()
        _HELD_DELETE = None


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_batch_waiting_for_one_sids_delete_does_not_write_another_sid_dropped_meanwhile(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    global _HELD_DELETE
    store = _holding_store(kind, "every", tmp_path, request)
    inference = Inference(
        pipeline=single(BatchRemember), state_store=store, batching={"c0": BatchingPolicy(max_batch_size=2, max_batch_wait=30)}
    )
    _HELD_DELETE = _HeldWrite("b")
    try:
        with init("debug") as rt, rt.start_inference(inference) as proc:
            assert [f.result(timeout=30)["seen"] for f in [proc.predict({"x": 0}, sid=s) for s in "ab"]] == [[0], [0]]
            drop_b = threading.Thread(target=proc.drop_state, args=("b",), daemon=True)
            drop_b.start()
            assert _HELD_DELETE.held.wait(30), "the drop of 'b' never reached the store"
            batch = [proc.predict({"x": 1}, sid=s) for s in "ab"]  # one batch: its checkpoint waits for b's delete
            eventually(lambda: any(_inside(t, "commit") for t in threading.enumerate()), "the batch's checkpoint waits")
            proc.drop_state("a")  # nothing of 'a' is being written: it returns at once
            _HELD_DELETE.release.set()
            drop_b.join(30)
            assert not drop_b.is_alive(), "the drop of 'b' never returned"
            assert [f.result(timeout=30)["seen"] for f in batch] == [[0, 1], [1]]
            assert _stored(store, "a") is None, "sid 'a' was written after its drop_state returned"
            assert _stored(store, "b") is not None, "the request of 'b' sent after its drop was not checkpointed"
    finally:
        _HELD_DELETE.release.set()
        _HELD_DELETE = None


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_stop_during_a_drops_delete_lets_the_delete_finish(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    global _HELD_DELETE
    store = _holding_store(kind, "every", tmp_path, request)
    _HELD_DELETE = _HeldWrite("a")
    errors: list[BaseException] = []

    def drop() -> None:
        try:
            proc.drop_state("a")
        except BaseException as exc:
            errors.append(exc)

    try:
        with init("debug") as rt:
            proc = rt.start_inference(Inference(pipeline=single(Count), state_store=store))
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}
            dropping = threading.Thread(target=drop, daemon=True)
            dropping.start()
            assert _HELD_DELETE.held.wait(30), "the drop never reached the store"
            stopping = threading.Thread(target=proc.stop, daemon=True)
            stopping.start()
            eventually(lambda: not stopping.is_alive() or _inside(stopping, "close"), "the stop reached the store")
            _HELD_DELETE.release.set()
            dropping.join(30)
            stopping.join(30)
            assert not dropping.is_alive() and not stopping.is_alive(), "drop_state or stop never returned"
            assert errors == []
            assert _stored(store, "a") is None, "the dropped checkpoint is still in the store"
            with rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as again:
                assert again.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}
    finally:
        _HELD_DELETE.release.set()
        _HELD_DELETE = None


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_flush_refused_while_its_sid_is_dropped_does_not_queue_the_dropped_state_again(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A background flush queues what the store refused for the next flush, except a sid dropped meanwhile."""
    global _HELD
    store = _holding_store(kind, 0.05, tmp_path, request)
    _HELD = _HeldWrite("a", fail=True)
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}
            assert _HELD.held.wait(30), "the checkpoint of sid 'a' was never flushed"
            drop = threading.Thread(target=proc.drop_state, args=("a",), daemon=True)
            drop.start()
            eventually(lambda: not drop.is_alive() or _inside(drop, "delete"), "drop_state reached the store")
            _HELD.release.set()  # the flush fails now, with the drop under way
            drop.join(30)
            assert not drop.is_alive(), "drop_state never returned"
            assert proc.predict({"x": 1}, sid="b").result(timeout=30) == {"y": Integer(1)}
            opened = store.open(None)
            try:  # a later flush wrote b: the refused checkpoint of a, if queued again, went with it
                assert _wait_for(lambda: opened.load("b") is not None), "the checkpoint of 'b' was never written"
                assert opened.load("a") is None, "the dropped sid's refused checkpoint was written after all"
            finally:
                opened.close()
            proc.restart()
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}  # fresh
    finally:
        _HELD.release.set()
        _HELD = None


class _FailingOnceOpen(_HoldingOpen):
    def __init__(self, inner: OpenStateStore) -> None:
        super().__init__(inner)
        self.failed = False

    def save(self, checkpoints: Any) -> None:
        if not self.failed:
            self.failed = True
            raise ConnectionError("the store is down (once)")
        super().save(checkpoints)


class _FailingOnceSqlite(SqliteStateStore):
    def open(self, ttl: float | None) -> OpenStateStore:
        return _FailingOnceOpen(super().open(ttl))


def test_checkpoints_a_background_flush_could_not_write_are_written_by_the_next_one(tmp_path: Path) -> None:
    store = _FailingOnceSqlite(tmp_path / "states.db", checkpoint=0.05)
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
        for expected in (1, 2, 3):
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(expected)}
        opened = SqliteStateStore(tmp_path / "states.db").open(None)
        try:
            assert _wait_for(lambda: (opened.load("a") or (0,))[0] == 3, timeout=30), "the checkpoint was never written"
        finally:
            opened.close()
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
        assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(4)}


def test_a_request_whose_checkpoint_cannot_be_written_is_counted_failed_not_succeeded(tmp_path: Path) -> None:
    store = _FailingOnceSqlite(tmp_path / "states.db")  # "every": the first request's write fails
    with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
        with pytest.raises(RvaiError, match="checkpointing the state of sid 'a'"):
            proc.predict({"x": 1}, sid="a").result(timeout=30)
        assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(2)}  # kept in memory
        requests = proc.stats()["requests"]
        assert (requests["succeeded"], requests["failed"]) == (1, 1), requests


def test_success_is_counted_once_the_checkpoint_is_written_so_the_counter_never_goes_back(tmp_path: Path) -> None:
    """Counted when the cells finished and taken back when the write failed, ``succeeded`` (a Prometheus counter)
    went down: a counter reset to every rate() over it."""
    global _HELD
    store = _HoldingSqlite(tmp_path / "states.db")
    _HELD = _HeldWrite("a", fail=True)
    try:
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            pending = proc.predict({"x": 1}, sid="a")
            assert _HELD.held.wait(30), "the checkpoint was never written"
            requests = proc.stats()["requests"]
            assert (requests["succeeded"], requests["failed"]) == (0, 0), "counted before its checkpoint was written"
            _HELD.release.set()
            with pytest.raises(RvaiError, match="checkpointing the state of sid 'a'"):
                pending.result(timeout=30)
            assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(2)}
            requests = proc.stats()["requests"]
            assert (requests["succeeded"], requests["failed"]) == (1, 1), requests
    finally:
        _HELD.release.set()
        _HELD = None


def test_state_ttl_expires_checkpoints(store: Any) -> None:
    inference = Inference(pipeline=single(Count), state_store=store, state_ttl=0.3)
    with init("debug") as rt, rt.start_inference(inference) as proc:
        assert proc.predict({"x": 1}, sid="a").result() == {"y": Integer(1)}
        assert proc.predict({"x": 1}, sid="a").result() == {"y": Integer(2)}
        proc.restart()
        opened = store.open(0.3)
        try:
            assert _wait_for(lambda: opened.load("a") is None, timeout=30), "the checkpoint outlived its TTL"
        finally:
            opened.close()
        assert proc.predict({"x": 1}, sid="a").result() == {"y": Integer(1)}  # started fresh
        proc.restart()
        assert proc.predict({"x": 1}, sid="a").result() == {"y": Integer(2)}  # and its new checkpoint counts


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_sid_that_expired_before_the_interval_flush_is_not_brought_back(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """state_ttl counts from a sid's last update, also for a checkpoint queued by the interval policy: one
    expired in memory is not restored from the queue, nor from a row the flush wrote after it expired."""
    if kind == "sqlite":
        store: Any = SqliteStateStore(tmp_path / "states.db", checkpoint=3600)  # flushed only on stop
    else:
        store = RedisStateStore(REDIS_URL, prefix=request.getfixturevalue("redis_store").prefix, checkpoint=3600)
    inference = Inference(pipeline=single(Count), state_store=store, state_ttl=2.0)
    with init("debug") as rt, rt.start_inference(inference) as proc:
        assert proc.predict({"x": 1}, sid="b").result(timeout=30) == {"y": Integer(1)}
        assert _wait_for(lambda: "b" not in proc.sids()), "sid 'b' never expired in memory"
        proc.restart()  # the stop flushes the queue, 'b' included, expired
        assert proc.predict({"x": 1}, sid="b").result(timeout=30) == {"y": Integer(1)}, "restored from the store"
        assert [proc.predict({"x": 1}, sid="a").result(timeout=30)["y"] for _ in range(3)] == [1, 2, 3]
        assert _wait_for(lambda: "a" not in proc.sids()), "sid 'a' never expired in memory"
        assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(1)}, "restored from the queue"
        assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(2)}
        proc.restart()  # within the TTL: the stop flushes 'a' afresh, not its expired first life
        assert proc.predict({"x": 1}, sid="a").result(timeout=30) == {"y": Integer(3)}, "the fresh start's updates were lost"


def test_a_state_that_cannot_be_serialised_fails_naming_cell_and_sid(tmp_path: Path) -> None:
    inference = Inference(pipeline=single(HoldsALock), state_store=tmp_path / "s.db")
    with init("debug") as rt, rt.start_inference(inference) as proc:
        with pytest.raises(CellError, match=r"state of cell 'c0' for sid 'cam-7'.*field 'n'.*picklable") as info:
            proc.predict({"x": 1}, sid="cam-7").result()
        assert info.value.ref == "c0" and info.value.sid == "cam-7"
        assert proc.predict({"x": 1}).result() == {"y": Integer(1)}  # no sid: nothing to keep


def test_bad_store_arguments_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="state_store"):
        Inference(pipeline=single(Count), state_store=42)
    # another scheme used to be taken for a relative file path (a file named 'postgresql:' appeared)
    with pytest.raises(ParameterError, match=r"state_store=postgresql://\.\.\.\) is not a store"):
        Inference(pipeline=single(Count), state_store="postgresql://db/state")
    absolute = Inference(pipeline=single(Count), state_store=f"sqlite:///{tmp_path / 's.db'}").state_store
    assert isinstance(absolute, SqliteStateStore) and "sqlite:" not in absolute.describe()
    assert str(tmp_path / "s.db") in absolute.describe()
    with pytest.raises(ParameterError, match="checkpoint"):
        SqliteStateStore(tmp_path / "s.db", checkpoint=0)
    with pytest.raises(ParameterError, match="redis://"):
        RedisStateStore("127.0.0.1:6379")
    require_extra("redis")
    unreachable = Inference(pipeline=single(Count), state_store=RedisStateStore("redis://127.0.0.1:1/0"))
    with init("debug") as rt, pytest.raises(RvaiError, match="cannot open the Redis state store"):
        rt.start_inference(unreachable)


def test_an_older_checkpoint_never_overwrites_a_newer_one(store: Any) -> None:
    opened = store.open(None)
    try:
        now = time.time()
        opened.save([("a", 2, {"c": b"two"}, now)])
        opened.save([("a", 1, {"c": b"one"}, now), ("b", 1, {"c": b"b1"}, now)])  # one batch: a is stale, b is new
        assert opened.load("a") == (2, {"c": b"two"})
        assert opened.load("b") == (1, {"c": b"b1"})
        assert opened.delete("a") and not opened.delete("a")
    finally:
        opened.close()


def test_interval_checkpoints_are_written_on_stop(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.db", checkpoint=3600)
    with init("debug") as rt:
        with rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            for _ in range(3):
                proc.predict({"x": 1}, sid="a").result()
        with rt.start_inference(Inference(pipeline=single(Count), state_store=store)) as proc:
            assert proc.predict({"x": 1}, sid="a").result() == {"y": Integer(4)}


def test_a_batched_cell_continues_every_sid_after_restart(tmp_path: Path, batches: BatchLog) -> None:
    sids = [f"s{i}" for i in range(6)]
    inference = Inference(pipeline=single(BatchRemember), state_store=tmp_path / "s.db")
    with init("debug") as rt, rt.start_inference(inference) as proc:
        for x in range(3):
            futures = [proc.predict({"x": x}, sid=sid) for sid in sids]  # one batch of several sids per round
            assert all(f.result(timeout=30)["seen"] == list(range(x + 1)) for f in futures)
        proc.restart()
        futures = [proc.predict({"x": 3}, sid=sid) for sid in sids]
        assert [f.result(timeout=30)["seen"] for f in futures] == [[0, 1, 2, 3]] * len(sids)


def test_with_a_store_max_states_bounds_memory_only_and_evicted_sids_continue(tmp_path: Path) -> None:
    sids = [f"s{i}" for i in range(30)]
    inference = Inference(pipeline=single(Count), state_store=tmp_path / "s.db", max_states=4)
    with init("debug") as rt, rt.start_inference(inference) as proc:
        for n in range(1, 6):
            replies = {sid: proc.predict({"x": 1}, sid=sid).result(timeout=30)["y"] for sid in sids}  # 30 sids, 4 kept
            assert replies == {sid: Integer(n) for sid in sids}
        assert len(proc.sids()) <= 4
        assert proc.stats()["sids"]["evicted"] > 0  # so the counts above came back from the store


# -- a damaged checkpoint -------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["debug", "local"])
def test_a_damaged_checkpoint_fails_its_sids_requests_naming_it_and_its_stream_goes_on(runtime: str, tmp_path: Path) -> None:
    """It used to be a ProcessError ('the process cannot be reached'): HTTP answered 503 'retry', and a stream
    resent the same frames for ever, its state 'waiting' while the process was ready."""
    import pickle

    from rvai_sdk.exc import StateRestoreError
    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.dummy_sink import DummySink
    from rvai_sdk.extensions.sources.dummy_source import DummySource
    from rvai_sdk.types import FloatRange

    db = tmp_path / "state.db"
    damage_checkpoint(db, "cam-1", b"not a pickle")
    damage_checkpoint(db, "cam-3", pickle.dumps({"c0": b"not a pickle either"}))  # the outer layer is fine, the State is not
    with init(runtime) as rt, rt.start_inference(Inference(pipeline=single(Count), state_store=SqliteStateStore(str(db)))) as proc:
        for sid, what in (("cam-1", "checkpoint of sid 'cam-1' is damaged"), ("cam-3", "state of cell 'c0' of sid 'cam-3'")):
            with pytest.raises(StateRestoreError, match=rf"{what}.*drop_state\('{sid}'\)") as info:
                proc.predict({"x": 1}, sid=sid).result(timeout=30)
            assert info.value.sid == sid
        assert proc.predict({"x": 1}, sid="cam-2").result(timeout=30) == {"y": Integer(1)}

        def counting() -> DummySource:
            return DummySource(params=DummySource.parameters(rate=FloatRange(0.0), count=5, seed=1))

        handle = proc.add_driver("d", SourceSinkDriver, sources={"cam-1": counting(), "cam-4": counting()}, sinks={"out": DummySink()})
        streams = SourceSinkDriver.wait(handle, timeout=60)["sources"]
        assert (streams["cam-1"]["state"], streams["cam-1"]["failed"], streams["cam-1"]["resent"]) == ("ended", 5, 0), streams
        assert (streams["cam-4"]["state"], streams["cam-4"]["processed"]) == ("ended", 5)
        handle.stop()
        proc.drop_state("cam-1")  # what the error says to do: the sid starts afresh
        assert proc.predict({"x": 1}, sid="cam-1").result(timeout=30) == {"y": Integer(1)}
