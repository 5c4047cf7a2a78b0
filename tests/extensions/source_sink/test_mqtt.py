"""MqttSource and MqttSink through the local Mosquitto broker, both ways, with bad payloads in the stream."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rvai_sdk.exc import SinkError, SourceError
from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
from rvai_sdk.extensions.sinks.mqtt_sink import MqttSink
from rvai_sdk.extensions.sources.mqtt_source import MqttSource
from rvai_sdk.runtime import Inference, Runtime
from tests.conftest import Count, single
from tests._servers import free_port
from tests.extensions.source_sink.support import wait_until

pytestmark = pytest.mark.timeout(90)


class Subscriber:
    """A plain paho client in the test: collects messages of a topic filter."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, m, rc, p: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(10), "the test subscriber did not subscribe"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def publish(self, topic: str, payload: str | bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mqtt_broker: tuple[str, int]) -> Iterator[tuple[Subscriber, str]]:
    base = f"rvai-test/{uuid.uuid4().hex[:12]}"
    sub = Subscriber(*mqtt_broker, topic=f"{base}/out/#")
    try:
        yield sub, base
    finally:
        sub.close()


def test_mqtt_in_and_out_with_a_sid_per_message_and_bad_payloads_skipped(
    runtime: Runtime, mqtt_broker: tuple[str, int], subscriber: tuple[Subscriber, str]
) -> None:
    host, port = mqtt_broker
    sub, base = subscriber
    source = MqttSource(f"{base}/in", host=host, port=port, sid_field="device")
    sink = MqttSink(f"{base}/out/{{sid}}", host=host, port=port)
    with runtime.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver("mqtt", SourceSinkDriver, sources={"sensors": source}, sinks={"broker": sink})
        wait_until(lambda: handle.stats()["sources"]["sensors"]["source"].get("subscribed"), what="the source to subscribe")
        # the deep one used to crash the source, which lost every message in its receive buffer
        deep = b"[" * 100_000
        bad = [b"not json", json.dumps([1, 2]), json.dumps({"x": "abc", "device": "a"}), deep, json.dumps({"device": "a"})]
        for i in range(10):
            sub.publish(f"{base}/in", json.dumps({"x": i, "device": "a" if i % 2 == 0 else "b"}))
            if i % 2 == 0 and bad:
                sub.publish(f"{base}/in", bad.pop())
        wait_until(lambda: len(sub.received()) == 10, what="10 results", explain=lambda: (handle.stats(), sub.received()))
        stats = wait_until(
            lambda: (s := handle.stats()["sources"]["sensors"])["source"]["bad_payloads"] == 5 and s,
            what="the fifth bad payload (published last)",
        )
    messages = sub.received()
    for device, xs in (("a", [0, 2, 4, 6, 8]), ("b", [1, 3, 5, 7, 9])):
        mine = [m for topic, m in messages if topic == f"{base}/out/{device}"]
        assert [m["outputs"]["y"] for m in mine] == [1, 2, 3, 4, 5], f"device {device} has its own counter, in order"
        assert {m["sid"] for m in mine} == {device} and {m["status"] for m in mine} == {"complete"}
    assert sorted(m["index"] for _, m in messages) == list(range(10))
    assert stats["source"]["bad_payloads"] == 5 and stats["processed"] == 10 and stats["failed"] == 0
    assert stats["errors"] == 0 and stats["source"]["buffered"] == 0


def test_an_unreachable_broker_is_a_clear_error() -> None:
    from rvai_sdk.drivers import SinkContext, SourceContext

    port = free_port()
    with pytest.raises(SourceError, match=rf"source 's' \(MqttSource 127.0.0.1:{port} topic 't'\): cannot connect"):
        MqttSource("t", port=port).open(SourceContext(ref="s", inputs=single(Count).inputs))
    with pytest.raises(SinkError, match=rf"sink 'k' \(MqttSink 127.0.0.1:{port} topic 'r/{{source}}'\): cannot connect"):
        MqttSink("r/{source}", port=port).open(SinkContext(ref="k", outputs=single(Count).outputs))
    with pytest.raises(SinkError, match="may use only"):
        MqttSink("r/{camera}")


def test_a_record_the_broker_cannot_take_is_dead_lettered_and_the_rest_is_published(
    mqtt_broker: tuple[str, int], subscriber: tuple[Subscriber, str], tmp_path: Any
) -> None:
    from rvai_sdk.runtime import init
    from tests.extensions.source_sink.support import read_jsonl

    host, port = mqtt_broker
    sub, base = subscriber
    letters = str(tmp_path / "dead.jsonl")
    source = MqttSource(f"{base}/in", host=host, port=port, sid_field="device")
    sink = MqttSink(f"{base}/out/{{sid}}", host=host, port=port, params={"dead_letter": letters, "retry_initial": 0.01})
    with init("local") as rt, rt.start_inference(Inference(pipeline=single(Count))) as proc:
        handle = proc.add_driver("mqtt", SourceSinkDriver, sources={"sensors": source}, sinks={"broker": sink})
        wait_until(lambda: handle.stats()["sources"]["sensors"]["source"].get("subscribed"), what="the source to subscribe")
        for i in range(12):  # a '+' in a topic name is a wildcard: no broker takes it
            sub.publish(f"{base}/in", json.dumps({"x": i, "device": "gate+3" if i == 4 else "gate-1"}))
        stats = wait_until(
            lambda: (s := handle.stats())["sources"]["sensors"]["written"] + s["sources"]["sensors"]["dead_lettered"] == 12 and s,
            what="12 records handled", explain=handle.stats,
        )
        wait_until(lambda: len(sub.received()) == 11, what="11 messages", explain=sub.received)
    assert sorted(m["index"] for _, m in sub.received()) == [i for i in range(12) if i != 4]
    dead = read_jsonl(letters)
    assert [d["index"] for d in dead] == [4] and "invalid topic" in dead[0]["error"] and dead[0]["sid"] == "gate+3"
    assert stats["sinks"]["broker"]["dead_lettered"] == 1 and stats["sinks"]["broker"]["lost"] == 0


# -- at least once, with a client id ---------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_with_a_client_id_no_message_is_lost_when_the_driver_is_killed_or_stopped(
    mqtt_broker: tuple[str, int], subscriber: tuple[Subscriber, str], sqlite_url: str
) -> None:
    """Messages were acknowledged to the broker on arrival: those still in the receive buffer or in flight were
    lost when the driver was killed (SIGKILL) or stopped. With a client id the session persists and a message is
    acknowledged once its result is written: the broker sends the others again to the next driver."""
    import os
    import signal

    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
    from rvai_sdk.runtime import ProcessStatus, init
    from tests.extensions.source_sink.conftest import rows
    from tests.extensions.source_sink.support import work_pipeline

    host, port = mqtt_broker
    sub, base = subscriber
    topic = f"{base}/in"
    client_id = f"rvai-test-{uuid.uuid4().hex[:12]}"

    def stored() -> set[int]:
        return {int(r["y"]) for r in rows(sqlite_url, "results")}  # type: ignore[call-overload]

    def driver() -> Any:
        source = MqttSource(topic, host=host, port=port, client_id=client_id)
        sink = DatabaseSink(sqlite_url, params={"batch_size": 4, "batch_wait": 0.0})
        handle = proc.add_driver("m", SourceSinkDriver, sources={"s": source}, sinks={"db": sink})
        wait_until(lambda: handle.stats()["sources"]["s"]["source"].get("subscribed"), what="the source to subscribe")
        return handle

    with init("local") as rt, rt.start_inference(Inference(pipeline=work_pipeline(), parameters={"w": {"seconds": 0.05}})) as proc:
        first = driver()
        for x in range(40):
            sub.publish(topic, json.dumps({"x": x}))
        wait_until(lambda: first.stats()["sources"]["s"]["written"] >= 5, what="a few results written")
        os.kill(first.pid, signal.SIGKILL)  # with messages received, in flight and buffered
        wait_until(lambda: first.status is ProcessStatus.FAILED, what="the driver to die")
        proc.remove_driver("m")
        for x in range(40, 50):  # while no driver is subscribed: kept by the broker for the session
            sub.publish(topic, json.dumps({"x": x}))
        second = driver()
        wait_until(lambda: stored() == set(range(50)), what="every message written", explain=lambda: (sorted(stored()), second.stats()))
        for x in range(50, 80):
            sub.publish(topic, json.dumps({"x": x}))
        wait_until(lambda: len(stored()) >= 53, what="a few more results written")
        proc.remove_driver("m")  # a clean stop with messages still buffered
        third = driver()
        wait_until(lambda: stored() == set(range(80)), what="every message written", explain=lambda: (sorted(stored()), third.stats()))
        assert third.stats()["sources"]["s"]["source"]["acknowledged"] > 0
    # A clean stop closes the source after the sinks wrote what it gave, and it acknowledged those first: the
    # next driver gets only what was not written (a SIGKILL may leave some written and not acknowledged).
    later = [int(r["y"]) for r in rows(sqlite_url, "results") if int(r["y"]) >= 50]  # type: ignore[call-overload]
    assert sorted(later) == list(range(50, 80)), "no message of the clean stop written twice"


def test_qos_2_with_a_client_id_is_subscribed_as_qos_1() -> None:
    """paho completes QoS 2's handshake on arrival and keeps it in memory only: such a message cannot be
    acknowledged after its write, and a restart found the session wedged (the broker waiting for its PUBCOMP)."""
    assert MqttSource("t", client_id="c", params={"qos": 2})._subscription_qos() == 1
    assert MqttSource("t", params={"qos": 2})._subscription_qos() == 2  # no client id: acknowledged on arrival
    assert not MqttSource("t", client_id="c", params={"qos": 0}).wants_acknowledgements
