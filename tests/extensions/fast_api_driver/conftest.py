"""The HTTP driver suite needs the fastapi extra and httpx: CI installs them; elsewhere it is left out."""

from __future__ import annotations

import importlib.util

from tests.conftest import IN_CI

NEEDED = ("fastapi", "uvicorn", "httpx", "multipart")
MISSING = [module for module in NEEDED if importlib.util.find_spec(module) is None]

if MISSING:
    if IN_CI:
        raise RuntimeError(f"CI installs every extra, but {', '.join(MISSING)} are missing for the FastAPI driver suite")
    collect_ignore_glob = ["test_*.py"]


if not MISSING:
    import os
    from collections.abc import Iterator

    import pytest

    @pytest.fixture(scope="session", autouse=True)
    def _task_store_of_this_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        """Drivers left on the default task store keep their tasks in this session's own SQLite file (through
        ``RVAI_STATE_DIR``, inherited by driver processes), not in ``~/.local/state`` shared with other runs."""
        before = os.environ.get("RVAI_STATE_DIR")
        os.environ["RVAI_STATE_DIR"] = str(tmp_path_factory.mktemp("rvai-state"))
        yield
        if before is None:
            os.environ.pop("RVAI_STATE_DIR", None)
        else:
            os.environ["RVAI_STATE_DIR"] = before
