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
import logging
import math
import mmap
import os
import threading
import uuid
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Protocol

import numpy as np

__all__ = [
    "SlotPool",
    "SlotMaps",
    "HostRegistry",
    "CudaHostApi",
    "shm_supported",
    "release_later",
    "on_map",
    "pin_with_cuda",
    "use_host_registry",
    "host_registry",
]

_log = logging.getLogger("rvai_sdk.transport.shm")

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
    """The peers' slots this process has mapped, by (pool id, slot id).

    When page-locking is on (:func:`pin_with_cuda`, or :func:`use_host_registry`), every
    mapping is registered once when it arrives and unregistered before it is unmapped:
    at :meth:`clear` when no array uses it, else when its last array view is collected.
    A slot whose registration fails is used unpinned.
    """

    def __init__(self) -> None:
        self._table = _MapTable()
        # a channel dropped without close() releases its pins too (not at exit: CUDA may be unloading by then)
        weakref.finalize(self, self._table.clear).atexit = False

    def add(self, pool_id: str, slot_id: int, fd: int, size: int) -> None:
        """Map a slot whose descriptor just arrived (takes ownership of ``fd``)."""
        try:
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._table.add((pool_id, slot_id), mapped, size)

    def view(
        self,
        pool_id: str,
        slot_id: int,
        dtype: str,
        shape: tuple[int, ...],
        on_release: Callable[[], None],
    ) -> np.ndarray:
        """An array over the slot, without a copy; ``on_release`` runs once no view of it remains."""
        dt = np.dtype(dtype)
        nbytes = dt.itemsize * math.prod(shape)  # (numpy's prod costs microseconds per frame here)
        entry = self._table.get((pool_id, slot_id))
        try:
            holder = (ctypes.c_char * max(nbytes, 1)).from_buffer(entry.map)
        except BaseException:
            self._table.view_gone(entry, lambda: None)
            raise
        weakref.finalize(holder, self._table.view_gone, entry, on_release)
        count = nbytes // dt.itemsize if dt.itemsize else 0
        array: np.ndarray = np.frombuffer(holder, dtype=dt, count=count).reshape(shape)  # type: ignore[call-overload]
        return array

    def clear(self) -> None:
        """Forget every mapping (each is unregistered and unmapped once no array uses it)."""
        self._table.clear()


class _Mapping:
    __slots__ = ("map", "address", "size", "views", "retired", "pinned")

    def __init__(self, mapped: mmap.mmap, size: int) -> None:
        self.map = mapped
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        self.size = size
        self.views = 0
        self.retired = False
        self.pinned: HostRegistry | None = None


class _MapTable:
    """The mappings of one :class:`SlotMaps` and their view counts (finalizers run on any thread)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a view's finalizer may run in a GC inside a locked section
        self._maps: dict[tuple[str, int], _Mapping] = {}

    def add(self, key: tuple[str, int], mapped: mmap.mmap, size: int) -> None:
        entry = _Mapping(mapped, size)
        with self._lock:
            old = self._maps.pop(key, None)
            idle = old is not None and self._retire(old)
            self._maps[key] = entry
        if idle:
            assert old is not None
            self._unpin(old)
        registry = _registry
        if registry is not None and registry.register(entry.address, size):
            entry.pinned = registry
        if _on_map is not None:
            _on_map(entry.address, size)

    def get(self, key: tuple[str, int]) -> _Mapping:
        """The mapping at ``key``, counted as used by one more view."""
        with self._lock:
            entry = self._maps[key]
            entry.views += 1
            return entry

    def view_gone(self, entry: _Mapping, on_release: Callable[[], None]) -> None:
        # runs while the view's buffer still holds the mapping: unregistering here precedes the unmap
        with self._lock:
            entry.views -= 1
            last = entry.retired and entry.views == 0
        if last:
            self._unpin(entry)
        on_release()

    def clear(self) -> None:
        with self._lock:
            entries = list(self._maps.values())
            self._maps.clear()
            idle = [e for e in entries if self._retire(e)]
        for entry in idle:
            self._unpin(entry)

    def _retire(self, entry: _Mapping) -> bool:
        """Mark ``entry`` forgotten (lock held); whether no view uses it (unpin it now)."""
        entry.retired = True
        return entry.views == 0

    @staticmethod
    def _unpin(entry: _Mapping) -> None:
        registry, entry.pinned = entry.pinned, None
        if registry is not None:
            registry.unregister(entry.address)


class CudaHostApi(Protocol):
    """The CUDA runtime calls page-locking needs; tests pass a shim with the same methods.

    Each returns CUDA's error code (0: success), as ``cudaHostRegister``,
    ``cudaHostUnregister`` and ``cudaGetLastError`` do.
    """

    def host_register(self, address: int, size: int) -> int:
        """``cudaHostRegister(address, size, cudaHostRegisterDefault)``."""

    def host_unregister(self, address: int) -> int:
        """``cudaHostUnregister(address)``."""

    def clear_error(self) -> None:
        """Reset CUDA's last error after a failed call (``cudaGetLastError``), so later checks don't see it."""


class HostRegistry:
    """Which mapped slots are page-locked, and the calls that lock and unlock them (thread-safe).

    A registration that fails is logged once (with CUDA's error code), counted, and
    the slot is used unpinned: copies from it are slower, never wrong. An address
    still registered when a new mapping lands there (its old mapping was dropped
    without release) is unregistered first, so the new mapping is registered afresh
    instead of failing with "memory already registered" (error 712).

    Args:
        api: the CUDA runtime calls (:class:`CudaHostApi`).
    """

    def __init__(self, api: CudaHostApi) -> None:
        self.api = api
        self._lock = threading.RLock()  # re-entrant, as above: unregister may run from a finalizer
        self._pinned: dict[int, int] = {}
        self.failures = 0
        self.registrations = 0
        self.unregistrations = 0
        self._logged = False

    def register(self, address: int, size: int) -> bool:
        """Page-lock ``size`` bytes at ``address``; whether it worked."""
        with self._lock:
            if address in self._pinned:
                self._call_unregister(address)
            rc = int(self.api.host_register(address, size))
            if rc != 0:
                self.api.clear_error()
                self.failures += 1
                if not self._logged:
                    self._logged = True
                    _log.warning(
                        "cudaHostRegister of a %d-byte shared-memory slot failed with CUDA error %d; "
                        "slots are used unpinned (host-to-device copies are slower); further failures are counted, "
                        "not logged", size, rc,
                    )
                return False
            self._pinned[address] = size
            self.registrations += 1
            return True

    def unregister(self, address: int) -> None:
        """Release the page-locking at ``address`` (before its mapping goes); nothing if it holds none."""
        with self._lock:
            if address in self._pinned:
                self._call_unregister(address)

    def pinned(self) -> dict[int, int]:
        """Address → bytes of every registration held now."""
        with self._lock:
            return dict(self._pinned)

    def _call_unregister(self, address: int) -> None:
        del self._pinned[address]
        self.unregistrations += 1
        rc = int(self.api.host_unregister(address))
        if rc != 0:
            self.api.clear_error()
            _log.warning("cudaHostUnregister of a shared-memory slot failed with CUDA error %d", rc)


class _TorchCudaHostApi:
    """:class:`CudaHostApi` through torch's bindings of the CUDA runtime it loaded."""

    def __init__(self, cudart: Any, torch: Any) -> None:
        self._cudart = cudart
        self._torch = torch
        self._get_last_error = _loaded_cudart_function("cudaGetLastError")

    def host_register(self, address: int, size: int) -> int:
        return int(self._cudart.cudaHostRegister(address, size, 0))

    def host_unregister(self, address: int) -> int:
        return int(self._cudart.cudaHostUnregister(address))

    def clear_error(self) -> None:
        if self._get_last_error is not None:
            self._get_last_error()
            return
        try:  # no libcudart to ask (a static build): torch's launch check reads the error, and so resets it
            self._torch.zeros(1, device="cuda")
        except RuntimeError:
            pass


def _loaded_cudart_function(name: str) -> Any:
    """A function of the CUDA runtime library this process already loaded (through torch), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libcudart" in line and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            function = getattr(ctypes.CDLL(path), name)
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_int
        return function
    return None


_registry: HostRegistry | None = None
_on_map: Callable[[int, int], None] | None = None


def use_host_registry(registry: HostRegistry | None) -> None:
    """Page-lock every peer slot this process maps from now on through ``registry`` (``None``: stop)."""
    global _registry
    _registry = registry


def host_registry() -> HostRegistry | None:
    """The registry page-locking this process's mapped slots, if any."""
    return _registry


def on_map(hook: Callable[[int, int], None] | None) -> None:
    """Call ``hook(address, size)`` for every peer slot this process maps from now on (once per slot)."""
    global _on_map
    _on_map = hook


def pin_with_cuda() -> bool:
    """Page-lock every slot mapped from now on with ``cudaHostRegister``; whether CUDA is there to do it.

    The inference process of a pipeline with GPU cells calls it, so arrays that arrive
    in shared memory copy to the device by DMA (see :class:`HostRegistry`).
    """
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    use_host_registry(HostRegistry(_TorchCudaHostApi(getattr(torch.cuda, "cudart")(), torch)))
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
