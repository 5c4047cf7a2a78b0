"""The gRPC driver suite needs the grpc extra and tritonclient[grpc] (the test extra): CI installs them; elsewhere it is left out."""

from __future__ import annotations

import importlib.util

from tests.conftest import IN_CI

NEEDED = ("grpc", "google.protobuf", "tritonclient.grpc", "fastapi", "httpx")
MISSING = [module for module in NEEDED if importlib.util.find_spec(module.split(".")[0]) is None]

if MISSING:
    if IN_CI:
        raise RuntimeError(f"CI installs every extra, but {', '.join(MISSING)} are missing for the gRPC driver suite")
    collect_ignore_glob = ["test_*.py"]
