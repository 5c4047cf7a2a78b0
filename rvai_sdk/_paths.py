"""Where the SDK keeps per-user files: the services registry and logs, the default task store."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "state_home"]

HOME_ENV = "RVAI_SDK_HOME"
"""Environment variable naming the SDK's per-user directory (tests and containers point it elsewhere)."""


def state_home() -> Path:
    """The SDK's per-user directory (not created here).

    ``$RVAI_SDK_HOME`` when set, else ``$XDG_STATE_HOME/rvai-sdk``, else
    ``~/.local/state/rvai-sdk``. It holds the services registry (``services.db``)
    and their ``logs/``, and the FastAPIDriver's default task store (``tasks.sqlite3``).
    """
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rvai-sdk"
