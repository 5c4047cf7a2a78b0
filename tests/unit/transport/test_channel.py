"""The Unix-socket transport alone, without a runtime: framing, shared-memory slots, coalescing, peer death.

Both ends are real: a connected Unix socket pair in this process, and for peer death a
real child process that is killed with SIGKILL.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rvai_sdk.exc import ProcessError
from rvai_sdk.transport.channel import INLINE_THRESHOLD, Channel, Listener, connect, new_address
from rvai_sdk.transport.client import UnixLink
from rvai_sdk.transport.link import CONTROL_METHODS, Link
from rvai_sdk.transport.shm import SlotPool, shm_supported
from rvai_sdk.types import Image, Integer

ROOT = Path(__file__).resolve().parents[3]
needs_shm = pytest.mark.skipif(not shm_supported(), reason="no memfd_create on this platform")


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = Channel(a, SlotPool(max_bytes=64 << 20)), Channel(b, SlotPool(max_bytes=64 << 20))
    yield left, right
    left.close()
    right.close()


def _recv_ops(channel: Channel, count: int) -> list[Any]:
    """The next ``count`` operations, however many frames they came in (bounded by ``count`` frames)."""
    ops: list[Any] = []
    for _ in range(count):
        frame = channel.recv()
        assert frame is not None, "the peer closed the connection"
        ops.extend(frame)
        if len(ops) >= count:
            break
    return ops


def test_operations_keep_their_values_and_order_across_the_socket(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    small = np.arange(12, dtype=np.float32).reshape(3, 4)
    ops = [("p", 1, "cam-1", {"x": Integer(3), "a": small}), ("c", 2, "stats", ()), ("r", 3, False, ValueError("no"))]
    for op in ops:
        left.post(op)
    got = _recv_ops(right, len(ops))
    assert [op[:2] for op in got] == [op[:2] for op in ops]
    assert got[0][3]["x"] == Integer(3) and type(got[0][3]["x"]) is Integer
    np.testing.assert_array_equal(got[0][3]["a"], small)
    assert got[0][3]["a"].dtype == np.float32 and got[0][3]["a"].shape == (3, 4)
    assert isinstance(got[2][3], ValueError) and str(got[2][3]) == "no"


def test_a_frame_larger_than_the_receive_buffer_arrives_whole(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    left.pool = right.pool = None  # everything inline: one frame of several MB through the socket
    big = np.random.default_rng(0).integers(0, 255, size=(1080, 1920, 3), dtype=np.uint8)
    writer = threading.Thread(target=left.post, args=(("p", 1, None, {"frame": big, "text": "x" * 200_000}),))
    writer.start()  # the socket buffer is smaller than the frame: the reader must run meanwhile
    (op,) = _recv_ops(right, 1)
    writer.join(10)
    np.testing.assert_array_equal(op[3]["frame"], big)
    assert op[3]["text"] == "x" * 200_000


def test_objects_the_standard_pickler_refuses_travel_with_dill_for_that_frame(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    scale = 3
    left.post(("c", 1, "call", (lambda v: v * scale,)))  # a closure: not picklable by the standard pickler
    (op,) = _recv_ops(right, 1)
    assert op[3][0](2) == 6


@needs_shm
def test_large_arrays_arrive_in_shared_memory_and_their_slot_is_reused_once_released(
    pair: tuple[Channel, Channel],
) -> None:
    left, right = pair
    assert left.pool is not None
    frame = np.full((720, 1280, 3), 7, dtype=np.uint8)
    assert frame.nbytes >= INLINE_THRESHOLD
    left.post(("p", 1, None, {"image": Image(frame)}))
    (op,) = _recv_ops(right, 1)
    received = op[3]["image"]
    assert type(received) is Image and received.shape == frame.shape and int(received[5, 5, 1]) == 7
    assert left.pool.stats() == {"slots": 1, "bytes": left.pool.stats()["bytes"], "leased": 1}
    # The receiver drops its last view: the release travels back and the slot is free again.
    del received, op
    gc.collect()
    released = threading.Event()

    def read_release() -> None:
        for _ in range(10):
            ops = left.recv()
            if ops is None:
                return
            for item in ops:
                if item[0] == "x":
                    left.pool.release(item[1], left)  # type: ignore[union-attr]
                    released.set()
                    return

    reader = threading.Thread(target=read_release, daemon=True)
    reader.start()
    assert released.wait(10), "the receiver never gave the slot back"
    assert left.pool.stats()["leased"] == 0
    left.post(("p", 2, None, {"image": frame}))  # the same size class: the same slot, no new segment
    (again,) = _recv_ops(right, 1)
    np.testing.assert_array_equal(again[3]["image"], frame)
    assert left.pool.stats()["slots"] == 1


@needs_shm
def test_a_full_pool_sends_arrays_inline_instead() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = Channel(a, SlotPool(max_bytes=INLINE_THRESHOLD)), Channel(b, None)
    try:
        first = np.ones(INLINE_THRESHOLD, dtype=np.uint8)
        second = np.full(INLINE_THRESHOLD, 2, dtype=np.uint8)
        left.post(("p", 1, None, {"a": first, "b": second}))  # the second finds the pool full
        (op,) = _recv_ops(right, 1)
        np.testing.assert_array_equal(op[3]["a"], first)
        np.testing.assert_array_equal(op[3]["b"], second)
        assert left.pool is not None and left.pool.stats()["slots"] == 1
    finally:
        left.close()
        right.close()


def test_operations_posted_while_corked_leave_together_in_one_frame(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    left.cork()
    for rid in range(50):
        left.post(("r", rid, True, {"y": rid}))
    left.uncork()
    frame = right.recv()
    assert frame is not None and [op[1] for op in frame] == list(range(50))


def test_posts_from_many_threads_all_arrive_exactly_once(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    threads = [
        threading.Thread(target=lambda t=t: [left.post_soon(("r", t * 100 + i, True, i)) for i in range(100)])
        for t in range(8)
    ]
    for thread in threads:
        thread.start()
    got = _recv_ops(right, 800)
    for thread in threads:
        thread.join(10)
    assert sorted(op[1] for op in got) == sorted(t * 100 + i for t in range(8) for i in range(100))


def test_both_readers_answering_every_frame_never_wedge_on_full_sockets() -> None:
    # Both ends' readers send while they read (replies; requests made from completion
    # callbacks), corked per frame as the link and the server do. Here each reader, told to
    # start, sends a burst larger than the sockets hold, then answers every message it gets.
    # If a reader waited for room to write, both would wait on each other and never read
    # again (this wedged a 4,096-stream benchmark). Every chain must reach its end.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    left, right = Channel(a, None), Channel(b, None)
    chains, hops = 100, 20
    finished: list[tuple[str, int]] = []
    all_done = threading.Event()

    def answer(channel: Channel, side: str) -> None:
        while True:
            frame = channel.recv()
            if frame is None:
                return
            channel.cork()
            for op in frame:
                if op[0] == "start":
                    for chain in range(chains):
                        channel.post(("hop", f"{side}{chain}", 0, os.urandom(4096)))  # distinct: not memoised
                elif op[2] < hops:
                    channel.post(("hop", op[1], op[2] + 1, os.urandom(4096)))
                else:
                    finished.append(op[1])
                    if len(finished) == 2 * chains:
                        all_done.set()
            channel.uncork()

    left.post(("start",))  # sent before the readers run: from then on only they write
    right.post(("start",))
    readers = [threading.Thread(target=answer, args=pair, daemon=True) for pair in ((left, "L"), (right, "R"))]
    for reader in readers:
        reader.start()
    try:
        assert all_done.wait(60), (
            f"{2 * chains - len(finished)} of {2 * chains} chains stuck: the readers wedged, each waiting to write"
        )
        assert sorted(finished) == sorted(f"{side}{chain}" for side in "LR" for chain in range(chains))
    finally:
        left.close()
        right.close()
        for reader in readers:
            reader.join(10)


def test_a_closed_peer_ends_recv_and_posting_to_it_never_raises(pair: tuple[Channel, Channel]) -> None:
    left, right = pair
    left.close()
    assert right.recv() is None
    right.post(("r", 1, True, None))  # broken: dropped quietly, the reader reports the end
    right.post(("r", 2, True, None))
    assert right.broken


def test_a_listener_refuses_a_wrong_key_and_accepts_the_right_one() -> None:
    address = new_address()
    listener = Listener(address, b"k" * 32)
    accepted: list[socket.socket | None] = []
    acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    acceptor.start()
    try:
        with pytest.raises(OSError):
            connect(address, b"w" * 32, timeout=5).close()
        sock = connect(address, b"k" * 32, timeout=5)
        acceptor.join(10)
        assert accepted and accepted[0] is not None
        sock.close()
        accepted[0].close()
    finally:
        listener.close()


_PEER = """
import sys, threading
from rvai_sdk.transport.channel import Listener
listener = Listener(bytes.fromhex(sys.argv[1]).decode(), bytes.fromhex(sys.argv[2]))
conn = listener.accept()
print("accepted", flush=True)
threading.Event().wait()  # never answers: the test kills this process
"""


def test_a_peer_killed_with_sigkill_fails_every_pending_request_at_once() -> None:
    address, key = new_address(), os.urandom(32)
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, address.encode().hex(), key.hex()],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    link = UnixLink(address, key, name="p", pool=None, explain_loss=lambda: "killed by the test")
    try:
        for _ in range(200):  # the child needs a moment to listen; bounded
            try:
                link.connect(timeout=5)
                break
            except ProcessError:
                threading.Event().wait(0.05)
        assert peer.stdout is not None and peer.stdout.readline().strip() == "accepted"
        futures: list[Future[dict[str, Any]]] = [link.submit({"x": i}, "s") for i in range(20)]
        assert not any(f.done() for f in futures)
        peer.send_signal(signal.SIGKILL)
        for future in futures:
            with pytest.raises(ProcessError, match="lost the inference process of pipeline 'p' \\(killed by the test\\)"):
                future.result(timeout=10)
        with pytest.raises(ProcessError, match="cannot reach the inference process of pipeline 'p'"):
            link.submit({"x": 1}, "s")
    finally:
        link.close()
        peer.kill()
        peer.wait(10)
        if peer.stdout is not None:
            peer.stdout.close()


def test_every_link_answers_the_same_control_calls() -> None:
    assert {"get_parameters", "set_parameters", "drop_state", "get_state", "sids", "stats", "ready"} <= CONTROL_METHODS
    assert Link.__abstractmethods__ == frozenset({"submit", "call", "close"})
