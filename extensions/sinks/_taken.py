"""What a sink that delivers a batch record by record remembers between attempts of that batch."""

from __future__ import annotations

from collections.abc import Sequence

from rvai_sdk.drivers import Record


class Taken:
    """The records of the batch being written that the receiver took already, so that a retry of the batch
    sends only the rest (:class:`HttpCallbackSink`, :class:`MqttSink`).

    By identity, not by ``(source, index)``: a source replaced or re-added numbers from 0 again, and its new
    records must not pass for delivered ones. The driver retries a batch with the same record objects and
    keeps them alive meanwhile, and this keeps them too, so an id is never another record's.
    """

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[int, Record] = {}

    def rest(self, records: Sequence[Record]) -> list[Record]:
        """The records of ``records`` not taken yet."""
        taken = self._records
        return [record for record in records if id(record) not in taken]

    def add(self, record: Record) -> None:
        """The receiver took ``record``."""
        self._records[id(record)] = record

    def done(self, records: Sequence[Record]) -> None:
        """The whole batch ``records`` is delivered: the driver will not retry it."""
        for record in records:
            self._records.pop(id(record), None)
