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

