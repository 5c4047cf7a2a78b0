"""A framed, authenticated Unix-socket connection between two SDK processes.

A frame carries a list of operations (``("p", rid, sid, inputs)``, ``("r", rid,
ok, value)``, ...), pickled with protocol 5 by the standard C pickler (no dill on
the request path). numpy arrays (and :class:`~rvai_sdk.types.Image`) never go
through the pickle stream: small ones travel as out-of-band buffers written
straight from the array's memory, large ones are copied once into a shared-memory
slot (:mod:`rvai_sdk.transport.shm`) and arrive as views of it.

Sends coalesce: while one thread writes a frame, operations posted by others
queue up and go together in the next frame, so many requests in flight cost few
system calls.

The thread that reads a channel never blocks writing to it. Both ends' readers
send (replies, requests made from completion callbacks); if each blocked on a
full socket while the other did the same, neither would read again and the
connection would wedge. So a reader's sends do not wait: what the socket does not
take at once goes to the channel's writer thread, which may wait, since it never
reads.
"""

from __future__ import annotations

import array
import copyreg
import hmac
import io
import os
import pickle
import socket
import struct
import tempfile
import threading
import uuid
import weakref
from collections import deque
from functools import partial
from queue import SimpleQueue
from typing import Any

import numpy as np

from rvai_sdk.transport.shm import SlotMaps, SlotPool, release_later, shm_supported, start_release_thread
from rvai_sdk.types import Image

__all__ = ["Channel", "Listener", "connect", "new_address", "INLINE_THRESHOLD"]

INLINE_THRESHOLD = 1 << 16
"""Arrays of at least this many bytes go through shared memory (when the platform has it)."""

_HEADER = struct.Struct("<IHH")  # pickle length, out-of-band buffer count, descriptor count
_MAX_FDS = 64
_FDS_SPACE = socket.CMSG_SPACE(_MAX_FDS * 4) if hasattr(socket, "CMSG_SPACE") else 0
_ARRAY_TYPES = (np.ndarray, Image)
_AUTH_LEN = 32
_RECV_CHUNK = 1 << 16


def new_address() -> str:
    """A fresh address to listen on: an abstract Unix socket on Linux (no file), else a path."""
    name = f"rvai-{uuid.uuid4().hex}"
    if os.uname().sysname == "Linux":
        return "\0" + name
    return os.path.join(tempfile.gettempdir(), name + ".sock")


class _Encoding:
    """What the array reducers of one frame being written need (one frame at a time per channel)."""

    __slots__ = ("channel", "fds")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.fds: list[int] = []


def _reduce_array(encoding: _Encoding, obj: Any) -> Any:
    dtype = obj.dtype
    if dtype.hasobject:
        return obj.__reduce_ex__(5)
    kind = dtype.str if dtype.names is None and dtype.subdtype is None else dtype
    cls = None if type(obj) is np.ndarray else type(obj)
    channel = encoding.channel
    fds = encoding.fds
    if channel.pool is not None and obj.nbytes >= channel.threshold and len(fds) < _MAX_FDS:
        slot = channel.pool.lease(obj, channel)
        if slot is not None:
            if slot.id in channel.sent_slots:
                return _from_slot, (channel.pool.id, slot.id, kind, obj.shape, cls, 0, -1)
            channel.sent_slots.add(slot.id)
            fds.append(slot.fd)
            return _from_slot, (channel.pool.id, slot.id, kind, obj.shape, cls, slot.size, len(fds) - 1)
    data: Any = np.ascontiguousarray(obj).view(np.ndarray).reshape(-1)
    return _from_buffer, (pickle.PickleBuffer(data), kind, obj.shape, cls)


def _from_buffer(buffer: Any, kind: Any, shape: tuple[int, ...], cls: type | None) -> Any:
    result = np.frombuffer(buffer, dtype=kind).reshape(shape)
    return result if cls is None else result.view(cls)


_decoding = threading.local()


def _from_slot(pool_id: str, slot_id: int, kind: Any, shape: tuple[int, ...], cls: type | None, size: int, fd_index: int) -> Any:
    channel: Channel = _decoding.channel
    if fd_index >= 0:
        fds: list[int] = _decoding.fds
        channel.maps.add(pool_id, slot_id, fds[fd_index], size)
        fds[fd_index] = -1
    result = channel.maps.view(pool_id, slot_id, kind, shape, partial(release_later, channel.ref, slot_id))
    return result if cls is None else result.view(cls)


class Channel:
    """One end of a connection: :meth:`post` operations, :meth:`recv` frames of operations.

    Args:
        sock: a connected Unix stream socket.
        pool: this process's shared-memory pool (``None``: arrays travel inline).
        threshold: arrays of at least this many bytes use the pool.
    """

    def __init__(self, sock: socket.socket, pool: SlotPool | None, threshold: int = INLINE_THRESHOLD) -> None:
        self.sock = sock
        self.pool = pool if shm_supported() else None
        self.threshold = threshold
        self.maps = SlotMaps()
        self.sent_slots: set[int] = set()
        self.ref = weakref.ref(self)
        self._encoding = _Encoding(self)
        reducer = partial(_reduce_array, self._encoding)
        self._dispatch: Any = {**copyreg.dispatch_table, np.ndarray: reducer, Image: reducer}
        self._buffer = bytearray(_RECV_CHUNK)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        self._fds: deque[int] = deque()
        self._pending: deque[Any] = deque()
        self._lock = threading.Lock()
        self._flushing = False
        self._corked: int | None = None
        self._writer: threading.Thread | None = None
        self._writer_signalled = False
        self._wake: SimpleQueue[bool] = SimpleQueue()
        self._reader: int | None = None  # the thread in recv(): its sends never block
        self._backlog: tuple[list[Any], int, list[Any]] | None = None  # what the socket did not take; the writer's
        self.broken = False
        start_release_thread()

    # -- sending --------------------------------------------------------------------------------

    def post(self, op: Any) -> None:
        """Send one operation, coalesced with any posted while a frame is being written.

        Never raises for a broken connection: the reader sees it end and fails what is pending.
        """
        with self._lock:
            self._pending.append(op)
            if self._flushing or self._corked == threading.get_ident():
                return
            self._flushing = True
        self._flush()

    def post_soon(self, op: Any) -> None:
        """Queue one operation for this channel's writer thread instead of sending it here.

        For a thread that has more to do (an executor worker finishing one of many requests
        in flight): replies pile up while the writer sends, and leave several per frame.
        """
        with self._lock:
            self._pending.append(op)
            if self._flushing or self._writer_signalled:
                return
            self._writer_signalled = True
            self._start_writer()
        self._wake.put(True)

    def _start_writer(self) -> None:
        """Start the writer thread if it is not running (caller holds the lock)."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="rvai-channel-writer", daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        while self._wake.get():
            with self._lock:
                backlog, self._backlog = self._backlog, None
                if backlog is None:
                    self._writer_signalled = False
                    if self._flushing or not self._pending:
                        continue
                    self._flushing = True
            if backlog is not None:  # a reader's frame the socket did not take: the flush is ours now
                parts, sent, ancillary = backlog
                try:
                    if sent == 0:  # nothing left: the descriptors go with the first byte
                        sent = self.sock.sendmsg(parts, ancillary)
                    self._send_rest(parts, sent)
                except OSError:
                    self.broken = True
                    self.shutdown()
            self._flush()

    def cork(self) -> None:
        """Hold back this thread's posts until :meth:`uncork` (others' posts still flush, taking them along).

        A reader corks while it handles one received frame, so replies and follow-up
        requests made meanwhile leave in one frame.
        """
        self._corked = threading.get_ident()

    def holding(self) -> bool:
        """Whether this thread's posts are held back now (it corked, see :meth:`cork`)."""
        return self._corked == threading.get_ident()

    def uncork(self) -> None:
        """Send what this thread posted since :meth:`cork` (and what others left pending meanwhile).

        A thread that is no longer the corked one (the reading was taken over by another,
        which corked in turn) still sends what it left, without uncorking the other.
        """
        if self._corked == threading.get_ident():
            self._corked = None
        with self._lock:
            if self._flushing or not self._pending:
                return
            self._flushing = True
        self._flush()

    def _flush(self) -> None:
        """Send what is pending until nothing is (this thread set ``_flushing``).

        The reader's sends do not wait: when the socket is full, the writer thread takes
        over the flush with what is left (see the module docstring).
        """
        wait = threading.get_ident() != self._reader
        while True:
            with self._lock:
                if not self._pending or self.broken:
                    self._pending.clear()
                    self._flushing = False
                    return
                ops = list(self._pending)
                self._pending.clear()
            try:
                left = self._send(ops, wait)
            except OSError:
                self.broken = True
                self.shutdown()
                continue
            if left is not None:
                with self._lock:
                    self._backlog = left  # the writer owns the flush (and _flushing) from here
                    self._start_writer()
                self._wake.put(True)
                return

    def send_release(self, slot_ids: list[int]) -> None:
        """Give slots of the peer's pool back to it."""
        if not self.broken:
            self.post(("x", slot_ids))

    def _send(self, ops: list[Any], wait: bool = True) -> tuple[list[Any], int, list[Any]] | None:
        """Write one frame of ``ops``; without ``wait``, what the socket did not take at once.

        Returns:
            ``None`` once all is sent, else ``(parts, bytes sent, descriptors not sent yet)``.
        """
        oob: list[Any] = []
        fds: list[int] = []
        self._encoding.fds = fds
        buffer = io.BytesIO()
        try:
            pickler = pickle.Pickler(buffer, 5, buffer_callback=oob.append)
            pickler.dispatch_table = self._dispatch  # only arrays reach Python code
            pickler.dump(ops)
        except Exception:
            # Something in the frame does not pickle with the standard pickler: use dill for this frame only.
            import dill

            from rvai_sdk.types._generic import register_with_dill

            register_with_dill()
            oob.clear()
            fds.clear()
            buffer = io.BytesIO()
            buffer.write(b"D")
            buffer.write(dill.dumps(ops, protocol=5))
        payload = buffer.getbuffer()
        oob = [b.raw() for b in oob]
        parts: list[Any] = [_HEADER.pack(len(payload), len(oob), len(fds))]
        if oob:
            parts.append(struct.pack(f"<{len(oob)}Q", *(m.nbytes for m in oob)))
        parts.append(payload)
        parts.extend(oob)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        if wait:
            sent = self.sock.sendmsg(parts, ancillary)
        else:
            try:
                sent = self.sock.sendmsg(parts, ancillary, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return parts, 0, ancillary
        total = sum(memoryview(p).nbytes for p in parts)
        if sent < total:
            if not wait:
                return parts, sent, ancillary if sent == 0 else []
            self._send_rest(parts, sent)
        return None

    def _send_rest(self, parts: list[Any], sent: int) -> None:
        for part in parts:
            view = memoryview(part).cast("B")
            if sent >= view.nbytes:
                sent -= view.nbytes
                continue
            self.sock.sendall(view[sent:])
            sent = 0

    # -- receiving ------------------------------------------------------------------------------

    def recv(self) -> list[Any] | None:
        """The next frame's operations; ``None`` once the peer closed the connection.

        Reads into a buffer, so a small frame (the common case) costs one system call.
        Only one thread may call it; from then on its sends on this channel never block.
        """
        self._reader = threading.get_ident()
        fds: list[int] = []
        try:
            header = self._take(_HEADER.size)
            if header is None:
                return None
            size, n_oob, n_fds = _HEADER.unpack(header)
            # Descriptors ride on a frame's first byte: they are here once its header is.
            fds = [self._fds.popleft() for _ in range(min(n_fds, len(self._fds)))]
            lengths: tuple[int, ...] = ()
            if n_oob:
                raw = self._take(8 * n_oob)
                if raw is None:
                    return None
                lengths = struct.unpack(f"<{n_oob}Q", raw)
            payload = self._take(size)
            if payload is None:
                return None
            oob: list[bytearray] = []
            for length in lengths:
                buffer = self._take(length, copy=True)
                if buffer is None:
                    return None
                oob.append(buffer)
            if payload[:1] == b"D":
                import dill

                ops: list[Any] = dill.loads(bytes(payload[1:]))
                return ops
            if fds:
                _decoding.channel, _decoding.fds = self, fds
            else:
                _decoding.channel = self
            result: list[Any] = pickle.loads(payload, buffers=oob)
            return result
        except OSError:
            return None
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)

    def _take(self, size: int, copy: bool = False) -> Any:
        """The next ``size`` bytes (a fresh bytearray when ``copy``), or ``None`` at the end of the stream."""
        available = self._end - self._start
        if available >= size and not copy:
            start = self._start
            self._start += size
            return bytes(self._view[start : start + size])
        out = bytearray(size)
        view = memoryview(out)
        got = min(available, size)
        view[:got] = self._view[self._start : self._start + got]
        self._start += got
        if got == size:
            return out
        if size - got >= _RECV_CHUNK // 2:  # large: straight into the destination
            while got < size:
                n = self._recv_into(view[got:], size - got)
                if n == 0:
                    return None
                got += n
            return out
        self._start = self._end = 0
        while got < size:
            n = self._recv_into(self._view, _RECV_CHUNK)
            if n == 0:
                return None
            take = min(n, size - got)
            view[got : got + take] = self._view[:take]
            got += take
            self._start, self._end = take, n
        return out

    def _recv_into(self, view: memoryview, size: int) -> int:
        n, ancdata, _, _ = self.sock.recvmsg_into([view[:size]], _FDS_SPACE, socket.MSG_CMSG_CLOEXEC)
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                self._fds.extend(array.array("i", data[: len(data) - (len(data) % 4)]))
        return int(n)

    def shutdown(self) -> None:
        """Stop both directions; the peer's and our own reader see the end."""
        self.broken = True
        if self._writer is not None:
            self._wake.put(False)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Shut down and close the socket, and take back every slot leased through it."""
        self.shutdown()
        try:
            self.sock.close()
        except OSError:
            pass
        if self.pool is not None:
            self.pool.release_peer(self)
        self.maps.clear()


def _family(address: str) -> int:
    return socket.AF_UNIX


class Listener:
    """Accepts authenticated connections on ``address``.

    Args:
        address: from :func:`new_address`.
        authkey: the secret a client must present.
    """

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self.sock = socket.socket(_family(address), socket.SOCK_STREAM)
        if not address.startswith("\0") and os.path.exists(address):
            os.unlink(address)
        self.sock.bind(address)
        self.sock.listen(64)

    def accept(self) -> socket.socket | None:
        """The next authenticated connection; ``None`` once the listener is closed."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return None
            conn.settimeout(10.0)
            try:
                key = _read_exact(conn, _AUTH_LEN)
                if key is not None and hmac.compare_digest(key, self.authkey):
                    conn.sendall(b"\x01")
                    conn.settimeout(None)
                    return conn
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        """Stop listening (a blocked :meth:`accept` returns ``None``)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if not self.address.startswith("\0"):
            try:
                os.unlink(self.address)
            except OSError:
                pass


def connect(address: str, authkey: bytes, timeout: float = 10.0) -> socket.socket:
    """Connect and authenticate to a :class:`Listener`.

    Raises:
        OSError: nobody listens there (``ConnectionRefusedError``), or the key was refused.
    """
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(authkey)
        if _read_exact(sock, 1) != b"\x01":
            raise ConnectionRefusedError(f"the process at {address!r} refused the key")
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
