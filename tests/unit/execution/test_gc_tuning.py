"""A serving process's garbage collector: frozen after load, thresholds raised, RVAI_SERVING_GC to opt out or choose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

PROBE = """
import gc, json
from rvai_sdk.execution.gc_tuning import tune_for_serving
before = gc.get_threshold()
try:
    done = tune_for_serving()
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"done": done, "thresholds": gc.get_threshold(), "before": before, "frozen": gc.get_freeze_count()}))
"""


def probe(setting: str | None) -> dict[str, object]:
    """Run tune_for_serving in a fresh interpreter (never in this one) with RVAI_SERVING_GC set to ``setting``."""
    env = {k: v for k, v in os.environ.items() if k != "RVAI_SERVING_GC"}
    if setting is not None:
        env["RVAI_SERVING_GC"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=50, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_serving_process_freezes_what_it_loaded_and_raises_the_thresholds() -> None:
    result = probe(None)
    assert result["done"] is True
    assert result["thresholds"] == [10_000, 50, 100]
    assert isinstance(result["frozen"], int) and result["frozen"] > 1000, "the loaded modules are in the permanent generation"


def test_rvai_serving_gc_0_keeps_pythons_defaults_and_three_numbers_set_the_thresholds() -> None:
    kept = probe("0")
    assert kept["done"] is False and kept["frozen"] == 0
    assert kept["thresholds"] == kept["before"], "Python's own thresholds"
    assert probe("5000,20,50")["thresholds"] == [5000, 20, 50]


def test_a_bad_rvai_serving_gc_is_an_error_naming_the_variable() -> None:
    result = probe("lots")
    assert result["error"] == "ParameterError"
    assert "RVAI_SERVING_GC" in str(result["message"]) and "'lots'" in str(result["message"])
