"""The wiring of a :class:`SourceSinkDriver`: its parameters, and what its streams share while it runs.

:class:`SourceSinkDriverParameters` is the driver's configuration (its sources and sinks,
each source's sid, each sink's subscriptions, the drain timeout, the limit and the position
store), changeable while it runs; :class:`Wiring` is what the streams of one running driver
share (see ``_stream_pump.Host``): the inference process, the routes from each source to its
sinks' outlets (``_stream_outlet``), and the position recorder (``_stream_positions``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rvai_sdk.drivers import DriverParameters, Record, RestrictedInferenceProcess, SinkMap, SourceMap
from rvai_sdk.exc import DriverError
from rvai_sdk.types import Boolean, Dict, FloatRange, Integer, IntegerRange, List, String

from ._stream_outlet import Outlet
from ._stream_positions import Recorder, absolute_position_store, check_position_store

if TYPE_CHECKING:
    from ._stream_pump import Acks

__all__ = ["SourceSinkDriverParameters", "Wiring"]


@dataclasses.dataclass
class SourceSinkDriverParameters(DriverParameters):
    """The parameters of a :class:`SourceSinkDriver`; all changeable while it runs.

    Attributes:
        sources: source ref → :class:`~rvai_sdk.drivers.Source`.
        sinks: sink ref → :class:`~rvai_sdk.drivers.Sink`.
        sids: source ref → the sid its requests use (default: the source ref).
        subscriptions: sink ref → the source refs it takes (default: every source).
        keep_inputs: attach each request's inputs to its record (for sinks that store them).
        drain_timeout: seconds ``stop()`` spends finishing requests in flight and writing
            buffered records before giving up (what is then unfinished or unwritten is
            counted, as ``unfinished`` per source and ``lost`` per sink, never written as failed).
        limit: each source ends after this many results (``None``: when the source ends);
            changeable while running: setting ``0`` ends every stream after what it has
            taken, which then finishes and is written (a graceful stop that keeps
            ``stats()`` readable).
        position_store: where the driver records, per source, the highest index up to
            which every sink acknowledged every record, so that a service restarted after
            a crash of the whole machine resumes its files and numbers its live sources on
            (see "Stream positions" in the durability guide): a file path or
            ``sqlite:///PATH`` (SQLite), or ``redis://HOST:PORT/DB`` (Redis); ``None`` (the
            default): only sinks that keep positions say where a stream stopped. Read when
            the driver starts (a change applies to its next start).
        position_every: record a stream's position once this many of its items were
            acknowledged since the last record (the replay window after a machine crash).
        position_interval: and at least this often, in seconds, while positions advance.
    """

    sources: SourceMap = DriverParameters.field(name="Sources", description="Source ref to source", default_factory=SourceMap)
    sinks: SinkMap = DriverParameters.field(name="Sinks", description="Sink ref to sink", default_factory=SinkMap)
    sids: Dict[String, String] = DriverParameters.field(
        name="Sids", description="Source ref to the sid of its stream (default: the ref)", default_factory=Dict[String, String]
    )
    subscriptions: Dict[String, List[String]] = DriverParameters.field(
        name="Subscriptions",
        description="Sink ref to the source refs it takes (default: all)",
        default_factory=Dict[String, List[String]],
    )
    keep_inputs: Boolean = DriverParameters.field(
        name="Keep inputs", description="Attach the inputs to each record", default=Boolean(False)
    )
    drain_timeout: FloatRange = DriverParameters.field(
        name="Drain timeout",
        description="Seconds stop() spends finishing requests and writing buffered records",
        default=FloatRange(5.0, min=0.0, max=600.0),
    )
    limit: Integer | None = DriverParameters.field(
        name="Limit", description="Results per source before it ends (empty: until the source ends)", default=None
    )
    position_store: String | None = DriverParameters.field(
        name="Position store",
        description="SQLite file path or sqlite:///PATH, or redis://HOST:PORT/DB, where stream positions are recorded (empty: none)",
        default=None,
    )
    position_every: IntegerRange = DriverParameters.field(
        name="Record positions every",
        description="Items acknowledged by every sink between two records of a stream's position",
        default=IntegerRange(100, min=1, max=1_000_000),
    )
    position_interval: FloatRange = DriverParameters.field(
        name="Position interval",
        description="Seconds between records of the positions while they advance",
        default=FloatRange(1.0, min=0.01, max=3600.0),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_position_store(self.position_store)
        if self.position_store is not None:  # a relative path means this process's working directory, not the driver's
            absolute = absolute_position_store(str(self.position_store))
            if absolute != str(self.position_store):
                self.position_store = String(absolute)


class Wiring:
    """What the streams of one driver share (see ``_stream_pump.Host``): the inference process and the routes to the sinks."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.keep_inputs = False
        self.limit: int | None = None
        self.inference: RestrictedInferenceProcess | None = None
        self.routes: dict[str, tuple[Outlet, ...]] = {}
        self.positions: Recorder | None = None
        self.acks: dict[str, Acks] = {}  # source ref -> its current stream's, for a source that wants acknowledgements

    def settle(self, records: Sequence[Record], acknowledged: bool) -> None:
        """A sink acknowledged ``records`` (or gave them up): tell the position store's trackers, and the
        streams whose sources want acknowledgements (done either way)."""
        positions = self.positions
        if positions is not None:
            positions.settle(records, acknowledged)
        if self.acks:
            by_source: dict[str, list[Record]] = {}
            for record in records:
                by_source.setdefault(record.source, []).append(record)
            for source, batch in by_source.items():
                acks = self.acks.get(source)
                if acks is not None:
                    acks.settle_many(batch)

    def require_inference(self) -> RestrictedInferenceProcess:
        inference = self.inference
        if inference is None:
            raise DriverError("the SourceSinkDriver is not running")
        return inference

    def outlets_for(self, source: str) -> tuple[Outlet, ...]:
        return self.routes.get(source) or self.routes.get("", ())
