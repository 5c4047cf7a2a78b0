"""How long ``stop(timeout=5)`` and ``restart()`` take while a cell call hangs (issue 12).

A cell blocks forever on one request; with that call running, ``restart()`` (its
default timeout, 10 s) and then ``stop(timeout=5)`` are timed. Both must return
within their timeout plus about a second, killing what does not stop; ``restart()``
also starts the fresh process, which is printed apart.

    python benchmarks/bench_stop.py [--runtime debug|local|ray]
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass

from rvai_sdk.cell import Cell
from rvai_sdk.context import InferenceContext
from rvai_sdk.data import Inputs, Outputs, Parameters
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, InferenceProcess, init
from rvai_sdk.types import Integer


@dataclass
class In(Inputs):
    x: Integer = Inputs.field()


@dataclass
class Out(Outputs):
    y: Integer = Outputs.field()


class Hang(Cell):
    """Blocks (for 1000 s) on x == 99; otherwise passes x through."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: Parameters, inputs: In) -> Out:
        if inputs.x == 99:
            threading.Event().wait(1000)
        return Out(y=inputs.x)


def pipeline() -> Pipeline:
    pf = PipelineFactory(name="hang")
    cell = pf.add_cell(ref="hang", cell=Hang())
    pf.declare_input(ref="x", input=cell.inputs.x)
    pf.declare_output(ref="y", output=cell.outputs.y)
    return pf.build()


def hang(proc: InferenceProcess) -> None:
    """Send the request that hangs and wait until its call runs."""
    proc.predict({"x": 99}, sid="stuck")
    tick = threading.Event()
    while proc.stats()["cells"]["hang"]["running"] != 1:
        tick.wait(0.01)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="local", choices=["debug", "local", "ray"])
    args = parser.parse_args(argv)
    with init(args.runtime) as rt:
        proc = rt.start_inference(Inference(pipeline=pipeline()))
        proc.predict({"x": 1}).result(timeout=60)
        start = time.perf_counter()
        fresh = rt.start_inference(Inference(pipeline=pipeline()))
        start_s = time.perf_counter() - start
        fresh.stop()
        hang(proc)
        start = time.perf_counter()
        proc.restart()
        restart_s = time.perf_counter() - start
        proc.predict({"x": 1}).result(timeout=60)
        hang(proc)
        start = time.perf_counter()
        proc.stop(timeout=5)
        stop_s = time.perf_counter() - start
    print(f"{args.runtime} runtime, a cell call hanging:")
    print(f"  restart() (timeout 10 s): {restart_s:.2f} s, of which starting a fresh process takes about {start_s:.2f} s")
    print(f"  stop(timeout=5): {stop_s:.2f} s (limit: 6 s)")
    return {"restart": restart_s, "start": start_s, "stop": stop_s}


if __name__ == "__main__":
    main()
