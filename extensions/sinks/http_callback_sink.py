"""HttpCallbackSink: POSTs records as JSON to a URL (httpx), retrying until the receiver takes them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from rvai_sdk._compat import require
from rvai_sdk.drivers import Record, RecordError, Sink, SinkContext, SinkParameters
from rvai_sdk.exc import SinkError
from rvai_sdk.types import Boolean, FloatRange

__all__ = ["HttpCallbackSink", "HttpCallbackSinkParameters"]

_FIELDS = {"source": "s", "sid": "s", "index": 0, "status": "complete"}


@dataclasses.dataclass
class HttpCallbackSinkParameters(SinkParameters):
    """Parameters of an :class:`HttpCallbackSink` (batching, buffer and retries come from :class:`SinkParameters`).

    Attributes:
        batch: POST each batch as one JSON array (per URL) instead of one POST per record.
        timeout: seconds to wait for the receiver's answer.
    """

    batch: Boolean = SinkParameters.field(name="Batch", description="One POST per batch (a JSON array)", default=Boolean(False))
    timeout: FloatRange = SinkParameters.field(
        name="Timeout", description="Seconds to wait for the receiver", default=FloatRange(5.0, min=0.1, max=600.0)
    )


class HttpCallbackSink(Sink):
    """POSTs each record (``Record.to_json()``: source, sid, index, timestamp, status
    ``complete``/``failed``, outputs, error) as JSON to a URL template.

    The template takes ``{source}``, ``{sid}``, ``{index}`` and ``{status}``. A 5xx, 408
    or 429 answer, a timeout or a refused connection fails the write, which the driver
    retries with backoff while it buffers (and then holds back the sources): a receiver
    that stays down shows in the driver's stats and logs, and nothing is dropped. Any
    other 4xx answer means the receiver refuses that record
    (:class:`~rvai_sdk.drivers.RecordError`): the driver sends the others and
    dead-letters it (the ``dead_letter`` file parameter, by default
    ``rvai_dead_letter_<sink ref>.jsonl``). Delivery is at-least-once. Records a receiver already accepted are not
    sent again when the rest of their batch is retried; still, deduplicate on
    ``(source, index)`` if the receiver can answer after a client timeout.

    Args:
        url: the URL template, e.g. ``"http://10.0.0.9:8000/results/{source}"``.
        headers: extra request headers (an ``Authorization`` token...).
        inputs: include the request inputs in each record (images as base64 PNG: large).
        params: :meth:`HttpCallbackSink.parameters` (batch, timeout, batching, retries).

    Example:
        >>> HttpCallbackSink("http://receiver/cb/{source}").url_for(
        ...     Record(source="cam-1", sid="cam-1", index=4, timestamp=0.0, outputs={}))
        'http://receiver/cb/cam-1'
    """

    secret_attributes = ("headers",)
    parameters_class = HttpCallbackSinkParameters

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        inputs: bool = False,
        params: HttpCallbackSinkParameters | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(params)
        try:
            url.format(**_FIELDS)
        except (KeyError, IndexError, ValueError) as exc:
            raise SinkError(f"HttpCallbackSink url {url!r} may use only {{source}}, {{sid}}, {{index}} and {{status}}: {exc}") from exc
        self.url = url
        self.headers = dict(headers or {})
        self.inputs = inputs

    @classmethod
    def from_url(cls, url: str) -> HttpCallbackSink:
        """An HttpCallbackSink POSTing each record to ``url`` (the ``rvai-sdk stream --sink`` form).

        Schemes: ``http://`` and ``https://``. The whole URL, query included, is the
        template (``{source}``, ``{sid}``, ``{index}``, ``{status}``); there are no query
        options of the sink's own.

        Raises:
            SinkError: the template uses another field.

        Example:
            >>> HttpCallbackSink.from_url("http://10.0.0.9:8000/results/{source}?token=abc").url
            'http://10.0.0.9:8000/results/{source}?token=abc'
        """
        return cls(url)

    def url_for(self, record: Record) -> str:
        """The URL a record is posted to."""
        return self.url.format(source=record.source, sid=record.sid, index=record.index, status=record.status)

    def _where(self) -> str:
        ref = getattr(getattr(self, "context", None), "ref", "?")
        return f"sink {ref!r} (HttpCallbackSink {self.url})"

    def open(self, context: SinkContext) -> None:
        """Make the HTTP client (connections are made on the first POST)."""
        super().open(context)
        httpx = require("httpx", extra="http")
        self._httpx = httpx
        self._client = httpx.Client(timeout=float(self.params.timeout), headers=self.headers)
        self._delivered: set[tuple[str, int]] = getattr(self, "_delivered", set())
        self._posts = getattr(self, "_posts", 0)

    def _post(self, url: str, body: Any) -> None:
        try:
            response = self._client.post(url, json=body)
        except self._httpx.HTTPError as exc:
            raise SinkError(f"{self._where()}: POST {url} failed: {type(exc).__name__}: {exc}") from exc
        self._posts += 1
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            raise RecordError(f"{self._where()}: POST {url} answered {response.status_code} {response.reason_phrase}: {response.text[:200]}")
        if not response.is_success:
            raise SinkError(f"{self._where()}: POST {url} answered {response.status_code} {response.reason_phrase}: {response.text[:200]}")

    def write(self, records: Sequence[Record]) -> None:
        """POST the records (skipping those a previous attempt of this batch delivered).

        Raises:
            RecordError: the receiver refused a record (a 4xx other than 408/429), or it has no JSON form.
            SinkError: the receiver cannot be reached, timed out, or answered 5xx/408/429.
        """
        todo = [r for r in records if (r.source, r.index) not in self._delivered]
        for record in todo:
            try:
                self.url_for(record)
                record.to_json(inputs=self.inputs)
            except (TypeError, ValueError, KeyError) as exc:
                raise RecordError(f"{self._where()}: record {record.index} of source {record.source!r} cannot be sent: {type(exc).__name__}: {exc}") from exc
        if bool(self.params.batch):
            by_url: dict[str, list[Record]] = {}
            for record in todo:
                by_url.setdefault(self.url_for(record), []).append(record)
            for url, group in by_url.items():
                self._post(url, [r.to_json(inputs=self.inputs) for r in group])
                self._delivered.update((r.source, r.index) for r in group)
        else:
            for record in todo:
                self._post(self.url_for(record), record.to_json(inputs=self.inputs))
                self._delivered.add((record.source, record.index))
        self._delivered.difference_update((r.source, r.index) for r in records)  # delivered: the driver will not retry these

    def close(self) -> None:
        """Close the HTTP client (idempotent)."""
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()

    def stats(self) -> dict[str, Any]:
        """``posts`` that reached the receiver."""
        return {"posts": getattr(self, "_posts", 0)}
