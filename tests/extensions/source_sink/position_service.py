"""A stream service for the stream-position tests, run as its own program (never collected).

It serves a counting pipeline on the local runtime with two streams into a sink that
keeps no positions (:class:`TaggedFileSink`): ``file`` (a replayable DummySource, like a
video file) and ``cam`` (a DummySource without a seed, like a camera), and records the
positions in ``--store``. The tests SIGKILL its whole process group (this process, the
inference process and the driver process: a crash of the whole machine) and run it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--name", required=True, help="the pipeline's name (the store's namespace)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--every", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds the sink takes per batch (a slow receiver)")
    args = parser.parse_args()

    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sources.dummy_source import DummySource
    from rvai_sdk.runtime import Inference, init
    from rvai_sdk.types import FloatRange
    from tests.conftest import Count, single
    from tests.extensions.source_sink.support import TaggedFileSink

    def source(seed: int | None) -> DummySource:
        return DummySource(params=DummySource.parameters(rate=FloatRange(args.rate), count=args.count, seed=seed))

    with init("local") as rt, rt.start_inference(Inference(pipeline=single(Count, name=args.name))) as proc:
        handle = proc.add_driver(
            "stream",
            SourceSinkDriver,
            sources={"file": source(7), "cam": source(None)},
            sinks={"out": TaggedFileSink(
                args.out, args.run, params={"batch_size": args.batch, "batch_wait": 0.0, "buffer": 64}, delay=args.delay
            )},
            position_store=args.store,
            parameters={"position_every": args.every, "position_interval": 0.2},
        )
        print("started", flush=True)
        final = SourceSinkDriver.wait(handle, timeout=300)
        print(json.dumps({ref: {k: final["sources"][ref][k] for k in ("first_index", "skipped", "processed")} for ref in final["sources"]}), flush=True)


if __name__ == "__main__":
    main()
