"""What the nesting-depth check costs on JSON from the network, beside ``json.loads`` alone.

The HTTP, Open Inference Protocol and MQTT decoders parse with ``rvai_sdk.types._json.loads``,
which refuses a document nested deeper than 128 arrays or objects before parsing it (see that
module). A document with fewer than 129 ``[``/``{`` costs two byte counts; any other is scanned
once (strings blanked by one regular expression, then a bracket count in numpy). This runs, side
by side in one process and in alternated rounds (medians reported), ``json.loads`` and the checked
``loads`` on bodies users send:

- a small ``/predict`` body (one sid, three scalars);
- a 224x224x3 image as nested lists of floats (what a client without base64 sends; ~1.5 MB);
- the same at 1000x1000x3 (~17 MB);
- a batch of 20,000 short strings, in one list and in 1,000 lists of 500 (that one is scanned);
- a 1 MB base64 image inside an object (one long string).

Prints milliseconds per parse, the ratio checked / plain and the time added per MB of body. Goals:
the ratio within 1.25 on nested-list bodies (the ones scanned, where json.loads itself costs ~60 ms
per MB), and at most 1 ms added per MB on the other bodies of 100 KB or more (1 MB takes 8 ms to
arrive over a 1 Gb/s link). A small body's few
microseconds are not a goal: the request around it costs a hundred times more.

    python benchmarks/bench_json_depth.py [--rounds 5] [--quick] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, write_section  # noqa: E402

from rvai_sdk.types._json import loads  # noqa: E402

GOAL_RATIO = 1.25
GOAL_MS_PER_MB = 1.0


def bodies(quick: bool) -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    side = 300 if quick else 1000
    return {
        "small /predict body": json.dumps({"inputs": {"x": 1, "y": 2.5, "name": "cam-1"}, "sid": "cam-1"}).encode(),
        "224x224x3 floats as nested lists": json.dumps(rng.random((224, 224, 3)).round(4).tolist()).encode(),
        f"{side}x{side}x3 floats as nested lists": json.dumps(rng.random((side, side, 3)).round(4).tolist()).encode(),
        "20,000 short strings": json.dumps({"inputs": {"names": [f"n{i}" for i in range(20_000)]}}).encode(),
        "short strings in 1,000 nested lists": json.dumps([[f"s{i}" for i in range(500)] for _ in range(1000)]).encode(),
        "1 MB base64 image": json.dumps({"inputs": {"image": base64.b64encode(rng.bytes(750_000)).decode()}}).encode(),
    }


def per_parse(parse: Callable[[bytes], Any], body: bytes, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        parse(body)
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller bodies, 2 rounds (a smoke run)")
    parser.add_argument("--write", type=Path, default=None, help="put the table into this markdown file")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    rows = []
    for name, body in bodies(args.quick).items():
        repeat = max(1, min(2000, int(2e6 // max(len(body), 1))))
        plain: list[float] = []
        checked: list[float] = []
        for _ in range(rounds):  # alternated: drift in the machine's load hits both
            plain.append(per_parse(json.loads, body, repeat))
            checked.append(per_parse(loads, body, repeat))
        p, c = statistics.median(plain), statistics.median(checked)
        rows.append((name, len(body), p, c, c / p))
    lines = [
        f"Measured on {machine()}, medians of {rounds} alternated rounds (`python benchmarks/bench_json_depth.py`).",
        "",
        "| body | size | json.loads | checked loads | ratio | added per MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, size, p, c, ratio in rows:
        added = (c - p) * 1e3 / (size / 1e6)
        lines.append(
            f"| {name} | {size / 1e6:.2f} MB | {p * 1e3:.3f} ms | {c * 1e3:.3f} ms | {ratio:.2f} | {added:.2f} ms |"
        )
    worst_ratio = max(r[4] for r in rows if "nested lists" in r[0])
    worst_added = max(
        (r[3] - r[2]) * 1e3 / (r[1] / 1e6) for r in rows if r[1] >= 100_000 and "nested lists" not in r[0]
    )
    met = worst_ratio <= GOAL_RATIO and worst_added <= GOAL_MS_PER_MB
    lines += [
        "",
        f"goals: nested lists checked/plain <= {GOAL_RATIO} (worst {worst_ratio:.2f}); other bodies from 100 KB at "
        f"most {GOAL_MS_PER_MB:g} ms added per MB (worst {worst_added:.2f} ms): {'met' if met else 'NOT met'}",
    ]
    print("\n".join(lines))
    if args.write is not None:
        write_section(args.write, "json_depth", "\n".join(lines))


if __name__ == "__main__":
    main()
