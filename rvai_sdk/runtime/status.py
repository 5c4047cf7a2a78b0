"""The life cycle shared by inference process and driver handles."""

from __future__ import annotations

import enum

__all__ = ["ProcessStatus", "TRANSITIONS", "check_transition"]


class ProcessStatus(enum.Enum):
    """The life cycle of a process handle.

    Allowed transitions: STARTING → RUNNING | FAILED | STOPPING; RUNNING → STOPPING | FAILED;
    STOPPING → STOPPED; FAILED → STOPPING | STOPPED (after ``stop()``); RUNNING or FAILED →
    STARTING (``restart()``); RUNNING → STOPPED (a driver whose ``run()`` returned by itself).
    Handles change status only through this table (``_transition``).
    """

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


TRANSITIONS = {
    ProcessStatus.STARTING: {ProcessStatus.RUNNING, ProcessStatus.FAILED, ProcessStatus.STOPPING},
    ProcessStatus.RUNNING: {ProcessStatus.STOPPING, ProcessStatus.FAILED, ProcessStatus.STARTING, ProcessStatus.STOPPED},
    ProcessStatus.STOPPING: {ProcessStatus.STOPPED},
    ProcessStatus.FAILED: {ProcessStatus.STOPPING, ProcessStatus.STOPPED, ProcessStatus.STARTING},
    ProcessStatus.STOPPED: set(),
}


def check_transition(what: str, current: ProcessStatus, new: ProcessStatus) -> None:
    """Raise unless ``current`` → ``new`` is in :data:`TRANSITIONS`.

    Raises:
        ProcessStateError: the move is not allowed; names ``what`` and both states.
    """
    if new not in TRANSITIONS[current]:
        from rvai_sdk.exc import ProcessStateError

        raise ProcessStateError(f"{what} cannot go from {current.name} to {new.name}", state=current.name)
