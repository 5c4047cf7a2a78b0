"""Importing the source/sink extensions pulls in no optional dependency: each is imported when a source or sink opens."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "rvai_sdk.extensions.drivers.source_sink_driver",
    "rvai_sdk.extensions.sources.dummy_source",
    "rvai_sdk.extensions.sources.video_source",
    "rvai_sdk.extensions.sources.mqtt_source",
    "rvai_sdk.extensions.sinks.dummy_sink",
    "rvai_sdk.extensions.sinks.database_sink",
    "rvai_sdk.extensions.sinks.mqtt_sink",
    "rvai_sdk.extensions.sinks.http_callback_sink",
]
HEAVY = ["av", "sqlalchemy", "psycopg", "paho", "httpx"]


def test_source_and_sink_modules_import_no_optional_dependency() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        + "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
