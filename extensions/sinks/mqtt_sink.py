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

__all__ = ["MqttSink", "MqttSinkParameters"]


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
    deduplicate on ``(source, index)``. A record that cannot be published as it is (no
    JSON form, a topic the broker refuses such as one with ``+`` or ``#``, a payload
    too large) is a :class:`~rvai_sdk.drivers.RecordError`: the driver publishes the
    others and dead-letters it (the ``dead_letter`` file parameter, by default
    ``rvai_dead_letter_<sink ref>.jsonl``).

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
        connection = MqttConnection(
            MqttEndpoint(
                host=self.host, port=self.port, topic=self.topic, username=self.username, password=self.password,
                tls=self.tls, ca_certs=self.ca_certs, certfile=self.certfile, keyfile=self.keyfile, client_id=self.client_id,
            ),
            client_id=f"rvai-{context.ref}-{uuid.uuid4().hex[:8]}",
            where=self._where(),
            error=SinkError,
        )
        self._connection = connection
        connection.open(keepalive=60, timeout=float(self.params.connect_timeout))

    def write(self, records: Sequence[Record]) -> None:
        """Publish the batch and wait for the broker's acknowledgements.

        Raises:
            SinkError: not connected, or a message was not acknowledged in time.
        """
        connection: MqttConnection | None = getattr(self, "_connection", None)
        client = None if connection is None else connection.client
        if connection is None or client is None or not connection.ready.is_set():
            raise SinkError(f"{self._where()}: not connected to the broker")
        qos, retain = int(self.params.qos), bool(self.params.retain)
        deadline = time.monotonic() + float(self.params.publish_timeout)
        messages = [self._message(r) for r in records]
        try:
            infos = [client.publish(topic, payload, qos=qos, retain=retain) for topic, payload in messages]
            for info in infos:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    raise SinkError(f"{self._where()}: the broker did not acknowledge within {float(self.params.publish_timeout)} s")
        except (RuntimeError, ValueError, OSError) as exc:
            raise SinkError(f"{self._where()}: publishing failed: {type(exc).__name__}: {exc}") from exc
        self._published += len(records)

    def _message(self, record: Record) -> tuple[str, str]:
        """The topic and JSON payload of a record.

        Raises:
            RecordError: the record has no JSON form, or its topic is not one a broker takes.
        """
        try:
            topic = self.topic_for(record)
            payload = json.dumps(record.to_json(inputs=self.inputs))
        except (TypeError, ValueError, KeyError) as exc:
            raise RecordError(f"{self._where()}: record {record.index} of source {record.source!r} cannot be published: {type(exc).__name__}: {exc}") from exc
        if not topic or "+" in topic or "#" in topic or "\x00" in topic or len(topic.encode()) > 65535:
            raise RecordError(f"{self._where()}: record {record.index} of source {record.source!r} has the invalid topic {topic!r}")
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
