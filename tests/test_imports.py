"""The core imports no heavy optional dependency."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["ray", "fastapi", "uvicorn", "av", "sqlalchemy", "paho", "torch", "pygraphviz", "PIL", "httpx"]

CORE = [
    "rvai_sdk",
    "rvai_sdk.types",
    "rvai_sdk.data",
    "rvai_sdk.cell",
    "rvai_sdk.context",
    "rvai_sdk.resources",
    "rvai_sdk.pipeline",
    "rvai_sdk.execution",
    "rvai_sdk.runtime",
    "rvai_sdk.runtime.debug",
    "rvai_sdk.exc",
    "rvai_sdk.extensions",
    "rvai_sdk.cli",
]


def test_core_subpackages_import_no_heavy_dependency() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        + "assert not heavy, heavy\n"
        + "from rvai_sdk.types import Integer\n"
        + "assert Integer(2) + 1 == 3\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_public_import_paths_of_the_design_exist() -> None:
    from rvai_sdk.cell import Cell, cell  # noqa: F401
    from rvai_sdk.context import InferenceContext, ModelContext  # noqa: F401
    from rvai_sdk.data import Inputs, Outputs, Parameters, State  # noqa: F401
    from rvai_sdk.exc import RvaiError  # noqa: F401
    from rvai_sdk.pipeline import Pipeline, PipelineFactory  # noqa: F401
    from rvai_sdk.resources import CellResources  # noqa: F401
    from rvai_sdk.runtime import Inference, InferenceProcess, init  # noqa: F401
    from rvai_sdk.types import (  # noqa: F401
        BoundingBox,
        Boolean,
        Class,
        Classes,
        Dict,
        Enum,
        Float,
        FloatRange,
        Image,
        Integer,
        IntegerRange,
        List,
        Point,
        String,
    )
