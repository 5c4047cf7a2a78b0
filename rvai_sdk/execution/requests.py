"""Requests in flight inside the executor: the request record, its future, and a unit of work.

A :class:`Request` is one ``submit``: its inputs, the configuration snapshot it runs
with, each cell's result as it arrives and what is left to run. A :class:`Work` is
one call to make (one request at an unbatched cell, or a batch at a batched
one), claimed exactly once by whichever thread runs it: a worker, or a caller
blocked in :meth:`RequestFuture.result` (caller-runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from typing import Any

from rvai_sdk._delivery import LinkFuture, refuse_wait
from rvai_sdk.data import Parameters
from rvai_sdk.execution.state import StateEntry

__all__ = ["UPSTREAM", "QUEUED", "TAKEN", "Config", "Request", "RequestFuture", "Work", "set_exception", "set_result"]

UPSTREAM, QUEUED, TAKEN = 0, 1, 2
"""Where a request is relative to a batched cell (``Request.taken``): not there yet, waiting in its batch former, taken (or given up)."""


class Config:
    """An immutable snapshot of parameters and models; a request keeps the one current at submit."""

    __slots__ = ("params", "models")

    def __init__(self, params: tuple[Parameters, ...], models: tuple[Any, ...]) -> None:
        self.params = params
        self.models = models


class Work:
    """One call to make: one request, or one batch, at one cell; claimed exactly once by whoever runs it.

    Attributes:
        stage: the scheduler's record of the cell (``stage.plan`` is its :class:`CellPlan`).
        reqs: the requests of the call (one, unless the cell is batched).
        started: when its call started (set by whoever runs it).
    """

    __slots__ = ("stage", "reqs", "_token", "started")

    def __init__(self, stage: Any, reqs: list[Request]) -> None:
        self.stage = stage
        self.reqs = reqs
        self._token = [True]
        self.started = 0.0

    def claim(self) -> bool:
        """Take the right to run this work; True for exactly one caller (``list.pop`` is atomic)."""
        try:
            self._token.pop()
        except IndexError:
            return False
        return True

    def unclaim(self) -> None:
        """Give the right to run this work back (a caller that claimed it will not run it after all)."""
        self._token.append(True)

    @property
    def claimable(self) -> bool:
        """Whether nobody has claimed it yet."""
        return bool(self._token)


class RequestFuture(LinkFuture):
    """A request's future: waiting on it with ``result()`` runs the request's unstarted cells in the waiting thread.

    Waiting on it from a completion callback of its own executor raises
    :class:`~rvai_sdk.exc.DeadlockError` (:class:`~rvai_sdk._delivery.LinkFuture`), as on every runtime.
    """

    _help: Callable[[], None] | None = None

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            if self._token is not None:
                refuse_wait(self._token, "result()", self._name)
            help_ = self._help
            if help_ is not None and timeout is None:
                help_()
        return Future.result(self, timeout)


class Request:
    """One request in flight: inputs, configuration snapshot, each cell's result or ready time, what is left.

    ``results[i]`` holds the time cell ``i``'s inputs were complete (its queue-wait start)
    until it holds cell ``i``'s outputs; successors read it only after cell ``i`` is done.
    ``remaining[i]``: predecessors of cell ``i`` not done yet; ``left``: cells not done yet.
    ``taken[i]``, for batched cells: :data:`UPSTREAM`, :data:`QUEUED` or :data:`TAKEN`.

    ``failed``: the request is over; its cells not started yet are skipped (a deadline, a stop,
    Ctrl-C in a cell). ``error``: the :class:`~rvai_sdk.exc.CellError` of the first of its cells
    that raised, or ``None``: the cells downstream of a failed one never run, its other cells still
    run (for their state changes; results dropped), so what a failure leaves behind does not depend
    on timing; its future fails with ``error`` once they are done.
    """

    __slots__ = (
        "rid",
        "sid",
        "entry",
        "inputs",
        "config",
        "results",
        "remaining",
        "left",
        "future",
        "failed",
        "error",
        "taken",
        "works",
        "t0",
        "timeout",
        "snaps",
        "trace",  # the submitter's tracing context, set only while tracing (rvai_sdk._tracing)
        "__weakref__",
    )
    trace: Any  # unset unless tracing: read it with getattr(req, "trace", None)

    def __init__(
        self,
        rid: int,
        sid: str | None,
        entry: StateEntry,
        inputs: Mapping[str, Any],
        config: Config,
        preds: list[int],
        t0: float,
        batched: bool,
    ) -> None:
        self.rid = rid
        self.sid = sid
        self.entry = entry
        self.inputs = inputs
        self.config = config
        self.results: list[Any] = [t0] * len(preds)
        self.remaining = preds.copy()
        self.left = len(preds)
        self.future: RequestFuture = RequestFuture()
        self.failed = False
        self.error: BaseException | None = None
        self.taken: list[int] = [UPSTREAM] * len(preds) if batched else preds  # read only for batched cells
        self.works: list[Work] = []
        self.t0 = t0
        self.timeout: float | None = None
        self.snaps: dict[str, bytes] | None = None  # pickled states after this request's calls (durable store only)


def set_result(future: Future[dict[str, Any]], value: dict[str, Any]) -> None:
    """Resolve ``future`` unless it has failed already (e.g. by ``stop()``)."""
    try:
        future.set_result(value)
    except InvalidStateError:
        pass


def set_exception(future: Future[dict[str, Any]], exc: BaseException) -> None:
    """Fail ``future`` unless it is done already."""
    try:
        future.set_exception(exc)
    except InvalidStateError:
        pass
