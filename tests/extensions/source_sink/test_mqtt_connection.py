"""The connection MqttSource and MqttSink share, against a broker of the test's own (Mosquitto with TLS and a login).

The URLs go through ``rvai_sdk.cli.load_source``/``load_sink`` (the installed entry points
to ``from_url``), so the TLS files and the login travel from an ``mqtts://`` URL to the
connection; the broker is then killed with SIGKILL and started again on the same port,
and both come back on their own (the source subscribes again).
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rvai_sdk.cli import load_sink, load_source
from rvai_sdk.drivers import SourceContext
from rvai_sdk.exc import SourceError
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sources.mqtt_source import MqttSource
from rvai_sdk.runtime import Inference, init
from tests.conftest import IN_CI, Count, require_extra, single
from tests._servers import free_port
from tests.extensions.source_sink.support import wait_until

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "ann", "s3cret"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Broker:
    """A Mosquitto of the test: TLS only (a CA of its own), a password login, on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.ca = folder / "ca.pem"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                 "-subj", "/CN=rvai test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
                 cwd=folder)
        (folder / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=folder)
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(folder / "passwd"), USER, PASSWORD], check=True, capture_output=True, timeout=60)
        (folder / "mosquitto.conf").write_text(
            f"user {getpass.getuser()}\npersistence false\nper_listener_settings false\nallow_anonymous false\n"
            f"password_file {folder / 'passwd'}\nlistener {self.port} 127.0.0.1\n"
            f"cafile {self.ca}\ncertfile {folder / 'server.pem'}\nkeyfile {folder / 'server.key'}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.folder / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_until(self._listening, what=f"Mosquitto to listen on 127.0.0.1:{self.port}", explain=self._log)

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"Mosquitto exited: {self._log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _log(self) -> str:
        if self.process is None or self.process.poll() is None or self.process.stderr is None:
            return "(running)"
        return self.process.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stderr is not None:
                process.stderr.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    require_extra("paho.mqtt.client")
    for tool in ("mosquitto", "mosquitto_passwd", "openssl"):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"{tool} is missing, but CI installs it")
            pytest.skip(f"{tool} is not installed")
    broker = Broker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


class TlsClient:
    """The test's own paho client over TLS: publishes inputs, collects results (subscribing again on every connect)."""

    def __init__(self, broker: Broker, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.username_pw_set(USER, PASSWORD)
        self.client.tls_set(ca_certs=str(broker.ca))
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, m, rc, p: self.subscribed.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.subscribed.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append(json.loads(message.payload))

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        info = self.client.publish(topic, json.dumps(payload), qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), f"the broker did not take {payload}"

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtts_urls_carry_tls_and_login_and_source_and_sink_come_back_after_the_broker_is_killed(broker: Broker) -> None:
    base = f"rvai-test/{uuid.uuid4().hex[:12]}"
    auth = f"mqtts://{USER}:{PASSWORD}@127.0.0.1:{broker.port}"
    source = load_source(f"{auth}/{base}/in?ca_certs={broker.ca}&sid_field=device")
    sink = load_sink(f"{auth}/{base}/out/{{sid}}?ca_certs={broker.ca}&retry_initial=0.05")
    assert isinstance(source, MqttSource) and source.tls and source.ca_certs == str(broker.ca)
    client = TlsClient(broker, f"{base}/out/#")
    try:
        assert client.subscribed.wait(30), "the test client did not subscribe"
        with init("debug") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
            handle = proc.add_driver("mqtt", SourceSinkDriver, sources={"sensors": source}, sinks={"broker": sink})

            def connected() -> bool:
                stats = handle.stats()
                return bool(stats["sources"]["sensors"]["source"].get("subscribed") and stats["sinks"]["broker"]["sink"].get("connected"))

            wait_until(connected, what="the source to subscribe and the sink to connect over TLS", explain=handle.stats)
            for i in range(3):
                client.publish(f"{base}/in", {"x": i, "device": "gate-1"})
            wait_until(lambda: len(client.received()) == 3, what="3 results", explain=lambda: (handle.stats(), client.received()))

            broker.kill()
            wait_until(lambda: not connected(), what="the source and sink to see the broker gone", explain=handle.stats)
            broker.start()
            wait_until(connected, what="the source to subscribe again and the sink to reconnect", timeout=60, explain=handle.stats)
            assert client.subscribed.wait(30), "the test client did not subscribe again"
            for i in range(3, 6):
                client.publish(f"{base}/in", {"x": i, "device": "gate-1"})
            wait_until(lambda: len(client.received()) == 6, what="6 results", explain=lambda: (handle.stats(), client.received()))
    finally:
        client.close()
    results = client.received()
    assert [m["outputs"]["y"] for m in results] == [1, 2, 3, 4, 5, 6], "one sid, one counter, in order, across the restart"
    assert {m["sid"] for m in results} == {"gate-1"}


def test_a_wrong_password_or_an_unknown_ca_is_a_clear_error_naming_the_source(broker: Broker) -> None:
    context = SourceContext(ref="s", inputs=single(Count).inputs)
    wrong = MqttSource.from_url(f"mqtts://{USER}:nope@127.0.0.1:{broker.port}/t?ca_certs={broker.ca}&connect_timeout=10")
    with pytest.raises(SourceError, match=rf"source 's' \(MqttSource 127.0.0.1:{broker.port} topic 't'\): not subscribed .*refused"):
        wrong.open(context)
    untrusted = MqttSource.from_url(f"mqtts://{USER}:{PASSWORD}@127.0.0.1:{broker.port}/t")  # the system's CAs only
    with pytest.raises(SourceError, match="cannot connect: SSLCertVerificationError") as raised:
        untrusted.open(context)
    assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)
    missing = MqttSource.from_url(f"mqtts://127.0.0.1:{broker.port}/t?ca_certs=/no/such/ca.pem")
    with pytest.raises(SourceError, match=r"cannot set up TLS \(ca_certs='/no/such/ca.pem'"):
        missing.open(context)
