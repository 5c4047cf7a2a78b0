"""MqttSink: publishes each record as JSON to an MQTT topic (paho-mqtt, QoS 1)."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rvai_sdk.drivers import Record, RecordError, Sink, SinkContext, SinkParameters
from rvai_sdk.exc import SinkError
from rvai_sdk.types import Boolean, FloatRange, IntegerRange

from .._mqtt import MqttConnection, MqttEndpoint, parse_url
from ._taken import Taken

__all__ = ["MqttSink", "MqttSinkParameters"]

_MQTT_MAX_PACKET = 268_435_455 + 5
"""The largest packet MQTT can encode (its remaining length, plus the fixed header)."""
_SIZE_HINT = (
    ". If it stays with that record, the broker may refuse its size: Mosquitto's message_size_limit makes an MQTT 5"
    " client reconnect over a larger message (its max_packet_size is announced instead, and a larger record dead-lettered)"
)
_SINK_WIDE = (0x87, 0x97)
"""Acknowledgement reason codes about the client, not the message (not authorized, quota exceeded): retried."""
_PUBLISH_OVERHEAD = 5 + 2 + 2 + 1
"""A PUBLISH packet's bytes beside its topic and payload, at most: fixed header, topic length, packet id, properties."""


@dataclasses.dataclass
class MqttSinkParameters(SinkParameters):
    """Parameters of an :class:`MqttSink` (batching, buffer and retries come from :class:`SinkParameters`).

    Attributes:
        qos: the quality of service of each message (1: at least once).
        retain: ask the broker to keep the last message of each topic.
        publish_timeout: seconds to wait for the broker to acknowledge a batch.
        connect_timeout: seconds to wait for the broker to accept the connection.
    """

    qos: IntegerRange = SinkParameters.field(name="QoS", description="0, 1 or 2", default=IntegerRange(1, min=0, max=2))
    retain: Boolean = SinkParameters.field(name="Retain", description="Broker keeps the last message", default=Boolean(False))
    publish_timeout: FloatRange = SinkParameters.field(
        name="Publish timeout", description="Seconds to wait for acknowledgements", default=FloatRange(5.0, min=0.1, max=600.0)
    )
    connect_timeout: FloatRange = SinkParameters.field(
        name="Connect timeout", description="Seconds to wait for the broker", default=FloatRange(5.0, min=0.1, max=600.0)
    )


class MqttSink(Sink):
    """Publishes every record as a JSON message (``Record.to_json()``) to a topic template.

    The template takes ``{source}``, ``{sid}``, ``{index}`` and ``{status}``, e.g.
    ``"results/{source}"``. A batch counts as written once the broker acknowledged every
    message (QoS 1 and 2); otherwise the write fails and the driver retries it, so a
    subscriber may see a message twice after a broker outage (at-least-once):
    deduplicate on ``(source, index)``. Messages the broker took already are not sent
    again when the rest of their batch is retried. A record that cannot be published as
    it is (no strict JSON form, such as a NaN in an output; a topic the broker refuses
    such as one with ``+`` or ``#``; a message larger than the broker takes; a message
    the broker's acknowledgement refuses) is a :class:`~rvai_sdk.drivers.RecordError`:
    the driver publishes the others and dead-letters it (the ``dead_letter`` file
    parameter, by default ``rvai_dead_letter_<sink ref>.jsonl``).

    The sink speaks MQTT 5, whose acknowledgements say when the broker refuses a
    message (Mosquitto's ``message_size_limit`` acknowledges and drops a too-large
    message from an MQTT 3.1.1 client) and whose connection reply gives the largest
    message the broker takes (``max_packet_size``). An acknowledgement that refuses the
    client rather than the message (not authorized, quota exceeded) fails the write,
    which is retried: the records wait until the login or ACL is fixed. A broker of MQTT 3.1.1 only is
    connected to with 3.1.1; there a message the broker drops cannot be told apart
    from one it delivered.

    Args:
        topic: the topic template.
        host: the broker's address.
        port: the broker's port.
        inputs: include the request inputs in each message (images as base64 PNG: large).
        client_id: the MQTT client id (default: a unique one).
        username: for brokers that require a login.
        password: for brokers that require a login.
        params: :meth:`MqttSink.parameters` (qos, retain, timeouts, batching, retries).
        tls: connect over TLS (the ``mqtts://`` scheme of :meth:`from_url`).
        ca_certs: a CA bundle to verify the broker with (default: the system's).
        certfile: a client certificate, for brokers that ask for one.
        keyfile: the client certificate's key.

    The connection (login, TLS, reconnecting with backoff) is the one
    :class:`~rvai_sdk.extensions.sources.mqtt_source.MqttSource` uses too.

    Example:
        >>> MqttSink("results/{source}").topic_for(Record(source="cam-1", sid="cam-1", index=0, timestamp=0.0, outputs={}))
        'results/cam-1'
    """

    secret_attributes = ("password",)
    parameters_class = MqttSinkParameters

    def __init__(
        self,
        topic: str = "results/{source}",
        host: str = "127.0.0.1",
        port: int = 1883,
        inputs: bool = False,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        params: MqttSinkParameters | Mapping[str, Any] | None = None,
        tls: bool = False,
        ca_certs: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(params)
        try:
            topic.format(source="s", sid="s", index=0, status="complete")
        except (KeyError, IndexError, ValueError) as exc:
            raise SinkError(f"MqttSink topic {topic!r} may use only {{source}}, {{sid}}, {{index}} and {{status}}: {exc}") from exc
        self.topic = topic
        self.host = host
        self.port = port
        self.inputs = inputs
        self.client_id = client_id
        self.username = username
        self.password = password
        self.tls = tls
        self.ca_certs = ca_certs
        self.certfile = certfile
        self.keyfile = keyfile

    @classmethod
    def from_url(cls, url: str) -> MqttSink:
        """An MqttSink from a URL (the ``rvai-sdk stream --sink`` form).

        Schemes: ``mqtt://[user:password@]host[:port]/results/{source}`` (a topic
        template; ``results/{source}`` when the URL has no path; port 1883 by default)
        and ``mqtts://`` (MQTT over TLS, port 8883 by default).

        Query options: ``inputs=true`` (include the request inputs), ``client_id``,
        ``ca_certs``, ``certfile`` and ``keyfile`` (TLS files), and any parameter of
        :class:`MqttSinkParameters` (``qos=2``, ``retain=true``...), read as JSON when it
        parses, else as a string.

        Raises:
            UsageError: not an MQTT URL.
            SinkError: the topic template uses a field other than those of the class.

        Example:
            >>> MqttSink.from_url("mqtt://127.0.0.1/results/{source}").topic
            'results/{source}'
            >>> sink = MqttSink.from_url("mqtts://user:pw@broker:8884/out/{sid}?retain=true&ca_certs=/etc/ca.pem")
            >>> sink.port, sink.tls, sink.ca_certs, bool(sink.params.retain)
            (8884, True, '/etc/ca.pem', True)
        """
        endpoint = parse_url(url, what="MQTT sink")
        options = dict(endpoint.options)
        inputs = bool(options.pop("inputs", False))
        return cls(endpoint.topic or "results/{source}", inputs=inputs, params=options or None, **endpoint.connection_args())

    def topic_for(self, record: Record) -> str:
        """The topic a record is published to."""
        return self.topic.format(source=record.source, sid=record.sid, index=record.index, status=record.status)

    def _where(self) -> str:
        ref = getattr(getattr(self, "context", None), "ref", "?")
        return f"sink {ref!r} (MqttSink {self.host}:{self.port} topic {self.topic!r})"

    def open(self, context: SinkContext) -> None:
        """Connect to the broker.

        Raises:
            SinkError: the broker cannot be reached or refuses the connection.
        """
        super().open(context)
        self._published = getattr(self, "_published", 0)
        self._taken: Taken = getattr(self, "_taken", None) or Taken()
        self._refusals: dict[int, Any] = {}  # message id -> the reason code of an acknowledgement that refused it
        connection = MqttConnection(
            MqttEndpoint(
                host=self.host, port=self.port, topic=self.topic, username=self.username, password=self.password,
                tls=self.tls, ca_certs=self.ca_certs, certfile=self.certfile, keyfile=self.keyfile, client_id=self.client_id,
            ),
            client_id=f"rvai-{context.ref}-{uuid.uuid4().hex[:8]}",
            where=self._where(),
            error=SinkError,
            on_publish=self._on_publish,
            mqtt5=True,
        )
        self._connection = connection
        connection.open(keepalive=60, timeout=float(self.params.connect_timeout))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        """paho's network thread: the broker acknowledged message ``mid`` (before its ``wait_for_publish`` returns)."""
        if reason_code is not None and reason_code.is_failure:
            self._refusals[mid] = reason_code

    def write(self, records: Sequence[Record]) -> None:
        """Publish the batch (but the messages an earlier attempt of it delivered) and wait for the broker's
        acknowledgements.

        Raises:
            RecordError: a record cannot be published, or the broker's acknowledgement refused it.
            SinkError: not connected, or a message was not acknowledged in time.
        """
        connection: MqttConnection | None = getattr(self, "_connection", None)
        client = None if connection is None else connection.client
        if connection is None or client is None or not connection.ready.is_set():
            raise SinkError(f"{self._where()}: not connected to the broker")
        qos, retain = int(self.params.qos), bool(self.params.retain)
        deadline = time.monotonic() + float(self.params.publish_timeout)
        taken = self._taken
        todo = [(record, *self._message(record, connection.max_packet)) for record in taken.rest(records)]
        refused: list[tuple[Record, Any]] = []
        try:
            sent = [(record, len(payload), client.publish(topic, payload, qos=qos, retain=retain)) for record, topic, payload in todo]
        except (RuntimeError, ValueError, OSError) as exc:
            raise SinkError(f"{self._where()}: publishing failed: {type(exc).__name__}: {exc}") from exc
        failure: SinkError | None = None
        for record, size, info in sent:  # every acknowledged message counts, even after one that failed
            what = f"record {record.index} of source {record.source!r} ({size} bytes of JSON)"
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError, OSError) as exc:
                failure = failure or SinkError(
                    f"{self._where()}: the connection was lost before the broker acknowledged {what}: {exc}{_SIZE_HINT}"
                )
                continue
            if not info.is_published():
                failure = failure or SinkError(
                    f"{self._where()}: the broker did not acknowledge {what} within {float(self.params.publish_timeout)} s"
                    f"{_SIZE_HINT}"
                )
                continue
            reason = self._refusals.pop(info.mid, None)
            if reason is not None:
                refused.append((record, reason))
                continue
            taken.add(record)
            self._published += 1
        if failure is not None:
            raise failure
        if refused:
            record, reason = refused[0]
            if reason.value in _SINK_WIDE:
                raise SinkError(
                    f"{self._where()}: the broker refused record {record.index} of source {record.source!r}: {reason} "
                    "(about this client, not the record: check its login and the broker's ACL or quota)"
                )
            raise RecordError(
                f"{self._where()}: the broker refused record {record.index} of source {record.source!r}: {reason} "
                "(a message larger than it takes, or a topic it does not allow this client)"
            )
        taken.done(records)

    def _message(self, record: Record, max_packet: int | None = None) -> tuple[str, bytes]:
        """The topic and JSON payload of a record.

        Raises:
            RecordError: the record has no strict JSON form, its topic is not one a broker takes, or its
                message is larger than ``max_packet`` (the broker's limit) or than MQTT allows.
        """
        where = f"{self._where()}: record {record.index} of source {record.source!r}"
        try:
            topic = self.topic_for(record)
            payload = json.dumps(record.to_json(inputs=self.inputs), allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError, KeyError) as exc:
            raise RecordError(f"{where} cannot be published as JSON: {type(exc).__name__}: {exc}") from exc
        encoded = topic.encode()
        if not topic or "+" in topic or "#" in topic or "\x00" in topic or len(encoded) > 65535:
            raise RecordError(f"{where} has the invalid topic {topic!r}")
        size = _PUBLISH_OVERHEAD + len(encoded) + len(payload)
        limit = min(max_packet or _MQTT_MAX_PACKET, _MQTT_MAX_PACKET)
        if size > limit:
            raise RecordError(
                f"{where} makes a message of {size} bytes, and the broker takes at most {limit}: "
                "leave the large outputs out of what the sink sends, or raise the broker's limit"
            )
        return topic, payload

    def close(self) -> None:
        """Disconnect from the broker (idempotent)."""
        connection: MqttConnection | None = getattr(self, "_connection", None)
        if connection is not None:
            connection.close()

    def stats(self) -> dict[str, Any]:
        """``published`` messages and whether the sink is ``connected``."""
        connection: MqttConnection | None = getattr(self, "_connection", None)
        return {"published": getattr(self, "_published", 0), "connected": bool(connection is not None and connection.ready.is_set())}
