"""MqttSource: pipeline inputs from JSON messages on an MQTT topic (paho-mqtt, QoS 1)."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from rvai_sdk.drivers import Source, SourceContext, SourceItem, SourceParameters
from rvai_sdk.drivers.source import DROP_POLICIES
from rvai_sdk.exc import InputValidationError, SourceError, UsageError
from rvai_sdk.types import Enum, FloatRange, IntegerRange, String, from_json
from rvai_sdk.types._json import JsonTooDeep
from rvai_sdk.types._json import loads as bounded_json

from .._mqtt import MqttConnection, MqttEndpoint, parse_url

__all__ = ["MqttSource", "MqttSourceParameters"]


@dataclasses.dataclass
class MqttSourceParameters(SourceParameters):
    """Parameters of an :class:`MqttSource` (queueing and drop policy come from :class:`SourceParameters`).

    Attributes:
        drop: ``block`` by default: bursts wait in the receive buffer (bounded, below)
            rather than being dropped after a few items; ``drop_oldest`` or
            ``keep_latest`` suit topics where only fresh messages matter.
        qos: the subscription's quality of service (1: at least once).
        receive_buffer: messages held between the MQTT client and the stream; beyond it
            the oldest are dropped (and counted). With a ``client_id`` nothing is dropped here:
            the broker's window of unacknowledged messages bounds the buffer.
        connect_timeout: seconds to wait for the broker to accept the connection and subscription.
        keepalive: seconds between MQTT keep-alive pings.
    """

    drop: Enum[String] = SourceParameters.field(
        name="Drop policy",
        description="block (default: bursts wait in the receive buffer), drop_oldest, keep_latest, or auto",
        default=Enum[String](options=list(DROP_POLICIES), selected="block"),
    )
    qos: IntegerRange = SourceParameters.field(name="QoS", description="0, 1 or 2", default=IntegerRange(1, min=0, max=2))
    receive_buffer: IntegerRange = SourceParameters.field(
        name="Receive buffer", description="Messages held before the oldest are dropped", default=IntegerRange(10_000, min=1, max=10_000_000)
    )
    connect_timeout: FloatRange = SourceParameters.field(
        name="Connect timeout", description="Seconds to wait for the broker", default=FloatRange(5.0, min=0.1, max=600.0)
    )
    keepalive: IntegerRange = SourceParameters.field(
        name="Keep-alive", description="Seconds between pings", default=IntegerRange(30, min=5, max=3600)
    )


class MqttSource(Source):
    """Subscribes to a topic; each message is a JSON object of pipeline input ref → JSON value.

    Values are decoded with the input's type (an Image as a base64 PNG string, a
    BoundingBox as its JSON object...). A message that is not such an object, or whose
    values do not decode, is counted (``bad_payloads`` in :meth:`stats`), logged and
    skipped: the stream goes on. Messages are numbered in arrival order. The source is
    :attr:`live`; by default a burst waits in the receive buffer (bounded: beyond it the
    oldest messages are dropped and counted), see :class:`MqttSourceParameters`.
    The MQTT client reconnects by itself (with backoff, 1 s doubling to 10 s) and
    subscribes again; the connection is the one :class:`MqttSink` uses too.

    With a ``client_id`` (QoS 1; QoS 2 is subscribed as QoS 1, since paho completes QoS
    2's handshake before the message is written) the session persists on the broker and
    each message is acknowledged only once its result is written by every sink (or
    dead-lettered, or dropped by the drop policy): what a stopped or killed driver had
    not written, and what arrives while no driver is subscribed, the broker sends again
    to the next one with that id (at least once). Without one, a message is acknowledged
    on arrival and the receive buffer is lost with the driver (see the streaming guide).

    Args:
        topic: the topic (filter) to subscribe to, e.g. ``"cameras/+/counts"``.
        host: the broker's address.
        port: the broker's port.
        sid_field: a payload field holding the sid of that message (it is not an input);
            without it every message uses the stream's sid.
        client_id: the MQTT client id; set it for a persistent session and acknowledgement after the
            write (one driver per id); default: a unique one, a clean session, acknowledged on arrival.
        username: for brokers that require a login.
        password: for brokers that require a login.
        params: :meth:`MqttSource.parameters` (qos, buffers, timeouts, drop policy).
        tls: connect over TLS (the ``mqtts://`` scheme of :meth:`from_url`).
        ca_certs: a CA bundle to verify the broker with (default: the system's).
        certfile: a client certificate, for brokers that ask for one.
        keyfile: the client certificate's key.

    Example:
        >>> MqttSource("sensors/+/reading", sid_field="device").live
        True
    """

    secret_attributes = ("password",)
    parameters_class = MqttSourceParameters

    def __init__(
        self,
        topic: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        sid_field: str | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        params: MqttSourceParameters | Mapping[str, Any] | None = None,
        tls: bool = False,
        ca_certs: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(params)
        self.topic = topic
        self.host = host
        self.port = port
        self.sid_field = sid_field
        self.client_id = client_id
        self.username = username
        self.password = password
        self.tls = tls
        self.ca_certs = ca_certs
        self.certfile = certfile
        self.keyfile = keyfile

    @classmethod
    def from_url(cls, url: str) -> MqttSource:
        """An MqttSource from a URL (the ``rvai-sdk stream --source`` form).

        Schemes: ``mqtt://[user:password@]host[:port]/topic/filter`` (port 1883 by
        default) and ``mqtts://`` (MQTT over TLS, port 8883 by default).

        Query options: ``sid_field`` (see the class), ``client_id``, ``ca_certs``,
        ``certfile`` and ``keyfile`` (TLS files), and any parameter of
        :class:`MqttSourceParameters` (``qos=0``, ``drop=keep_latest``...), read as JSON
        when it parses, else as a string.

        Raises:
            UsageError: the URL names no topic, or is not an MQTT URL.

        Example:
            >>> MqttSource.from_url("mqtt://broker:1884/cameras/+/counts").topic
            'cameras/+/counts'
            >>> source = MqttSource.from_url("mqtts://broker/sensors/#?sid_field=device&qos=0")
            >>> source.port, source.tls, source.sid_field, int(source.params.qos)
            (8883, True, 'device', 0)
        """
        endpoint = parse_url(url, what="MQTT source")
        if not endpoint.topic:
            raise UsageError(f"MQTT source URL {url!r} names no topic: mqtt://host:1883/some/topic")
        options = dict(endpoint.options)
        sid_field = options.pop("sid_field", None)
        return cls(endpoint.topic, sid_field=None if sid_field is None else str(sid_field), params=options or None, **endpoint.connection_args())

    @property
    def live(self) -> bool:
        """Messages arrive at the publishers' pace: always live."""
        return True

    @property
    def wants_acknowledgements(self) -> bool:
        """With a ``client_id`` (and QoS 1 or 2): a persistent session, each message acknowledged to the broker
        once its result is written (see the class docstring)."""
        return self.client_id is not None and int(self.params.qos) > 0

    def _subscription_qos(self) -> int:
        """QoS 2 with acknowledgements is subscribed as QoS 1: paho completes QoS 2's handshake before the
        application has the message (it cannot be acknowledged after the write), and keeps its state only in memory."""
        qos = int(self.params.qos)
        return min(qos, 1) if self.wants_acknowledgements else qos

    def _where(self) -> str:
        ref = getattr(getattr(self, "context", None), "ref", "?")
        return f"source {ref!r} (MqttSource {self.host}:{self.port} topic {self.topic!r})"

    def open(self, context: SourceContext) -> None:
        """Connect to the broker and subscribe.

        Raises:
            SourceError: the broker cannot be reached or refuses the connection or subscription.
        """
        super().open(context)
        self._received = getattr(self, "_received", 0)
        self._bad = getattr(self, "_bad", 0)
        self._dropped = getattr(self, "_dropped", 0)
        self._index = getattr(self, "_index", 0)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._acking = self.wants_acknowledgements
        # Messages received and not yet handed to the stream: without acknowledgements they were acknowledged to
        # the broker on arrival, so a reopen (after a failure) keeps them; with them, the broker sends them again.
        kept = getattr(self, "_messages", None) if not self._acking else None
        self._messages: collections.deque[tuple[bytes, float, list[Any] | None]] = kept or collections.deque()
        # With acknowledgements: each message in arrival order, [packet id, connection, qos, done]; acknowledged
        # to the broker in that order (MQTT's rule) as soon as it and every one before it are done.
        self._arrivals: collections.deque[list[Any]] = collections.deque()
        self._handed: dict[int, list[Any]] = {}  # item index -> its arrival
        self._connections = 0
        self._acked = getattr(self, "_acked", 0)
        connection = MqttConnection(
            self._endpoint(),
            client_id=f"rvai-{context.ref}-{uuid.uuid4().hex[:8]}",
            where=self._where(),
            error=SourceError,
            subscribe=(self.topic, self._subscription_qos()),
            on_message=self._on_message,
            persistent=self._acking,
            manual_ack=self._acking,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
        )
        self._connection = connection
        connection.open(keepalive=int(self.params.keepalive), timeout=float(self.params.connect_timeout))

    def _endpoint(self) -> MqttEndpoint:
        return MqttEndpoint(
            host=self.host, port=self.port, topic=self.topic, username=self.username, password=self.password,
            tls=self.tls, ca_certs=self.ca_certs, certfile=self.certfile, keyfile=self.keyfile, client_id=self.client_id,
        )

    def _on_connected(self) -> None:
        with self._arrived:
            self._connections += 1
            if self._acking:  # the unacknowledged ones come again on this connection: not twice from the buffer
                for _, _, arrival in self._messages:
                    if arrival is not None:
                        arrival[3] = True
                self._messages.clear()
                self._ack_ready()

    def _on_disconnected(self) -> None:
        with self._arrived:  # what arrived on the lost connection is not acknowledged on the next one
            self._connections += 1

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._arrived:
            self._received += 1
            arrival = [message.mid, self._connections, message.qos, False] if self._acking else None
            if arrival is not None:
                self._arrivals.append(arrival)
            # With acknowledgements the broker's window of unacknowledged messages bounds the buffer: nothing is
            # dropped here (a dropped message would be acknowledged unwritten, and the broker would send more).
            if not self._acking and len(self._messages) >= int(self.params.receive_buffer):
                self._messages.popleft()
                self._dropped += 1
            self._messages.append((bytes(message.payload), time.time(), arrival))
            self._arrived.notify()

    def acknowledge(self, index: int) -> None:
        """Item ``index`` is written (or dropped): acknowledge its message to the broker in its turn."""
        with self._arrived:
            self._done(self._handed.pop(index, None))

    def _done(self, arrival: list[Any] | None) -> None:
        """``arrival``'s message is done with (``None``: none to acknowledge); the lock is held."""
        if arrival is not None:
            arrival[3] = True
            self._ack_ready()

    def _ack_ready(self) -> None:
        """Acknowledge the done messages at the head of the arrivals (the lock is held)."""
        connection: MqttConnection | None = getattr(self, "_connection", None)
        client = None if connection is None else connection.client
        arrivals = self._arrivals
        while arrivals and arrivals[0][3]:
            mid, born, qos, _ = arrivals.popleft()
            # one of an earlier connection is not: the broker sends it again (its packet id may be another's now)
            if client is not None and born == self._connections and qos > 0:
                client.ack(mid, qos)
                self._acked += 1

    def _decode(self, payload: bytes) -> tuple[dict[str, Any], str | None]:
        try:
            obj = bounded_json(payload)
        except JsonTooDeep as exc:  # e.g. 100,000 nested arrays
            raise InputValidationError(str(exc)) from exc
        except ValueError as exc:  # UnicodeDecodeError included
            raise InputValidationError(f"not JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise InputValidationError(f"expected a JSON object of input ref to value, got {type(obj).__name__}")
        sid = None
        if self.sid_field is not None:
            sid = obj.pop(self.sid_field, None)
            if sid is not None and not isinstance(sid, str):
                raise InputValidationError(f"the sid field {self.sid_field!r} must be a string, got {sid!r}", field=self.sid_field)
        inputs: dict[str, Any] = {}
        for ref, spec in self.context.inputs.items():
            if ref not in obj:
                raise InputValidationError(f"missing input {ref!r}", field=ref)
            try:
                inputs[ref] = from_json(spec.type, obj[ref], like=spec.like)
            except InputValidationError as exc:
                raise InputValidationError(f"{ref}: {exc.detail}", field=ref) from exc
        return inputs, sid

    def items(self) -> Iterator[SourceItem]:
        """Decoded messages, in arrival order, until the stop."""
        stopped = self.context.stopped
        while not stopped.is_set():
            with self._arrived:
                if not self._messages:
                    self._arrived.wait(0.2)
                    continue
                payload, received, arrival = self._messages.popleft()
            try:
                inputs, sid = self._decode(payload)
            except (InputValidationError, RecursionError, TypeError, ValueError) as exc:  # one message's fault: skipped
                self._bad += 1
                self.context.logger.warning("%s: bad payload %d skipped: %s (payload %.80r)", self._where(), self._bad, exc, payload)
                with self._arrived:
                    self._done(arrival)
                continue
            if arrival is not None:
                with self._arrived:
                    self._handed[self._index] = arrival
            yield SourceItem(inputs=inputs, index=self._index, timestamp=received, sid=sid)
            self._index += 1

    def close(self) -> None:
        """Disconnect from the broker (idempotent)."""
        connection: MqttConnection | None = getattr(self, "_connection", None)
        if connection is not None:
            connection.close()

    def stats(self) -> dict[str, Any]:
        """``received`` messages, ``bad_payloads``, ``dropped`` at receive, ``buffered`` (received, not yet handed
        to the stream: after a stop, the messages it left unread), ``subscribed``; with a ``client_id``,
        ``acknowledged`` (messages acknowledged to the broker after their results were written) and
        ``unacknowledged`` (received, not yet acknowledged: the broker sends them again after a stop or a crash)."""
        connection: MqttConnection | None = getattr(self, "_connection", None)
        return {
            "received": getattr(self, "_received", 0),
            "bad_payloads": getattr(self, "_bad", 0),
            "dropped": getattr(self, "_dropped", 0),
            "buffered": len(getattr(self, "_messages", ())),
            "acknowledged": getattr(self, "_acked", 0),
            "unacknowledged": len(getattr(self, "_arrivals", ())),
            "subscribed": bool(connection is not None and connection.ready.is_set()),
        }
