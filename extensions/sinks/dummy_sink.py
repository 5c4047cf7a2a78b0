"""DummySink: hands each record to a callable (by default, logs it), the quickest way to see results."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rvai_sdk.drivers import Record, Sink, SinkParameters

__all__ = ["DummySink"]

logger = logging.getLogger("rvai_sdk.sinks.dummy")


def _log(record: Record) -> None:
    if logger.isEnabledFor(logging.INFO):
        outputs = record.to_json()["outputs"]
        shown = json.dumps(outputs, default=str) if record.error is None else record.error.splitlines()[0]
        logger.info(
            "%s #%d (sid %s) %s: %s",
            record.source,
            record.index,
            record.sid,
            record.status,
            shown,
            extra={"source": record.source, "index": record.index, "sid": record.sid, "outputs": outputs, "error": record.error},
        )


class DummySink(Sink):
    """Calls ``drain(record)`` for every record, in source order.

    On the local runtime the driver runs in another process: ``drain`` travels there
    (by value when defined in a notebook or ``__main__``) and runs there, so use it
    to log or write files, not to fill a list in the parent.

    Args:
        drain: the callable taking each :class:`~rvai_sdk.drivers.Record` (default: log it
            at INFO on the ``rvai_sdk.sinks.dummy`` logger: the outputs as JSON, or the error;
            ``rvai-sdk stream --sink dummy:`` shows these lines on stderr). An exception fails the batch,
            which the driver retries.
        params: :meth:`DummySink.parameters` (batching, buffer, retries).

    Example:
        >>> from rvai_sdk.drivers import Record
        >>> seen = []
        >>> DummySink(drain=seen.append).write([Record(source="s", sid="s", index=0, timestamp=0.0, outputs={})])
        >>> seen[0].index
        0
    """

    def __init__(self, drain: Callable[[Record], Any] | None = None, params: SinkParameters | Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        self.drain = drain if drain is not None else _log

    @classmethod
    def from_url(cls, url: str) -> DummySink:
        """A DummySink that logs every record (the ``rvai-sdk stream --sink`` form).

        Scheme: ``dummy:``; no query options (the URL's rest is ignored).

        Example:
            >>> DummySink.from_url("dummy:").drain.__name__
            '_log'
        """
        return cls()

    def write(self, records: Sequence[Record]) -> None:
        """Call ``drain`` on each record."""
        for record in records:
            self.drain(record)
