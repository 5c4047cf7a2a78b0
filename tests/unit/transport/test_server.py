"""The inference server alone: a real Unix socket, a real executor, frames written by hand.

Requests whose cells are quick run on the thread that read them; when one of those calls
hangs, another thread takes the reading over. These tests send several requests in one
frame to check that such a takeover keeps every request, answers each once, and keeps
each sid's requests in the order they were sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Parameters
from rvai_sdk.execution import Executor
from rvai_sdk.transport.channel import Channel, connect, new_address
from rvai_sdk.transport.server import InferenceServer
from rvai_sdk.types import Integer, List
from tests.conftest import Seen, XIn, YOut, single

pytestmark = pytest.mark.timeout(60)

HANG = 99


@cell(state=Seen, concurrency=4)
class Gate(Cell):
    """Appends x to its sid's state; x == HANG waits for the test to open the gate. Records where it ran."""

    gate = threading.Event()
    threads: dict[int, str] = {}
    finished: set[int] = set()

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: XIn) -> YOut:
        cls.threads[int(inputs.x)] = threading.current_thread().name + f"#{threading.get_ident()}"
        try:
            if inputs.x == HANG:
                assert cls.gate.wait(30), "the test never opened the gate"
            context.state.xs = List[Integer]([*context.state.xs, inputs.x])
            return YOut(y=inputs.x)
        finally:
            cls.finished.add(int(inputs.x))


@pytest.fixture
def served() -> Iterator[tuple[Executor, Channel]]:
    Gate.gate.clear()
    Gate.threads.clear()
    Gate.finished.clear()
    executor = Executor(single(Gate))
    executor.start()
    address, key = new_address(), b"k" * 32
    server = InferenceServer(executor, address, key, None)
    server.start(tune_gc=False)
    channel = Channel(connect(address, key), None)
    try:
        yield executor, channel
    finally:
        Gate.gate.set()
        channel.close()
        server.close()
        executor.stop()


def send_frame(channel: Channel, ops: list[Any]) -> None:
    """Send ``ops`` in one frame (posts made while corked leave together)."""
    channel.cork()
    for op in ops:
        channel.post(op)
    channel.uncork()


def answers(channel: Channel, count: int) -> dict[int, Any]:
    """The next ``count`` answers by request id; fails on an answer that comes twice."""
    got: dict[int, Any] = {}
    while len(got) < count:
        frame = channel.recv()
        assert frame is not None, "the server closed the connection"
        for op in frame:
            assert op[0] == "r", op
            assert op[1] not in got, f"request {op[1]} was answered twice"
            got[op[1]] = op[3] if op[2] else op[3]
    return got


def test_a_takeover_in_the_middle_of_a_frame_answers_the_rest_of_it_once_and_in_each_sids_order(
    served: tuple[Executor, Channel],
) -> None:
    executor, channel = served
    # Enough quick calls, in one frame, for the cell to run on the reading thread.
    send_frame(channel, [("p", rid, f"warm-{rid % 4}", {"x": Integer(rid)}) for rid in range(1, 41)])
    assert answers(channel, 40) == {rid: {"y": rid} for rid in range(1, 41)}

    # One frame: sid a's first call hangs on the reading thread; the rest of the frame is behind it.
    send_frame(
        channel,
        [
            ("p", 100, "a", {"x": Integer(HANG)}),
            ("p", 101, "b", {"x": Integer(1)}),
            ("p", 102, "a", {"x": Integer(2)}),
            ("p", 103, "b", {"x": Integer(2)}),
            ("c", 104, "ping", ()),
            ("p", 105, "a", {"x": Integer(3)}),
        ],
    )
    # While it hangs, another thread has taken the reading over and handled the rest of the frame:
    # sid b's requests and the control call are answered; sid a's wait behind its hung call.
    early = answers(channel, 3)
    assert early == {101: {"y": 1}, 103: {"y": 2}, 104: True}
    hung_on, b_on = Gate.threads[HANG], Gate.threads[1]
    assert hung_on.startswith("rvai-conn"), f"the quick cell did not run on the reading thread ({hung_on})"
    assert b_on.startswith("rvai-conn") and b_on != hung_on, "sid b was not handled by a new reading thread"
    # A frame sent now is read too.
    send_frame(channel, [("p", 106, "c", {"x": Integer(7)})])
    assert answers(channel, 1) == {106: {"y": 7}}

    Gate.gate.set()
    assert answers(channel, 3) == {100: {"y": HANG}, 102: {"y": 2}, 105: {"y": 3}}
    assert [int(x) for x in executor.get_state("a")["c0"].xs] == [HANG, 2, 3]
    assert [int(x) for x in executor.get_state("b")["c0"].xs] == [1, 2]
    # Every request was submitted once, and the connection goes on working.
    assert executor.stats()["requests"]["submitted"] == 40 + 5 + 1
    send_frame(channel, [("p", 107 + i, "a", {"x": Integer(10 + i)}) for i in range(3)])
    assert answers(channel, 3) == {107 + i: {"y": 10 + i} for i in range(3)}
    assert [int(x) for x in executor.get_state("a")["c0"].xs] == [HANG, 2, 3, 10, 11, 12]


def test_answers_ready_before_a_call_that_hangs_are_not_held_back_by_it(served: tuple[Executor, Channel]) -> None:
    from rvai_sdk.transport.server import ANSWER_EVERY

    executor, channel = served
    send_frame(channel, [("p", rid, f"warm-{rid % 4}", {"x": Integer(rid)}) for rid in range(1, 41)])
    assert len(answers(channel, 40)) == 40
    # One frame: more quick requests than leave in one batch of answers, then one that hangs, last.
    before = ANSWER_EVERY + 5
    ops: list[Any] = [("p", 1000 + i, f"s{i}", {"x": Integer(1000 + i)}) for i in range(before)]
    ops.append(("p", 5000, "hung", {"x": Integer(HANG)}))
    send_frame(channel, ops)
    # All of them arrive while the call still hangs: the last few were ready but not sent yet when it
    # started; the thread that takes the reading over sends them.
    assert answers(channel, before) == {1000 + i: {"y": 1000 + i} for i in range(before)}
    assert executor.stats()["requests"]["in_flight"] == 1
    Gate.gate.set()
    assert answers(channel, 1) == {5000: {"y": HANG}}


def test_a_request_whose_call_hangs_on_the_reading_thread_is_answered_at_its_deadline(
    served: tuple[Executor, Channel],
) -> None:
    from rvai_sdk.exc import DeadlineExceededError

    executor, channel = served
    send_frame(channel, [("p", rid, f"warm-{rid % 4}", {"x": Integer(rid)}) for rid in range(1, 41)])
    assert len(answers(channel, 40)) == 40
    send_frame(channel, [("p", 500, "d", {"x": Integer(HANG)}, 0.3)])  # a deadline 0.3 s from now
    got = answers(channel, 1)
    assert HANG not in Gate.finished, "the deadline was answered only once the hung call ended"
    assert isinstance(got[500], DeadlineExceededError), got
    assert Gate.threads[HANG].startswith("rvai-conn"), "the call did not run on the reading thread"
    Gate.gate.set()
    send_frame(channel, [("p", 501, "d", {"x": Integer(5)})])
    assert answers(channel, 1) == {501: {"y": 5}}  # the late result was dropped, not sent as a second answer
