"""Sinks: where a stream's results go (a database, a message topic, an HTTP receiver, a log).

A :class:`Sink` is a picklable piece of configuration until :meth:`Sink.open` is
called inside the driver; it is then given :class:`Record` batches in source
order, flushed and closed. The driver buffers records for each sink (bounded),
retries failed writes with backoff and applies back-pressure to the sources when
the buffer is full, so a sink's :meth:`Sink.write` only has to write one batch
or raise.

Example:
    >>> from rvai_sdk.types import Integer
    >>> record = Record(source="cam-1", sid="cam-1", index=0, timestamp=0.0, outputs={"y": Integer(2)})
    >>> record.to_json()["outputs"]
    {'y': 2}
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from rvai_sdk.data import Parameters
from rvai_sdk.drivers.driver import DriverParameters
from rvai_sdk.drivers.source import ComponentMap, Configurable
from rvai_sdk.pipeline.graph import InputSpec, OutputSpec
from rvai_sdk.types import Boolean, FloatRange, IntegerRange, to_json

__all__ = ["Sink", "Record", "SinkContext", "SinkParameters", "SinkMap", "COMPLETE", "FAILED"]

COMPLETE = "complete"
"""The status of a record whose request succeeded."""
FAILED = "failed"
"""The status of a record whose request failed (``error`` says why; ``outputs`` is empty)."""


@dataclasses.dataclass
class SinkParameters(DriverParameters):
    """Parameters every sink has: batching, buffering and retries (applied by the driver).

    Attributes:
        batch_size: the most records given to one :meth:`Sink.write`.
        batch_wait: seconds to wait for a batch to fill before writing what is there.
        buffer: records held for this sink while it is slow or down; when full the
            sources wait (back-pressure) instead of records being dropped.
        retry_initial: seconds before the first retry of a failed write.
        retry_max: the longest wait between retries (the wait doubles each time).
        failed: also write records of failed requests (status ``failed``).
    """

    batch_size: IntegerRange = DriverParameters.field(
        name="Batch size", description="Most records per write", default=IntegerRange(64, min=1, max=100_000)
    )
    batch_wait: FloatRange = DriverParameters.field(
        name="Batch wait", description="Seconds to wait for a batch to fill", default=FloatRange(0.02, min=0.0, max=60.0)
    )
    buffer: IntegerRange = DriverParameters.field(
        name="Buffer", description="Records held while the sink is slow or down", default=IntegerRange(1000, min=1, max=10_000_000)
    )
    retry_initial: FloatRange = DriverParameters.field(
        name="First retry delay", description="Seconds before retrying a failed write", default=FloatRange(0.1, min=0.0, max=600.0)
    )
    retry_max: FloatRange = DriverParameters.field(
        name="Longest retry delay", description="Upper bound of the doubling retry delay", default=FloatRange(2.0, min=0.0, max=3600.0)
    )
    failed: Boolean = DriverParameters.field(
        name="Write failures", description="Also write records of failed requests", default=Boolean(True)
    )


@attrs.frozen
class Record:
    """The result of one source item, as sinks receive it.

    Attributes:
        source: the ref of the source the item came from.
        sid: the state id the request ran with.
        index: the item's index in its source (``(source, index)`` is unique).
        timestamp: when the item was captured, in seconds since the epoch.
        outputs: pipeline output ref → typed value (empty for a failed request).
        inputs: the request's inputs (pipeline input ref → typed value), when kept.
        status: :data:`COMPLETE` or :data:`FAILED`.
        error: why the request failed (``None`` when it succeeded).
    """

    source: str
    sid: str | None
    index: int
    timestamp: float
    outputs: Mapping[str, Any]
    inputs: Mapping[str, Any] | None = None
    status: str = COMPLETE
    error: str | None = None

    def to_json(self, *, inputs: bool = False) -> dict[str, Any]:
        """The JSON form: plain dicts, lists, strings and numbers.

        Args:
            inputs: include the inputs (images become base64 PNG strings: large).

        Returns:
            ``{"source", "sid", "index", "timestamp", "status", "outputs"}`` plus ``"error"``
            for a failed record and ``"inputs"`` when asked.
        """
        obj: dict[str, Any] = {
            "source": self.source,
            "sid": self.sid,
            "index": self.index,
            "timestamp": self.timestamp,
            "status": self.status,
            "outputs": {ref: to_json(value) for ref, value in self.outputs.items()},
        }
        if self.error is not None:
            obj["error"] = self.error
        if inputs and self.inputs is not None:
            obj["inputs"] = {ref: to_json(value) for ref, value in self.inputs.items()}
        return obj


@attrs.frozen
class SinkContext:
    """What a sink gets when it is opened inside the driver.

    Attributes:
        ref: the sink's ref in the driver (use it in messages).
        outputs: the pipeline's outputs by ref (their types), e.g. to create table columns.
        inputs: the pipeline's inputs by ref.
        stopped: set when the driver stops; a write that waits should give up soon after.
        logger: where to log.
    """

    ref: str
    outputs: Mapping[str, OutputSpec]
    inputs: Mapping[str, InputSpec] = attrs.field(factory=dict)
    stopped: threading.Event = attrs.field(factory=threading.Event)
    logger: logging.Logger = attrs.field(factory=lambda: logging.getLogger("rvai_sdk.sinks"))


class Sink(Configurable, abc.ABC):
    """Base of every sink: where records go.

    Implement :meth:`write`; override :meth:`open`, :meth:`flush` and :meth:`close`
    to manage connections, and :meth:`stats` for your counters. The constructor only
    keeps configuration (the driver may run in another process, so a sink must pickle).

    The framework promises: :meth:`open` is called once on a private copy in the
    driver; :meth:`write` is then called from one thread with batches in source order
    (per source); a write that raises is retried with the same records after
    :meth:`close` and a new :meth:`open`, with backoff, so a write must be idempotent
    for records keyed by ``(source, index)``. When the driver stops it writes what is
    buffered (for a bounded time), calls :meth:`flush`, then :meth:`close`.

    Attributes:
        parameters_class: the :class:`SinkParameters` subclass this sink takes.
        params: its parameters.
    """

    parameters_class: ClassVar[type[Parameters]] = SinkParameters
    params: Any

    def open(self, context: SinkContext) -> None:
        """Connect, create tables...; keep ``context``.

        Raises:
            SinkError: it cannot be opened (the driver retries with backoff).
        """
        self.context = context

    @abc.abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Write one batch durably, or raise.

        Raises:
            SinkError: nothing or part of the batch was written; the driver retries all of it.
        """

    def flush(self) -> None:
        """Push out anything :meth:`write` left buffered; nothing by default."""

    def close(self) -> None:
        """Release connections; must not raise. Idempotent."""

    def stats(self) -> dict[str, Any]:
        """The sink's own counters; empty by default."""
        return {}


class SinkMap(ComponentMap):
    """Sink ref → :class:`Sink`, as a parameter value (see :class:`ComponentMap`)."""

    component = Sink
