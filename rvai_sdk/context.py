"""What a cell sees of the request and of the process it runs in."""

from __future__ import annotations

from typing import Any

__all__ = ["InferenceContext", "ModelContext"]


class InferenceContext:
    """The per-call context handed to ``call`` (one per item in ``call_batch``).

    Attributes:
        ref: the cell's ref in the pipeline.
        sid: the request's state id, or ``None`` for a one-off request.
        state: this sid's instance of the cell's ``State`` class (``None`` when the
            cell declares no state). Assign its fields to keep values for the next
            request of the same sid.
        model: what the cell's ``load_model`` returned (``None`` without one).
        device: where the cell runs: ``"cpu"`` or ``"cuda:N"``.
        request_id: a number unique to the request within the inference process.
    """

    __slots__ = ("ref", "sid", "state", "model", "device", "request_id")

    def __init__(
        self,
        ref: str,
        sid: str | None,
        state: Any,
        model: Any = None,
        device: str = "cpu",
        request_id: int = 0,
    ) -> None:
        self.ref = ref
        self.sid = sid
        self.state = state
        self.model = model
        self.device = device
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"InferenceContext(ref={self.ref!r}, sid={self.sid!r}, request_id={self.request_id}, device={self.device!r})"


class ModelContext:
    """The context handed to ``load_model``, once per cell before the first request.

    Attributes:
        ref: the cell's ref in the pipeline.
        device: where the cell runs: ``"cpu"`` or ``"cuda:N"``; put the model there.
        pipeline: the pipeline's name.
    """

    __slots__ = ("ref", "device", "pipeline")

    def __init__(self, ref: str, device: str = "cpu", pipeline: str = "") -> None:
        self.ref = ref
        self.device = device
        self.pipeline = pipeline

    def __repr__(self) -> str:
        return f"ModelContext(ref={self.ref!r}, device={self.device!r}, pipeline={self.pipeline!r})"
