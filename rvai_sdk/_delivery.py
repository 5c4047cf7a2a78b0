"""Waits that could never end: refusing them at once with :class:`~rvai_sdk.exc.DeadlockError`.

A link resolves its futures on one thread (the Unix link's reader, Ray's callback thread, an
executor's worker): their completion callbacks run there. A callback that waits for another
answer of the same link blocks the only thread that could deliver it. Each link marks that
thread while it delivers, and a wait there is refused with DeadlockError instead of hanging.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

from rvai_sdk.exc import DeadlockError

__all__ = ["LinkFuture", "delivered", "delivering", "refuse_wait"]

_delivery = threading.local()


def delivering(token: object) -> object:
    """Mark this thread as delivering ``token``'s results; returns the mark to restore with :func:`delivered`."""
    previous = getattr(_delivery, "token", None)
    _delivery.token = token
    return previous


def delivered(previous: object) -> None:
    """End the mark set by :func:`delivering` (restoring the one before)."""
    _delivery.token = previous


def refuse_wait(token: object, what: str, name: str) -> None:
    """Raise :class:`~rvai_sdk.exc.DeadlockError` if this thread is delivering ``token``'s results.

    Args:
        token: whose deliveries a wait here would need.
        what: the wait, for the message (``"result()"``, ``"stats()"``).
        name: the pipeline's name, for the message.
    """
    if token is not None and getattr(_delivery, "token", None) is token:
        raise DeadlockError(
            f"{what} was called from a completion callback of the inference process of pipeline {name!r}: "
            "the callback runs on the thread that delivers that process's answers, so this wait could never "
            "end. Send from the callback without waiting (predict(...).add_done_callback(...)), or wait in "
            "another thread"
        )


class LinkFuture(Future):  # type: ignore[type-arg]
    """A link's future: ``result()`` or ``exception()`` on the thread that would deliver it raises
    :class:`~rvai_sdk.exc.DeadlockError` instead of waiting forever."""

    _token: object = None
    _name: str = ""

    def result(self, timeout: float | None = None) -> Any:
        if self._token is not None and not self.done():
            refuse_wait(self._token, "result()", self._name)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._token is not None and not self.done():
            refuse_wait(self._token, "exception()", self._name)
        return super().exception(timeout)
