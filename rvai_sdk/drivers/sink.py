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
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from rvai_sdk.data import Parameters
from rvai_sdk.drivers.driver import DriverParameters
from rvai_sdk.drivers.source import ComponentMap, Configurable
from rvai_sdk.exc import SinkError
from rvai_sdk.pipeline.graph import InputSpec, OutputSpec
from rvai_sdk.types import Boolean, FloatRange, IntegerRange, String, to_json

__all__ = [
    "Sink",
    "Record",
    "RecordError",
    "WriteResult",
    "SinkContext",
    "SinkParameters",
    "SinkMap",
    "COMPLETE",
    "FAILED",
]

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
    dead_letter: String = DriverParameters.field(
        name="Dead letters",
        description="A JSON-lines file for records the sink rejects as data (empty: the sink's own place)",
        default=String(""),
    )


class RecordError(SinkError):
    """A write failed because of the records themselves (a data failure), not the connection.

    Raise it from :meth:`Sink.write` for an integrity or type error, a value too long,
    an HTTP 4xx answer...: retrying the same records cannot help. The driver then
    narrows the batch down to the record(s) at fault, writes the others, and hands the
    bad ones to :meth:`Sink.dead_letter` with the error. Any other exception from
    ``write`` counts as transient (connection, timeout, 5xx) and the batch is retried
    with backoff.

    Example:
        >>> isinstance(RecordError("value too long for column sid"), SinkError)
        True
    """


@attrs.frozen
class WriteResult:
    """What :meth:`Sink.write` may return: which records the sink already held.

    Attributes:
        present: the records of the batch that were already stored (a replayed or
            retried record) and so were not written again; the driver counts them
            as ``present``, apart from ``written``.
    """

    present: Sequence[Record] = ()


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
    for records keyed by ``(source, index)``. A write that raises :class:`RecordError`
    is not retried as it is: the driver splits the batch until it finds the records at
    fault, writes the rest and passes those to :meth:`dead_letter`. When the driver
    stops it writes what is buffered (for a bounded time), calls :meth:`flush`, then
    :meth:`close`.

    A sink that can say which records it holds (:attr:`keeps_positions`, e.g. a
    database table) lets the driver continue a stream where it stopped: a new run of
    a live source numbers on after the last index held, and a replayable source (a
    file) skips what is already written instead of inferring it again. For a sink that
    cannot say it, give the driver a ``position_store``: the driver then records what
    every sink acknowledged (a :meth:`write` that returned, or a dead letter).

    Attributes:
        parameters_class: the :class:`SinkParameters` subclass this sink takes.
        params: its parameters.
        keeps_positions: whether :meth:`position` reads what the sink holds.
    """

    parameters_class: ClassVar[type[Parameters]] = SinkParameters
    params: Any
    keeps_positions: ClassVar[bool] = False

    def open(self, context: SinkContext) -> None:
        """Connect, create tables...; keep ``context``.

        Raises:
            SinkError: it cannot be opened (the driver retries with backoff).
        """
        self.context = context

    @abc.abstractmethod
    def write(self, records: Sequence[Record]) -> WriteResult | None:
        """Write one batch durably, or raise.

        Returns:
            ``None`` when every record was written, or a :class:`WriteResult` naming the
            records that were already stored (they count as ``present``, not ``written``).

        Raises:
            RecordError: a record of the batch cannot be written as it is (data failure):
                the driver narrows the batch and dead-letters the bad record(s).
            SinkError: nothing or part of the batch was written (transient failure); the
                driver retries all of it with backoff.
        """

    def position(self, source: str) -> int | None:
        """The highest index this sink holds for ``source`` (written or dead-lettered).

        Called by the driver when a stream starts, for sinks with :attr:`keeps_positions`.

        Returns:
            The index, or ``None`` when the sink holds nothing of that source.

        Raises:
            SinkError: it cannot be read now (the driver retries with backoff).
        """
        return None

    def dead_letter(self, failures: Sequence[tuple[Record, str]]) -> None:
        """Keep records the sink rejected as data, each with its error, where a person can look.

        By default each becomes one JSON line (the record's JSON form plus ``error``,
        ``sink`` and ``at``) appended to the ``dead_letter`` parameter's file, or to
        ``rvai_dead_letter_<sink ref>.jsonl`` in the working directory.

        Raises:
            SinkError: the dead-letter place cannot be written (the driver retries).
        """
        ref, path = self._dead_letter_file()
        destination = self.destination
        try:
            with open(path, "a", encoding="utf-8") as f:
                for record, error in failures:
                    letter = dead_letter_json(record, error, sink=ref)
                    if destination is not None:
                        letter["destination"] = destination
                    f.write(json.dumps(letter, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise SinkError(f"sink {ref!r}: cannot write dead letters to {path}: {exc}") from exc

    @property
    def destination(self) -> str | None:
        """Where this sink writes (a database and table...), stamped on its letters in a dead-letter file, so
        that :meth:`filed_position` counts only letters kept for the same place (``None``: not told)."""
        return None

    def _dead_letter_file(self) -> tuple[str, str]:
        """This sink's ref and the file :meth:`dead_letter` appends to by default."""
        ref = getattr(getattr(self, "context", None), "ref", "sink")
        return ref, str(self.params.dead_letter) or f"rvai_dead_letter_{ref}.jsonl"

    def filed_position(self, source: str) -> int | None:
        """The highest index of ``source`` among this sink's letters in its dead-letter file (``None``: none).

        A sink with :attr:`keeps_positions` whose :meth:`dead_letter` can fall back on the file
        takes this into its :meth:`position`, so that a replayable source does not infer and
        dead-letter its last records again after a restart. Only letters of this sink's ref and
        :attr:`destination` count (a file shared by sinks, or left from a run that wrote elsewhere,
        must not move this sink's position); a line cut short by a crash is skipped.

        Raises:
            SinkError: the file exists but cannot be read.
        """
        ref, path = self._dead_letter_file()
        destination = self.destination
        if destination is None:
            return None  # letters of any place could be in the file: none can be told to be this sink's
        found: int | None = None
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        letter = json.loads(line)
                        if letter.get("sink") == ref and letter.get("source") == source and letter.get("destination") == destination:
                            index = int(letter["index"])
                            found = index if found is None else max(found, index)
                    except (ValueError, TypeError, KeyError, AttributeError):
                        continue
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SinkError(f"sink {ref!r}: cannot read the dead letters in {path}: {exc}") from exc
        return found

    def flush(self) -> None:
        """Push out anything :meth:`write` left buffered; nothing by default."""

    def close(self) -> None:
        """Release connections; must not raise. Idempotent."""

    def stats(self) -> dict[str, Any]:
        """The sink's own counters; empty by default."""
        return {}


def dead_letter_json(record: Record, error: str, *, sink: str) -> dict[str, Any]:
    """The JSON form of a dead-lettered record: the record (inputs too, when kept) with ``error``, ``sink`` and ``at``.

    Values that have no JSON form are kept as their ``repr`` so the letter can always be written.

    Example:
        >>> letter = dead_letter_json(Record(source="s", sid="s", index=1, timestamp=0.0, outputs={}), "bad", sink="db")
        >>> letter["error"], letter["index"]
        ('bad', 1)
    """
    try:
        obj = record.to_json(inputs=True)
    except Exception:  # the very reason it is dead-lettered may be an output without a JSON form
        obj = {
            "source": record.source,
            "sid": record.sid,
            "index": record.index,
            "timestamp": record.timestamp,
            "status": record.status,
            "outputs": {ref: repr(value) for ref, value in record.outputs.items()},
        }
    obj["error"] = error
    obj["sink"] = sink
    obj["at"] = time.time()
    return obj


class SinkMap(ComponentMap):
    """Sink ref → :class:`Sink`, as a parameter value (see :class:`ComponentMap`)."""

    component = Sink
