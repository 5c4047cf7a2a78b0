"""What the Ray link and its replicas share: which replica owns a sid, and how Ray's errors reach the caller.

Routing: :func:`rendezvous` picks a sid's replica (the highest ``blake2b(index:sid)`` score),
:class:`Route` is one replica as a caller sees it (its handle and generation, and the caller's
sequence, outbox and requests in flight there), ``_Req`` one request kept whole until its result
arrives, and :class:`SidMoved` the refusal of a replica that no longer owns a sid (it carries the
new replica set, and pickles with it, so the caller can send the request again).

Errors: :func:`unwrap` reads an actor method's ``(ok, value)`` outcome, raising the error it carries;
:func:`translate_ray_error` turns an error Ray raised into the :class:`~rvai_sdk.exc.RvaiError` a user
sees; ``_is_death`` tells whether it means the actor is gone for good.

:mod:`~rvai_sdk.transport.ray_link` (the caller's side) and :mod:`~rvai_sdk.transport.ray_replica`
(the replica's side) both build on this module; ``ray_link`` re-exports its public names, which are
imported from there. Ray imports only happen in functions, so this module can be imported without Ray.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from rvai_sdk.exc import ProcessError, RvaiError

__all__ = ["Route", "SidMoved", "rendezvous", "translate_ray_error", "unwrap"]


class SidMoved(ProcessError):
    """A replica refused a request: under the replica set it knows, another replica owns the sid.

    The link that sent it takes ``routes`` (when ``epoch`` is newer than its own) and sends the
    request again; users see it only when a request was refused
    :data:`~rvai_sdk.transport.ray_link.MAX_MOVES` times.

    Attributes:
        epoch: the epoch of the replica set the refusing replica knows.
        routes: that replica set.
    """

    def __init__(self, message: str, epoch: int = 0, routes: Sequence[Route] = ()) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.routes = list(routes)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SidMoved, (str(self), self.epoch, self.routes))


class _Req:
    """A request from submit until its result arrives (kept whole so that it can be sent again)."""

    __slots__ = ("rid", "out", "sid", "inputs", "timeout", "trace", "moves")

    def __init__(
        self,
        rid: int,
        out: Future[dict[str, Any]],
        sid: str | None,
        inputs: dict[str, Any],
        timeout: float | None,
        trace: str | None = None,
    ) -> None:
        self.rid = rid
        self.out = out
        self.sid = sid
        self.inputs = inputs
        self.timeout = timeout
        self.trace = trace
        """The W3C traceparent of the caller's span when traced (sent as a fifth element), else ``None``."""
        self.moves = 0


def _score(sid: str, index: int) -> int:
    digest = hashlib.blake2b(f"{index}:{sid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(sid: str, indices: Sequence[int]) -> int:
    """The replica index that owns ``sid`` among ``indices`` (highest rendezvous score).

    Example:
        >>> owner = rendezvous("camera-1", [0, 1, 2, 3])
        >>> owner == rendezvous("camera-1", [3, 2, 1, 0]) and owner in range(4)
        True
    """
    return max(indices, key=lambda index: _score(sid, index))


class Route:
    """One replica as a caller sees it: its index, actor handle and generation.

    Attributes:
        index: the replica's index (stable across restarts of that replica).
        handle: the Ray actor handle of the replica's current incarnation.
        generation: how many times the replica at this index was (re)started.
        node: the Ray node id it runs on.
    """

    __slots__ = ("index", "handle", "generation", "node", "seq", "pending", "outbox", "sending", "polling", "dead")

    def __init__(self, index: int, handle: Any, generation: int, node: str = "") -> None:
        self.index = index
        self.handle = handle
        self.generation = generation
        self.node = node
        self.seq = itertools.count()
        self.pending: dict[int, _Req] = {}
        """Request id → the request, from send until its result arrives."""
        self.outbox: list[tuple[Any, ...]] = []  # (rid, inputs, sid, timeout[, traceparent])
        """Requests waiting to be sent with the next batch."""
        self.sending = 0
        self.polling = False
        self.dead: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Requests sent (or about to be) whose result has not arrived."""
        return len(self.pending)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Route, (self.index, self.handle, self.generation, self.node))


def _is_death(error: BaseException) -> bool:
    """Whether a Ray error means the actor is gone for good."""
    import ray.exceptions as rex

    return isinstance(error, rex.RayActorError)


def unwrap(outcome: tuple[bool, Any]) -> Any:
    """The value of an actor method's ``(ok, value)`` outcome, or raise the error it carries."""
    ok, value = outcome
    if ok:
        return value
    raise value


def translate_ray_error(exc: BaseException, where: str, what: str) -> RvaiError:
    """Turn an error raised by Ray into the :class:`RvaiError` a user sees.

    Args:
        exc: the error Ray raised (``RayActorError``, ``RayTaskError``, ``GetTimeoutError`` ...).
        where: the actor it concerns, e.g. ``"replica 2 of the inference process of pipeline 'p'"``.
        what: what was being done, e.g. ``"request (sid 'cam-1')"``.

    Returns:
        The error to raise (``from exc``): the original :class:`RvaiError` when a task raised one,
        otherwise a :class:`ProcessError` naming ``where`` and ``what``.
    """
    if isinstance(exc, RvaiError):
        return exc
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RvaiError):
            return cause
        first = str(cause if cause is not None else exc).strip().splitlines()
        return ProcessError(f"{where} failed during {what}: {first[0] if first else type(exc).__name__}")
    if isinstance(exc, rex.GetTimeoutError):
        return ProcessError(f"{where} did not answer {what} in time; it may be overloaded or unreachable")
    if isinstance(exc, rex.RayActorError) and getattr(exc, "actor_init_failed", False):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = lines[-1] if lines else type(exc).__name__
        hint = ""
        if "ModuleNotFoundError" in cause or "No module named" in cause:
            hint = (
                "; classes defined in a module travel by name and are imported on the Ray worker: make that module "
                "importable there (install it on every node, start Python from the folder that holds it, or pass "
                "runtime_env={'py_modules': [...]} to init('ray', ...)), or define them in __main__ or a notebook"
            )
        return ProcessError(f"{where} could not be created: {cause}{hint}")
    if isinstance(exc, rex.RayActorError):
        return ProcessError(
            f"{where} died during {what} (its actor process exited or its node was lost); "
            "it is restarted with fresh state: send the request again"
        )
    if isinstance(exc, rex.RayError):
        return ProcessError(f"{where} could not complete {what}: {type(exc).__name__}: {exc}")
    return ProcessError(f"{where} could not complete {what}: {type(exc).__name__}: {exc}")
