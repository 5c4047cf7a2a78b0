"""The life cycle shared by inference process and driver handles."""

from __future__ import annotations

import enum

__all__ = ["ProcessStatus", "TRANSITIONS"]


class ProcessStatus(enum.Enum):
    """The life cycle of a process handle.

    Allowed transitions: STARTING → RUNNING | FAILED; RUNNING → STOPPING | FAILED;
    STOPPING → STOPPED; FAILED → STOPPED (after ``stop()``); RUNNING or FAILED →
    STARTING (``restart()``).
    """

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


TRANSITIONS = {
    ProcessStatus.STARTING: {ProcessStatus.RUNNING, ProcessStatus.FAILED, ProcessStatus.STOPPING},
    ProcessStatus.RUNNING: {ProcessStatus.STOPPING, ProcessStatus.FAILED, ProcessStatus.STARTING},
    ProcessStatus.STOPPING: {ProcessStatus.STOPPED},
    ProcessStatus.FAILED: {ProcessStatus.STOPPING, ProcessStatus.STOPPED, ProcessStatus.STARTING},
    ProcessStatus.STOPPED: set(),
}
