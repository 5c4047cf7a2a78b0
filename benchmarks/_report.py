"""Shared helpers for benchmark scripts: timing and writing result tables into docs/performance.md."""

from __future__ import annotations

import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def per_call_seconds(fn: Callable[[], object], *, number: int, repeat: int = 5) -> float:
    """Median over ``repeat`` rounds of the mean seconds per call of ``fn`` over ``number`` calls."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return statistics.median(rounds)


def alternating_seconds(fns: dict[str, Callable[[], object]], *, number: int, repeat: int = 5) -> dict[str, float]:
    """Like :func:`per_call_seconds` for several functions, their rounds interleaved.

    Round ``i`` of every function runs before round ``i + 1`` of any, so a change of
    the machine's state during the measurement (another tenant, where the scheduler
    placed the processes) reaches every side alike. Median over rounds of the mean
    seconds per call, by name.
    """
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            rounds[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in rounds.items()}


def machine() -> str:
    """A one-line description of the machine the figures come from."""
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_section(path: Path, name: str, markdown: str) -> None:
    """Replace the block between ``<!-- bench:NAME -->`` markers in ``path`` (appending it if absent)."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
