"""Each source and sink class parses its own URL (``from_url``); the installed entry points lead there, the CLI only dispatches."""

from __future__ import annotations

import ast
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import rvai_sdk.cli
import rvai_sdk.exc
import rvai_sdk.extensions
from rvai_sdk.cli import SINKS_GROUP, SOURCES_GROUP, load_sink, load_source
from rvai_sdk.exc import RvaiError, SinkError, UnknownSchemeError, UsageError
from rvai_sdk.extensions._mqtt import parse_url
from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
from rvai_sdk.extensions.sinks.dummy_sink import DummySink
from rvai_sdk.extensions.sinks.http_callback_sink import HttpCallbackSink
from rvai_sdk.extensions.sinks.mqtt_sink import MqttSink
from rvai_sdk.extensions.sources.dummy_source import DummySource
from rvai_sdk.extensions.sources.mqtt_source import MqttSource
from rvai_sdk.extensions.sources.video_source import VideoSource

SOURCE_SCHEMES = {
    "file": VideoSource, "rtsp": VideoSource, "rtsps": VideoSource, "rtmp": VideoSource, "http": VideoSource,
    "https": VideoSource, "mqtt": MqttSource, "mqtts": MqttSource, "dummy": DummySource,
}
SINK_SCHEMES = {
    "sqlite": DatabaseSink, "postgresql": DatabaseSink, "postgres": DatabaseSink, "mqtt": MqttSink, "mqtts": MqttSink,
    "http": HttpCallbackSink, "https": HttpCallbackSink, "dummy": DummySink,
}


@pytest.mark.parametrize(("group", "expected"), [(SOURCES_GROUP, SOURCE_SCHEMES), (SINKS_GROUP, SINK_SCHEMES)])
def test_every_installed_scheme_is_the_from_url_of_the_class_that_handles_it(group: str, expected: dict[str, type]) -> None:
    installed = {ep.name: ep for ep in entry_points(group=group) if ep.value.startswith("rvai_sdk.")}
    assert sorted(installed) == sorted(expected)
    for scheme, ep in installed.items():
        factory = ep.load()
        assert factory == expected[scheme].from_url, f"{group} {scheme} -> {ep.value}"
        assert factory.__self__ is expected[scheme] and factory.__doc__ and f"``{scheme}" in factory.__doc__, (
            f"{ep.value}'s docstring lists the scheme {scheme!r}"
        )


def test_the_cli_names_no_extension_module() -> None:
    cli = Path(rvai_sdk.cli.__file__)
    files = [cli, *sorted(cli.parent.glob("_cli_*.py"))]  # the command line and its commands' modules
    assert len(files) >= 4, files
    trees = [ast.parse(path.read_text()) for path in files]
    nodes = [node for tree in trees for node in ast.walk(tree)]
    strings = [node.value for node in nodes if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    imported = [
        name
        for node in nodes
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
    ]
    # the extension modules a CLI would name (drivers/, sources/, sinks/ and the shared helpers at the top);
    # a subpackage's modules (the HTTP driver's codec, service, client...) have generic names and are only
    # reachable through a dotted rvai_sdk.extensions path, which the pattern catches
    root = Path(rvai_sdk.extensions.__file__).parent
    modules = {path.stem for path in [*root.glob("*.py"), *root.glob("*/*.py")] if path.stem != "__init__"}
    named = re.compile(r"rvai_sdk\.extensions|\b(" + "|".join(sorted(modules)) + r")\b")
    assert "video_source" in modules and "fast_api_driver" in modules
    assert not [name for name in imported if named.search(name)]
    assert not [text for text in strings if named.search(text)]


def test_the_cli_errors_live_in_the_exc_tree_and_stay_importable_from_the_cli() -> None:
    for name in ("TargetError", "UsageError", "UnknownSchemeError"):
        error = getattr(rvai_sdk.exc, name)
        assert getattr(rvai_sdk.cli, name) is error and issubclass(error, RvaiError)
        assert name in rvai_sdk.exc.__all__ and name in (rvai_sdk.exc.__doc__ or "")
    assert issubclass(UnknownSchemeError, UsageError) and issubclass(UnknownSchemeError, LookupError)
    assert issubclass(UsageError, ValueError) and issubclass(rvai_sdk.exc.TargetError, LookupError)


def _attrs(obj: Any, *names: str) -> tuple[Any, ...]:
    return tuple(getattr(obj, name) for name in names)


def test_source_urls_make_the_sources_they_always_made(tmp_path: Path) -> None:
    clip = tmp_path / "clip one.mp4"
    clip.write_bytes(b"")
    assert _attrs(load_source(str(clip)), "url", "live") == (str(clip), False)
    assert load_source(f"file://{str(clip).replace(' ', '%20')}").url == str(clip)
    assert _attrs(load_source("rtsp://user:pw@10.0.0.5:8554/stream1?channel=2"), "url", "live") == (
        "rtsp://user:pw@10.0.0.5:8554/stream1?channel=2", True
    )
    dummy = load_source("dummy:?rate=0&count=7&seed=3&live=true&drop=keep_latest")
    assert isinstance(dummy, DummySource)
    assert (float(dummy.params.rate), int(dummy.params.count), int(dummy.params.seed), dummy.live, str(dummy.params.drop)) == (
        0.0, 7, 3, True, "keep_latest"
    )
    mqtt = load_source("mqtt://ann:pw@broker:1884/cameras/+/counts")
    assert _attrs(mqtt, "topic", "host", "port", "username", "password", "tls", "sid_field") == (
        "cameras/+/counts", "broker", 1884, "ann", "pw", False, None
    )
    assert _attrs(load_source("mqtt://broker/a/b"), "host", "port") == ("broker", 1883)
    tls = load_source("mqtts://broker/sites/#?sid_field=device&qos=2&client_id=cam-reader&ca_certs=/ca.pem&certfile=/c.pem&keyfile=/k.pem")
    assert _attrs(tls, "topic", "port", "tls", "sid_field", "client_id", "ca_certs", "certfile", "keyfile") == (
        "sites/#", 8883, True, "device", "cam-reader", "/ca.pem", "/c.pem", "/k.pem"
    )
    assert int(tls.params.qos) == 2


def test_sink_urls_make_the_sinks_they_always_made() -> None:
    assert _attrs(load_sink("sqlite:///frames.db?table=frames"), "url", "table") == ("sqlite:///frames.db", "frames")
    assert _attrs(load_sink("sqlite:///d.db"), "url", "table") == ("sqlite:///d.db", "results")
    assert load_sink("postgresql://ann@db:5432/frames?table=t&sslmode=require").url == "postgresql+psycopg://ann@db:5432/frames?sslmode=require"
    assert load_sink("postgres://ann@db/frames").url == "postgresql+psycopg://ann@db/frames"
    assert load_sink("postgresql+psycopg://ann@db/frames").url == "postgresql+psycopg://ann@db/frames"
    mqtt = load_sink("mqtt://ann:pw@127.0.0.1:1884")
    assert _attrs(mqtt, "topic", "host", "port", "username", "password", "inputs") == ("results/{source}", "127.0.0.1", 1884, "ann", "pw", False)
    mqtts = load_sink("mqtts://broker/out/{sid}?inputs=true&retain=true")
    assert _attrs(mqtts, "topic", "port", "tls", "inputs") == ("out/{sid}", 8883, True, True) and bool(mqtts.params.retain)
    assert load_sink("https://receiver:8443/cb/{source}?token=abc").url == "https://receiver:8443/cb/{source}?token=abc"
    assert isinstance(load_sink("dummy:"), DummySink)


@pytest.mark.parametrize(
    ("load", "url", "error", "message"),
    [
        (load_source, "missing.mp4", UsageError, "no such video file: 'missing.mp4'"),
        (load_source, "file:///no/such/clip.mp4", UsageError, "no such video file: '/no/such/clip.mp4'"),
        (load_source, "mqtt://broker", UsageError, "names no topic"),
        (load_source, "mqtt://broker:port/t", UsageError, "MQTT source URL 'mqtt://broker:port/t'"),
        (load_source, "dummy:?speed=3", RvaiError, "speed"),
        (load_source, "kafka://broker/t", UnknownSchemeError, "installed source schemes: dummy, file, http, https, mqtt, mqtts"),
        (load_sink, "mqtt://broker/out/{camera}", SinkError, "may use only"),
        (load_sink, "ftp://x", UnknownSchemeError, "no sink handles ftp: URLs"),
    ],
)
def test_a_url_a_class_cannot_take_is_a_clear_error(load: Any, url: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace("?", r"\?")):
        load(url)


def test_a_mqtt_url_names_its_broker_topic_login_tls_and_options() -> None:
    endpoint = parse_url("mqtts://ann:pw@[::1]:8884/a/+/b?qos=1&client_id=c&name=x", what="MQTT sink")
    assert (endpoint.host, endpoint.port, endpoint.topic, endpoint.username, endpoint.password, endpoint.tls) == (
        "::1", 8884, "a/+/b", "ann", "pw", True
    )
    assert endpoint.client_id == "c" and endpoint.options == {"qos": 1, "name": "x"}
    with pytest.raises(UsageError, match="MQTT sink URL 'tcp://broker/t' is not mqtt://"):
        parse_url("tcp://broker/t", what="MQTT sink")
