"""Shared memory for arrays that cross a process boundary: a reusable pool of anonymous segments.

Each process that sends large arrays owns a :class:`SlotPool`. A slot is an
anonymous ``memfd`` segment (no name in ``/dev/shm``), so the kernel frees it
when the last process that maps it exits: no segment can outlive the runtime,
whatever crashes. A slot's file descriptor travels to a peer once (over the
Unix socket, ``SCM_RIGHTS``); after that only ``(pool, slot)`` ids travel.

The sender copies the array into a free slot and leases it to the receiver; the
receiver maps it without copying and gives it back when its last array view is
garbage-collected (:class:`SlotMaps` and :func:`release_later`). A slot that
comes back goes to the free list of its size class and is reused; when the
pool is at its byte limit the array travels inline through the socket instead.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import uuid
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

import numpy as np

__all__ = ["SlotPool", "SlotMaps", "shm_supported", "release_later", "on_map", "pin_with_cuda"]

MIN_SLOT = 1 << 16


def shm_supported() -> bool:
    """Whether this platform has anonymous shared memory that can be passed between processes."""
    return hasattr(os, "memfd_create")


def _size_class(nbytes: int) -> int:
    return max(MIN_SLOT, 1 << (max(nbytes, 1) - 1).bit_length())


class _Slot:
    __slots__ = ("id", "size", "fd", "map")

    def __init__(self, slot_id: int, size: int) -> None:
        self.id = slot_id
        self.size = size
        self.fd = os.memfd_create(f"rvai-slot-{slot_id}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise


class SlotPool:
    """The shared-memory slots this process lends to its peers (thread-safe).

    Args:
        max_bytes: most bytes of slots in total; past it, arrays travel inline.
    """

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._slots: dict[int, _Slot] = {}
        self._free: dict[int, list[int]] = {}
        self._leased: dict[int, object] = {}
        self._bytes = 0
        self._next = 0

    def lease(self, array: np.ndarray, peer: object) -> _Slot | None:
        """Copy ``array`` into a free slot leased to ``peer``; ``None`` when the pool is full."""
        nbytes = array.nbytes
        size = _size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                slot = self._slots[free.pop()]
            elif self._bytes + size <= self.max_bytes:
                self._next += 1
                slot = _Slot(self._next, size)
                self._slots[slot.id] = slot
                self._bytes += size
            else:
                return None
            self._leased[slot.id] = peer
        target = np.frombuffer(slot.map, dtype=array.dtype, count=array.size).reshape(array.shape)
        np.copyto(target, array, casting="no")
        return slot

    def release(self, slot_ids: list[int], peer: object) -> None:
        """Take back slots that ``peer`` no longer uses (others' leases are ignored)."""
        with self._lock:
            for slot_id in slot_ids:
                if self._leased.get(slot_id) is peer:
                    del self._leased[slot_id]
                    slot = self._slots[slot_id]
                    self._free.setdefault(slot.size, []).append(slot_id)

    def release_peer(self, peer: object) -> None:
        """Take back every slot leased to ``peer`` (it disconnected or died)."""
        with self._lock:
            ids = [s for s, p in self._leased.items() if p is peer]
        self.release(ids, peer)

    def stats(self) -> dict[str, int]:
        """Slots, bytes and leases, for tests and benchmarks."""
        with self._lock:
            return {"slots": len(self._slots), "bytes": self._bytes, "leased": len(self._leased)}

    def close(self) -> None:
        """Close every slot's descriptor; mappings stay valid until dropped."""
        with self._lock:
            for slot in self._slots.values():
                try:
                    os.close(slot.fd)
                except OSError:
                    pass
            self._slots.clear()
            self._free.clear()
            self._leased.clear()


class SlotMaps:
    """The peers' slots this process has mapped, by (pool id, slot id)."""

    def __init__(self) -> None:
        self._maps: dict[tuple[str, int], mmap.mmap] = {}

    def add(self, pool_id: str, slot_id: int, fd: int, size: int) -> None:
        """Map a slot whose descriptor just arrived (takes ownership of ``fd``)."""
        try:
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._maps[(pool_id, slot_id)] = mapped
        if _on_map is not None:
            address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
            _on_map(address, size)

    def view(
        self,
        pool_id: str,
        slot_id: int,
        dtype: str,
        shape: tuple[int, ...],
        on_release: Callable[[], None],
    ) -> np.ndarray:
        """An array over the slot, without a copy; ``on_release`` runs once no view of it remains."""
        mapped = self._maps[(pool_id, slot_id)]
        dt = np.dtype(dtype)
        nbytes = dt.itemsize * int(np.prod(shape, dtype=np.int64))
        holder = (ctypes.c_char * max(nbytes, 1)).from_buffer(mapped)
        weakref.finalize(holder, on_release)
        count = nbytes // dt.itemsize if dt.itemsize else 0
        array: np.ndarray = np.frombuffer(holder, dtype=dt, count=count).reshape(shape)  # type: ignore[call-overload]
        return array

    def clear(self) -> None:
        """Forget every mapping (they are unmapped once no array uses them)."""
        self._maps.clear()


_on_map: Callable[[int, int], None] | None = None


def on_map(hook: Callable[[int, int], None] | None) -> None:
    """Call ``hook(address, size)`` for every peer slot this process maps from now on (once per slot).

    The inference process of a pipeline with GPU cells uses it to page-lock (pin) the
    slots with CUDA, so arrays that arrive in them copy to the device by DMA.
    """
    global _on_map
    _on_map = hook


def pin_with_cuda() -> bool:
    """Page-lock every slot mapped from now on with ``cudaHostRegister``; whether CUDA is there to do it."""
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    cudart: Any = getattr(torch.cuda, "cudart")()

    def register(address: int, size: int) -> None:
        cudart.cudaHostRegister(address, size, 0)  # best effort: an unpinned slot still works, only slower

    on_map(register)
    return True


_releases: SimpleQueue[tuple[Any, int]] = SimpleQueue()
_release_thread: threading.Thread | None = None
_release_lock = threading.Lock()


def release_later(channel: Any, slot_id: int) -> None:
    """Queue a slot to be given back to its owner through ``channel`` (a weak reference).

    Safe from a finalizer: it only puts into a :class:`queue.SimpleQueue`. A daemon
    thread sends the releases, several at once when they pile up.
    """
    _releases.put((channel, slot_id))


def start_release_thread() -> None:
    """Start the thread that sends queued releases (once per process)."""
    global _release_thread
    with _release_lock:
        if _release_thread is not None and _release_thread.is_alive():
            return
        _release_thread = threading.Thread(target=_release_loop, name="rvai-shm-release", daemon=True)
        _release_thread.start()


def _release_loop() -> None:
    while True:
        pending: dict[int, tuple[Any, list[int]]] = {}
        ref, slot_id = _releases.get()
        while True:
            # keyed by id: a dead weak reference cannot be hashed
            pending.setdefault(id(ref), (ref, []))[1].append(slot_id)
            if _releases.empty():
                break
            ref, slot_id = _releases.get_nowait()
        for ref, ids in pending.values():
            channel = ref()
            if channel is not None:
                try:
                    channel.send_release(ids)
                except Exception:  # a closing channel: its owner takes every lease back itself
                    pass
