"""What the Open Inference Protocol's sequence parameters must do, whichever transport carries them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Infer(Protocol):
    def __call__(self, x: int, **sequence: Any) -> tuple[int, int]:
        """One request of ``x`` with the sequence keywords of tritonclient's ``infer``: (count, total) of its stream."""


def check_sequences(infer: Infer) -> None:
    """``sequence_id`` selects a stream's state, ``sequence_start`` forgets it first, ``sequence_end`` drops it after
    the answer, a ``sid`` parameter names a stream too, and a request with neither is one-off."""
    assert infer(10, sequence_id=701, sequence_start=True) == (1, 10)
    assert infer(5, sequence_id=702, sequence_start=True) == (1, 5)  # another stream, its own state
    assert infer(1, sequence_id=701) == (2, 11)
    assert infer(2, sequence_id=701, sequence_end=True) == (3, 13)  # answered, then 701's state is dropped
    assert infer(4, sequence_id=701) == (1, 4)  # a fresh sequence
    assert infer(1, sequence_id=702) == (2, 6)
    assert infer(3, sequence_id=702, sequence_start=True) == (1, 3)  # a new start forgets what was kept
    assert infer(7, sequence_id="camera-9", sequence_start=True) == (1, 7)  # string sequence ids
    assert infer(7, parameters={"sid": "camera-9"}) == (2, 14)  # the same stream, named by a sid parameter
    assert infer(1) == (1, 1) and infer(1) == (1, 1)  # no sequence: one-off requests


def check_quickstart_sequences(ready: bool, infer: Callable[..., int]) -> None:
    """The same rules on the quickstart pipeline (output = input + its stream's count), as the debug and ray
    runtimes are checked: ``infer(x, **sequence)`` is the pipeline's output; ``ready``, its model readiness."""
    assert ready
    assert [infer(10, sequence_id=5, sequence_start=True), infer(10, sequence_id=5)] == [11, 12]
    assert infer(10, sequence_id=6) == 11
    assert infer(10, sequence_id=5, sequence_end=True) == 13
    assert infer(10, sequence_id=5) == 11 and infer(10) == 11
