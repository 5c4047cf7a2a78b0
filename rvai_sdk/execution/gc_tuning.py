"""Garbage-collector settings for a process that serves requests (an inference process, a Ray replica).

Why: every request allocates a few dozen container objects (its future, the
request record, result dicts) that live until it is answered. With thousands of
streams in flight a request outlives several young collections, so its objects
are promoted to the oldest generation and every one of them drags in a *full*
collection sooner, which walks every object of the process (the models, the
kept states, the modules). Measured with ``benchmarks/bench_streams.py``: the
CPU per request of the inference process grew about 1.6x from 16 to 4,096
streams in flight, and most of that growth was the collector
(docs/performance.md, "Thousands of streams").

What :func:`tune_for_serving` does, once the models are loaded:

- ``gc.freeze()``: what exists now (modules, models, the plan) moves to the
  permanent generation, which no collection walks again;
- ``gc.set_threshold(*SERVING_THRESHOLDS)``: young collections every 100,000 net
  allocations instead of 700, so a request's objects usually die young, and a
  full collection only every 100 middle ones (it still runs: cycles are freed).
  The young threshold sits above the allocations of one burst of thousands of
  requests arriving together (one socket frame of a driver with 4,096 streams in
  flight): at 10,000, such bursts set off a young collection of about 3 ms every
  few hundred requests, walking requests still in flight, 3.4-4.6 µs of CPU per
  request at 4,096 streams and none at 256; at 100,000, none at either (measured
  with ``gc.callbacks`` in the inference process, docs/performance.md). Cyclic
  garbage waits for at most that many allocations (a few MB).

It only runs in processes that the SDK starts for serving (never in the user's
own process: the debug runtime leaves the collector alone). ``RVAI_SERVING_GC=0``
in the environment of the inference process keeps Python's defaults;
``RVAI_SERVING_GC=young,middle,full`` sets other thresholds.
"""

from __future__ import annotations

import gc
import os

from rvai_sdk.exc import ParameterError

__all__ = ["SERVING_THRESHOLDS", "tune_for_serving"]

SERVING_THRESHOLDS = (100_000, 50, 100)
"""``gc.set_threshold`` in a serving process: young, middle and full collection thresholds."""


def tune_for_serving() -> bool:
    """Freeze what the process holds now and raise the collection thresholds; whether it did.

    Call it once the process has loaded its models, before it serves. Does nothing when
    ``RVAI_SERVING_GC`` is ``0`` in the environment; ``young,middle,full`` there sets those thresholds.

    Raises:
        ParameterError: ``RVAI_SERVING_GC`` is set to something else (the variable is named).
    """
    setting = os.environ.get("RVAI_SERVING_GC", "").strip()
    if setting == "0":
        return False
    thresholds = SERVING_THRESHOLDS
    if setting and setting != "1":
        try:
            young, middle, full = (int(part) for part in setting.split(","))
        except ValueError:
            raise ParameterError(
                f"RVAI_SERVING_GC must be 0 (Python's defaults), 1 (the SDK's) or three thresholds 'young,middle,full' "
                f"such as '10000,50,100', got {setting!r}",
                field="RVAI_SERVING_GC",
            ) from None
        thresholds = (young, middle, full)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return True
