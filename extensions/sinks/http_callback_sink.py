"""HttpCallbackSink: POSTs records as JSON to a URL (httpx), retrying until the receiver takes them."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from rvai_sdk._compat import require
from rvai_sdk.drivers import Record, RecordError, Sink, SinkContext, SinkParameters
from rvai_sdk.drivers.source import hide_passwords
from rvai_sdk.exc import SinkError
from rvai_sdk.types import Boolean, FloatRange

from ._taken import Taken

__all__ = ["HttpCallbackSink", "HttpCallbackSinkParameters"]

_FIELDS = {"source": "s", "sid": "s", "index": 0, "status": "complete"}
_SINK_WIDE = (401, 403, 407)
"""4xx answers about the sink, not the record (a missing or expired token): retried like an outage."""
_KEEP_BODY_REDIRECTS = (307, 308)
"""Redirects a POST follows with its body (others would turn it into a GET)."""
_MAX_REDIRECTS = 5


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port


def shown(url: str) -> str:
    """``url`` for messages and logs: its password and the values of its query (tokens) hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join(f"{item.partition('=')[0]}=***" if "=" in item else item for item in parts.query.split("&") if item)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class _Watchdog:
    """One thread per sink that runs an action when an armed deadline passes (bounds a whole POST)."""

    def __init__(self, name: str) -> None:
        self._cv = threading.Condition()
        self._due: float | None = None
        self._action: Callable[[], None] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self, seconds: float, action: Callable[[], None]) -> None:
        with self._cv:
            self._due, self._action = time.monotonic() + seconds, action
            self._cv.notify()

    def disarm(self) -> None:
        """Once this returns, the armed action has run or never will (it runs under the same lock)."""
        with self._cv:
            self._due = self._action = None

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    def _run(self) -> None:
        with self._cv:
            while True:
                while not self._closed and (self._due is None or self._due > time.monotonic()):
                    self._cv.wait(None if self._due is None else self._due - time.monotonic())
                if self._closed:
                    return
                action, self._due, self._action = self._action, None, None
                if action is not None:
                    action()  # under the lock: a disarm() that returned first means it never runs


@dataclasses.dataclass
class HttpCallbackSinkParameters(SinkParameters):
    """Parameters of an :class:`HttpCallbackSink` (batching, buffer and retries come from :class:`SinkParameters`).

    Attributes:
        batch: POST each batch as one JSON array (per URL) instead of one POST per record.
        timeout: seconds a POST may take, from connecting to the end of the receiver's answer.
    """

    batch: Boolean = SinkParameters.field(name="Batch", description="One POST per batch (a JSON array)", default=Boolean(False))
    timeout: FloatRange = SinkParameters.field(
        name="Timeout", description="Seconds to wait for the receiver", default=FloatRange(5.0, min=0.1, max=600.0)
    )


class HttpCallbackSink(Sink):
    """POSTs each record (``Record.to_json()``: source, sid, index, timestamp, status
    ``complete``/``failed``, outputs, error) as JSON to a URL template.

    The template takes ``{source}``, ``{sid}``, ``{index}`` and ``{status}``. A 5xx, 408
    or 429 answer, a 401, 403 or 407 (the token in ``headers`` is missing or expired),
    a POST that takes longer than ``timeout`` (its whole answer included) or a refused
    connection fails the write, which the driver retries with backoff while it buffers
    (and then holds back the sources): a receiver that stays down shows in the driver's
    stats and logs, and nothing is dropped. A 307 or 308 redirect to the same origin
    (scheme, host, port) is followed with the same POST; another redirect fails the
    write naming where it points (update the URL): the sink's headers never go to
    another origin. Any other 4xx answer means the receiver refuses that record
    (:class:`~rvai_sdk.drivers.RecordError`), as does a record with no strict JSON form
    (a NaN or infinity in an output): the driver sends the others and dead-letters it
    (the ``dead_letter`` file parameter, by default ``rvai_dead_letter_<sink ref>.jsonl``).
    Delivery is at-least-once. Records a receiver already accepted are not sent again
    when the rest of their batch is retried; still, deduplicate on ``(source, index)``
    if the receiver can answer after a client timeout. Messages and logs show the URL
    with its password and query values hidden.

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
        return f"sink {ref!r} (HttpCallbackSink {shown(self.url)})"

    def open(self, context: SinkContext) -> None:
        """Make the HTTP client (connections are made on the first POST)."""
        super().open(context)
        httpx = require("httpx", extra="http")
        self._httpx = httpx
        self._client: Any = None
        self._watchdog = _Watchdog(f"rvai-http-sink-{context.ref}")
        self._taken: Taken = getattr(self, "_taken", None) or Taken()
        self._posts = getattr(self, "_posts", 0)
        self._refused = getattr(self, "_refused", 0)

    def _body(self, record: Record) -> bytes:
        """The record's JSON, strictly (no NaN or infinity, which JSON parsers refuse).

        Raises:
            RecordError: the record has no such form.
        """
        try:
            self.url_for(record)
            return json.dumps(record.to_json(inputs=self.inputs), allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError, KeyError) as exc:
            raise RecordError(
                f"{self._where()}: record {record.index} of source {record.source!r} cannot be sent as JSON: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _post(self, url: str, content: bytes) -> None:
        """POST ``content`` to ``url``, following 307/308 on the same origin, within ``timeout`` seconds in all."""
        deadline = time.monotonic() + float(self.params.timeout)
        target = url
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send(target, content, deadline)
            code = response.status_code
            location = response.headers.get("location")
            pointed = urljoin(target, location) if location else ""
            same_origin = bool(pointed) and _origin(pointed) == _origin(target)
            if code in _KEEP_BODY_REDIRECTS and same_origin:
                target = pointed
                continue
            break
        answer = f"{self._where()}: POST {shown(target)} answered {code} {response.reason_phrase}"
        if response.is_success:
            self._posts += 1
            return
        if 300 <= code < 400:
            why = "a POST is only sent again on a 307 or 308"
            if code in _KEEP_BODY_REDIRECTS:
                why = "too many redirects" if same_origin else (
                    "the sink does not follow a redirect to another origin (its headers would go there)"
                )
            raise SinkError(
                f"{answer}" + (f" pointing to {shown(pointed)}" if pointed else "")
                + f": {why}; give the sink the URL the receiver wants"
            )
        if code in _SINK_WIDE:
            raise SinkError(f"{answer}: check the credentials in the sink's headers (they are refused for every record)")
        if 400 <= code < 500 and code not in (408, 429):
            self._refused += 1
            raise RecordError(f"{answer}: {response.text[:200]}")
        raise SinkError(f"{answer}: {response.text[:200]}")

    def _send(self, url: str, content: bytes, deadline: float) -> Any:
        """One POST, its answer read whole by ``deadline`` (a receiver answering a byte at a time would
        otherwise hold the sink: httpx's timeout is per read)."""
        timeout = float(self.params.timeout)
        client = self._client
        if client is None:
            client = self._client = self._httpx.Client(timeout=timeout, headers=self.headers)
        expired = threading.Event()

        def expire() -> None:  # on the watchdog's thread: closing the client fails the POST under way
            expired.set()
            client.close()

        self._watchdog.arm(max(0.0, deadline - time.monotonic()), expire)
        try:
            return client.post(url, content=content, headers={"Content-Type": "application/json"})
        except Exception as exc:
            if expired.is_set():
                raise SinkError(
                    f"{self._where()}: POST {shown(url)} got no complete answer within {timeout:g} s (the sink's timeout)"
                ) from exc
            if isinstance(exc, self._httpx.HTTPError):
                raise SinkError(f"{self._where()}: POST {shown(url)} failed: {type(exc).__name__}: {exc}") from exc
            raise
        finally:
            self._watchdog.disarm()
            if expired.is_set():
                self._client = None  # the watchdog closed it: a new one for the next POST

    def __repr__(self) -> str:
        text = super().__repr__()  # hides the URL's password; its query values (tokens) too:
        for form in (repr(self.url), hide_passwords(repr(self.url))):
            text = text.replace(form, repr(shown(self.url)))
        return text

    def write(self, records: Sequence[Record]) -> None:
        """POST the records (skipping those a previous attempt of this batch delivered).

        Raises:
            RecordError: the receiver refused a record (a 4xx other than 401/403/407/408/429), or it has no
                strict JSON form.
            SinkError: the receiver cannot be reached, took longer than ``timeout``, answered 5xx/408/429 or
                401/403/407, or redirected elsewhere than with a 307/308.
        """
        taken = self._taken
        todo = [(record, self._body(record)) for record in taken.rest(records)]
        if bool(self.params.batch):
            by_url: dict[str, list[tuple[Record, bytes]]] = {}
            for record, body in todo:
                by_url.setdefault(self.url_for(record), []).append((record, body))
            for url, group in by_url.items():
                self._post(url, b"[" + b",".join(body for _, body in group) + b"]")
                for record, _ in group:
                    taken.add(record)
        else:
            for record, body in todo:
                self._post(self.url_for(record), body)
                taken.add(record)
        taken.done(records)

    def close(self) -> None:
        """Close the HTTP client (idempotent)."""
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.close()

    def stats(self) -> dict[str, Any]:
        """``posts`` the receiver took (2xx) and ``refused`` ones (a 4xx about the record: dead-lettered)."""
        return {"posts": getattr(self, "_posts", 0), "refused": getattr(self, "_refused", 0)}
