"""A non-editable install of the core alone: extensions are packaged, the debug runtime works, no extra is pulled in."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import sys
import rvai_sdk.extensions, rvai_sdk.extensions.drivers, rvai_sdk.extensions.sources, rvai_sdk.extensions.sinks
from importlib.resources import files
assert files("rvai_sdk").joinpath("py.typed").is_file(), "py.typed is not installed"
assert "site-packages" in rvai_sdk.extensions.__file__, rvai_sdk.extensions.__file__
from dataclasses import dataclass
from rvai_sdk.cell import Cell
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.pipeline import PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Integer

@dataclass
class In(Inputs):
    x: Integer = Inputs.field()

@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()

class Inc(Cell):
    @classmethod
    def call(cls, context, parameters: Parameters, inputs: In) -> Out:
        return Out(y=inputs.x + 1)

pf = PipelineFactory(name="p")
c = pf.add_cell(ref="c", cell=Inc())
pf.declare_input(ref="x", input=c.inputs.x)
pf.declare_output(ref="y", output=c.outputs.y)
with init("debug") as rt, rt.start_inference(Inference(pipeline=pf.build())) as proc:
    assert proc.predict({"x": 1}).result() == {"y": 2}
for extra in ("PIL", "pygraphviz", "fastapi", "ray", "av", "sqlalchemy", "paho", "torch"):
    try:
        __import__(extra)
    except ImportError:
        continue
    raise SystemExit(f"{extra} is installed in a core-only environment")
print("core install ok")
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_non_editable_core_install_packages_the_extensions_and_runs_the_debug_runtime(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "__pycache__", ".*cache*"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=540
    )
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "core install ok" in run.stdout
    assert sys.executable != str(python)
