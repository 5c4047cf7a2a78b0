"""Page-locking of shared-memory slots: every registration checked, released before its unmap, under churn.

CUDA is replaced by a shim that behaves as the CUDA runtime documents: registering a
range that overlaps a registered one fails (error 712, "memory already registered"),
unregistering an address that holds no registration fails (713). The shim also checks,
at every unregister, that the memory is still mapped: a registration must be released
before its slot is unmapped, never after.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import numpy as np
import pytest

from rvai_sdk.transport.shm import HostRegistry, SlotMaps, SlotPool, use_host_registry

ALREADY_REGISTERED = 712
NOT_REGISTERED = 713


def _mapped(address: int) -> bool:
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


class CudaShim:
    """cudaHostRegister / cudaHostUnregister bookkeeping as the CUDA runtime does it."""

    def __init__(self, fail_every: int = 0) -> None:
        self.ranges: dict[int, int] = {}
        self.calls: list[tuple[str, int]] = []
        self.unmapped_while_registered: list[int] = []
        self.errors_cleared = 0
        self.fail_every = fail_every

    def host_register(self, address: int, size: int) -> int:
        self.calls.append(("register", address))
        if self.fail_every and len(self.calls) % self.fail_every == 0:
            return 2  # cudaErrorMemoryAllocation
        if any(a < address + size and address < a + s for a, s in self.ranges.items()):
            return ALREADY_REGISTERED
        self.ranges[address] = size
        return 0

    def host_unregister(self, address: int) -> int:
        self.calls.append(("unregister", address))
        if address not in self.ranges:
            return NOT_REGISTERED
        if not _mapped(address):
            self.unmapped_while_registered.append(address)
        del self.ranges[address]
        return 0

    def clear_error(self) -> None:
        self.errors_cleared += 1

    def stale(self) -> list[int]:
        """Registered ranges whose memory is no longer mapped (leaked page-locked memory)."""
        return [a for a in self.ranges if not _mapped(a)]


@pytest.fixture
def shim() -> Iterator[CudaShim]:
    shim = CudaShim()
    use_host_registry(HostRegistry(shim))
    try:
        yield shim
    finally:
        use_host_registry(None)


def _frames(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.integers(0, 256, (120, 160 + 8 * (i % 3), 3), dtype=np.uint8) for i in range(n)]


def _connect(pool: SlotPool, maps: SlotMaps, frame: np.ndarray, peer: object, released: list[int]) -> np.ndarray:
    """Lend ``frame`` through ``pool`` and map it on the receiving side, as the transport does."""
    slot = pool.lease(frame, peer)
    assert slot is not None
    import os

    maps.add(pool.id, slot.id, os.dup(slot.fd), slot.size)
    return maps.view(pool.id, slot.id, frame.dtype.str, frame.shape, lambda: released.append(slot.id))


@pytest.mark.timeout(60)
def test_slots_stay_correctly_page_locked_while_drivers_come_and_go(shim: CudaShim) -> None:
    rng = np.random.default_rng(0)
    held: list[np.ndarray] = []  # views a cell still holds when its driver disconnects
    for round_ in range(6):
        pool, maps, peer, released = SlotPool(), SlotMaps(), object(), []
        frames = _frames(rng, 5)
        views = [_connect(pool, maps, frame, peer, released) for frame in frames]
        assert all(np.array_equal(v, f) for f, v in zip(frames, views))  # frames arrive intact through the slots
        held.append(views[0])
        del views
        maps.clear()  # the driver disconnects
        pool.close()
        del pool, maps
        gc.collect()
        if round_ % 2:
            held.clear()  # the cell lets go of the views it kept from earlier drivers
            gc.collect()
    held.clear()
    gc.collect()

    addresses = [address for call, address in shim.calls if call == "register"]
    assert len(addresses) == 30
    assert len(set(addresses)) < len(addresses), "no slot landed at an address used before: the churn proved nothing"
    assert shim.errors_cleared == 0, "a registration failed: an address was registered twice"
    assert shim.unmapped_while_registered == []
    assert shim.ranges == {}, "page-locked memory leaked after every driver left"
    assert shim.stale() == []


@pytest.mark.timeout(60)
def test_a_registration_left_at_a_reused_address_is_released_before_the_new_slot_is_registered(shim: CudaShim) -> None:
    registry = HostRegistry(shim)
    assert registry.register(0x7000_0000, 1 << 16)
    # the mapping at that address went without release; a new one lands at the same address
    assert registry.register(0x7000_0000, 1 << 17)
    assert shim.calls == [("register", 0x7000_0000), ("unregister", 0x7000_0000), ("register", 0x7000_0000)]
    assert registry.pinned() == {0x7000_0000: 1 << 17}
    registry.unregister(0x7000_0000)
    registry.unregister(0x7000_0000)  # a second release is a no-op, not a CUDA call
    assert shim.ranges == {} and shim.calls[-1] == ("unregister", 0x7000_0000) and len(shim.calls) == 4


@pytest.mark.timeout(60)
def test_a_failed_registration_is_logged_once_and_the_slot_is_used_unpinned(caplog: pytest.LogCaptureFixture) -> None:
    shim = CudaShim(fail_every=1)
    registry = HostRegistry(shim)
    use_host_registry(registry)
    try:
        caplog.set_level(logging.WARNING, logger="rvai_sdk.transport.shm")
        pool, maps, released = SlotPool(), SlotMaps(), []
        frames = _frames(np.random.default_rng(1), 3)
        views = [_connect(pool, maps, frame, "peer", released) for frame in frames]
        assert all(np.array_equal(v, f) for f, v in zip(frames, views))
        del views
        maps.clear()
        gc.collect()
    finally:
        use_host_registry(None)
    messages = [r.getMessage() for r in caplog.records if "cudaHostRegister" in r.getMessage()]
    assert len(messages) == 1 and "CUDA error 2" in messages[0] and "unpinned" in messages[0]
    assert registry.failures == 3 and shim.errors_cleared == 3  # CUDA's last error reset each time
    assert [c for c in shim.calls if c[0] == "unregister"] == []  # nothing to release for a failed registration
    assert sorted(released) == [1, 2, 3]


@pytest.mark.timeout(60)
def test_a_slot_still_viewed_when_its_driver_leaves_stays_pinned_until_the_last_view_goes(shim: CudaShim) -> None:
    pool, maps, released = SlotPool(), SlotMaps(), []
    frame = _frames(np.random.default_rng(2), 1)[0]
    view = _connect(pool, maps, frame, "peer", released)
    maps.clear()
    pool.close()
    gc.collect()
    assert len(shim.ranges) == 1  # a cell may still be copying from it
    copy = view.copy()
    np.testing.assert_array_equal(copy, frame)
    del view
    gc.collect()
    assert shim.ranges == {} and shim.unmapped_while_registered == []


@pytest.mark.timeout(60)
def test_a_slot_sent_again_under_the_same_id_replaces_its_old_mapping_and_releases_its_pin(shim: CudaShim) -> None:
    import os

    pool, maps = SlotPool(), SlotMaps()
    frame = _frames(np.random.default_rng(3), 1)[0]
    slot = pool.lease(frame, "peer")
    assert slot is not None
    maps.add(pool.id, slot.id, os.dup(slot.fd), slot.size)
    view = maps.view(pool.id, slot.id, frame.dtype.str, frame.shape, lambda: None)
    assert np.array_equal(view, frame)
    del view
    gc.collect()
    assert len(shim.ranges) == 1
    # the same slot's descriptor arrives again (a reconnecting peer): the new mapping replaces the old one
    maps.add(pool.id, slot.id, os.dup(slot.fd), slot.size)
    assert len(shim.ranges) == 1 and [c for c, _ in shim.calls] == ["register", "unregister", "register"]
    assert shim.unmapped_while_registered == []
    maps.clear()
    gc.collect()
    assert shim.ranges == {}
