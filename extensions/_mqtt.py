"""The MQTT connection that :class:`MqttSource` and :class:`MqttSink` share (paho-mqtt).

One place for what both do with a broker: read the broker, login, TLS and client
options from an ``mqtt://`` / ``mqtts://`` URL (:func:`parse_url`), connect with them,
subscribe again after every reconnect, reconnect with backoff (paho's loop thread,
1 s doubling to 10 s), and disconnect cleanly (:class:`MqttConnection`). The source and
the sink keep only what is theirs: decoding messages, publishing records.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from rvai_sdk._compat import require
from rvai_sdk.exc import DriverError, UsageError

__all__ = ["MqttEndpoint", "MqttConnection", "parse_url", "URL_OPTIONS"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
"""URL scheme → the broker port when the URL names none; ``mqtts`` is MQTT over TLS."""

URL_OPTIONS = ("client_id", "ca_certs", "certfile", "keyfile")
"""Query options of an MQTT URL that configure the connection; any other query option is a parameter."""

RECONNECT_MIN_DELAY = 1
RECONNECT_MAX_DELAY = 10


@dataclasses.dataclass(frozen=True)
class MqttEndpoint:
    """What an MQTT URL says: the broker, the login, TLS files, the topic and the other query options.

    Attributes:
        host: the broker's address.
        port: the broker's port.
        topic: the URL's path without its leading ``/`` (a topic filter or template), ``""`` if none.
        username: the login, if the URL has one.
        password: the password, if the URL has one.
        tls: connect over TLS (``mqtts://``).
        ca_certs: a CA bundle file to verify the broker with (default: the system's).
        certfile: a client certificate file, for brokers that ask for one.
        keyfile: the client certificate's key file.
        client_id: the MQTT client id (default: a unique one).
        options: the remaining query options, each read as JSON when it parses (the component's parameters).
    """

    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    client_id: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def connection_args(self) -> dict[str, Any]:
        """The keyword arguments :class:`MqttSource` and :class:`MqttSink` take for this endpoint's connection."""
        return {
            "host": self.host, "port": self.port, "username": self.username, "password": self.password,
            "tls": self.tls, "ca_certs": self.ca_certs, "certfile": self.certfile, "keyfile": self.keyfile,
            "client_id": self.client_id,
        }


def parse_url(url: str, *, what: str) -> MqttEndpoint:
    """Read ``mqtt[s]://[user:password@]host[:port]/topic?options`` (``#`` and ``+`` wildcards as they are).

    Args:
        url: the URL; ``mqtts`` connects over TLS (port 8883 by default, else 1883).
        what: who asks, for messages (``"MQTT source"``).

    Raises:
        UsageError: not an ``mqtt``/``mqtts`` URL, or its port is not a number.

    Example:
        >>> endpoint = parse_url("mqtts://ann:pw@broker/cams/+?ca_certs=/etc/ca.pem&qos=0", what="MQTT source")
        >>> endpoint.port, endpoint.tls, endpoint.topic, endpoint.ca_certs, endpoint.options
        (8883, True, 'cams/+', '/etc/ca.pem', {'qos': 0})
    """
    # A topic's multi-level wildcard "#" would start a URL fragment: it is taken as part of the topic.
    parts = urllib.parse.urlsplit(url.replace("#", "%23"))
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"{what} URL {url!r} is not mqtt://host[:port]/topic or mqtts://host[:port]/topic")
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{what} URL {url!r}: {exc}") from exc
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    connection = {key: query.pop(key) or None for key in URL_OPTIONS if key in query}
    options: dict[str, Any] = {}
    for key, text in query.items():
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return MqttEndpoint(
        host=parts.hostname or "127.0.0.1",
        port=port or DEFAULT_PORTS[scheme],
        topic=urllib.parse.unquote(parts.path.lstrip("/")),
        username=parts.username,
        password=parts.password,
        tls=scheme == "mqtts",
        options=options,
        **connection,
    )


class MqttConnection:
    """A paho-mqtt client connected to a broker, reconnecting by itself until :meth:`close`.

    :meth:`open` connects (login, TLS) and waits until the broker accepted the connection
    and, for a subscriber, the subscription; after a lost connection paho reconnects with
    backoff and the subscription is made again. :attr:`ready` is set while connected (and
    subscribed).

    Args:
        endpoint: the broker and its options.
        client_id: the client id (the endpoint's, if it has one, wins).
        where: names the component in messages, e.g. ``"source 'cam' (MqttSource host:1883 topic 't')"``.
        error: the error type to raise (:class:`~rvai_sdk.exc.SourceError` or :class:`~rvai_sdk.exc.SinkError`).
        subscribe: ``(topic filter, qos)`` to subscribe to on every connect, or ``None``.
        on_message: paho's message callback ``(client, userdata, message)``, for a subscriber.
        on_publish: paho's publish callback ``(client, userdata, mid, reason_code, properties)``, for a publisher.
        mqtt5: speak MQTT 5 (the broker's acknowledgements then say why it refused a message, and its
            connection reply the largest packet it takes: :attr:`max_packet`); a broker that refuses
            MQTT 5 is connected to again with MQTT 3.1.1 (:attr:`mqtt5` then turns ``False``).
        persistent: keep the session on the broker across connections (MQTT 3.1.1's clean session
            off): what the subscription got and was not acknowledged, and what arrives while this
            client is away, is kept for the same client id.
        manual_ack: the subscriber acknowledges each received message itself (paho's ``ack``).
        on_connected: called on paho's thread after every accepted connection, before subscribing.
        on_disconnected: called on paho's thread when the connection is lost or closed.
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        where: str,
        error: type[DriverError],
        subscribe: tuple[str, int] | None = None,
        on_message: Callable[[Any, Any, Any], None] | None = None,
        on_publish: Callable[[Any, Any, int, Any, Any], None] | None = None,
        mqtt5: bool = False,
        persistent: bool = False,
        manual_ack: bool = False,
        on_connected: Callable[[], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.persistent = persistent
        self.manual_ack = manual_ack
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.client_id = endpoint.client_id or client_id
        self.where = where
        self.error = error
        self.subscribe = subscribe
        self.on_message = on_message
        self.on_publish = on_publish
        self.mqtt5 = mqtt5
        self.ready = threading.Event()
        self.refused: str | None = None
        self.client: Any = None
        self.max_packet: int | None = None
        """The largest packet the broker takes, when it said so (MQTT 5 only)."""
        self.unanswered = False  # the last connect got no CONNACK in time

    def open(self, *, keepalive: int, timeout: float) -> Any:
        """Connect (and subscribe) and start paho's network thread; the paho client.

        Raises:
            SourceError | SinkError (``error``): the broker cannot be reached, the TLS files
                cannot be read, or the broker refuses the login or the subscription, or
                does not answer within ``timeout`` seconds.
        """
        try:
            return self._open(keepalive=keepalive, timeout=timeout)
        except DriverError:
            # A broker of MQTT 3.1.1 only answers an MQTT 5 CONNECT with "unacceptable protocol version",
            # or (as that spec also allows) closes the connection without an answer.
            if not (self.mqtt5 and (self.unanswered or "protocol version" in (self.refused or "").lower())):
                raise
        self.mqtt5, self.refused = False, None
        self.ready.clear()
        return self._open(keepalive=keepalive, timeout=timeout)

    def _open(self, *, keepalive: int, timeout: float) -> Any:
        mqtt = require("paho.mqtt.client", extra="mqtt")
        endpoint = self.endpoint
        protocol = mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=None if self.mqtt5 else not self.persistent,
            manual_ack=self.manual_ack,
        )
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            try:
                client.tls_set(ca_certs=endpoint.ca_certs, certfile=endpoint.certfile, keyfile=endpoint.keyfile)
            except (OSError, ValueError) as exc:
                raise self.error(
                    f"{self.where}: cannot set up TLS (ca_certs={endpoint.ca_certs!r}, certfile={endpoint.certfile!r}, "
                    f"keyfile={endpoint.keyfile!r}): {type(exc).__name__}: {exc}"
                ) from exc
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        if self.on_message is not None:
            client.on_message = self.on_message
        if self.on_publish is not None:
            client.on_publish = self.on_publish
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_DELAY, max_delay=RECONNECT_MAX_DELAY)
        try:
            client.connect(endpoint.host, endpoint.port, keepalive=keepalive)
        except (OSError, ValueError) as exc:
            _close_sockets_left_open(exc)
            raise self.error(f"{self.where}: cannot connect: {type(exc).__name__}: {exc}") from exc
        self.client = client
        client.loop_start()
        if not self.ready.wait(timeout) or self.refused:
            self.unanswered = not self.ready.is_set()  # connected, but no CONNACK came
            self.close()
            waited = "subscribed" if self.subscribe is not None else "connected"
            raise self.error(f"{self.where}: not {waited} within {timeout} s ({self.refused or 'no answer'})")
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.refused = f"connection refused: {reason_code}"
            self.ready.set()
            return
        self.max_packet = getattr(properties, "MaximumPacketSize", None) if self.mqtt5 else None
        if self.on_connected is not None:
            self.on_connected()
        if self.subscribe is None:
            self.ready.set()
        else:
            client.subscribe(self.subscribe[0], qos=self.subscribe[1])

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any) -> None:
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            self.refused = f"subscription refused: {', '.join(failed)}"
        self.ready.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.ready.clear()
        if self.on_disconnected is not None:
            self.on_disconnected()

    def close(self) -> None:
        """Disconnect and stop paho's network thread (idempotent)."""
        client, self.client = self.client, None
        self.ready.clear()
        if client is not None:
            try:
                client.disconnect()
            finally:
                client.loop_stop()


def _close_sockets_left_open(exc: BaseException) -> None:
    """Close the sockets a failed ``connect`` left open in its frames.

    paho-mqtt (2.2) does not close the TLS socket whose handshake failed (an unknown
    CA, a plain-MQTT port): it would stay open until garbage collection.
    """
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket) and value.fileno() != -1:
                value.close()
        tb = tb.tb_next
