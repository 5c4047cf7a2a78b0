"""JSON from the network is refused when it nests too deeply, before the parser runs the process at the brink of its stack."""

from __future__ import annotations

import gc
import json
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types._json import MAX_JSON_DEPTH, JsonTooDeep, depth, loads

DEEP = b"[" * 100_000


@pytest.fixture
def collector_at_the_brink() -> Iterator[list[BaseException]]:
    """A garbage collection after every allocation, whose callback makes a few Python calls (as finalizers do).

    While ``json.loads`` recursed through 100,000 ``[`` it ran near the recursion limit: such a callback
    failed there with ``RecursionError``, reported as "exception ignored" on some unrelated object
    (pytest fails the test then: CI did, once). Yields what reached ``sys.unraisablehook``.
    """

    def nested(n: int) -> int:
        return 0 if n == 0 else nested(n - 1)

    def callback(phase: str, info: dict[str, Any]) -> None:
        nested(20)

    ignored: list[BaseException] = []
    hook, threshold = sys.unraisablehook, gc.get_threshold()
    sys.unraisablehook = lambda unraisable: ignored.append(unraisable.exc_value or RuntimeError())
    gc.callbacks.append(callback)
    gc.set_threshold(1)
    try:
        yield ignored
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)
        sys.unraisablehook = hook


def mqtt_payload(payload: bytes) -> object:
    from rvai_sdk.extensions.sources.mqtt_source import MqttSource

    return MqttSource("t", sid_field="device")._decode(payload)


def http_body(payload: bytes) -> object:
    from rvai_sdk.extensions.drivers.http.codec import Codec

    return Codec.json_object(payload)


def v2_body(payload: bytes) -> object:
    from tests.extensions.fast_api_driver.test_oip_codec import CODEC

    return CODEC.request(payload, None, max_sid_length=64, max_image_pixels=None)


def v2_bytes_element(payload: bytes) -> object:
    from tests.extensions.fast_api_driver.test_oip_codec import decode, tensors

    return decode(tensors(names={"datatype": "BYTES", "shape": [1], "data": [payload.decode()]}))


@pytest.mark.parametrize("read", [loads, mqtt_payload, http_body, v2_body, v2_bytes_element])
def test_a_payload_nested_100_000_deep_is_refused_naming_the_limit_and_nothing_else_fails(
    read: Callable[[bytes], object], collector_at_the_brink: list[BaseException]
) -> None:
    expected: type[Exception] = JsonTooDeep if read is loads else (InputValidationError if read is mqtt_payload else Exception)
    with pytest.raises(expected, match=f"nested deeper than {MAX_JSON_DEPTH}"):
        read(DEEP)
    assert collector_at_the_brink == [], "a collection during the parse failed at the recursion limit"


def test_nesting_up_to_the_limit_parses_and_brackets_in_strings_do_not_count() -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads(at_limit) == json.loads(at_limit)
    with pytest.raises(JsonTooDeep):
        loads("[" + at_limit + "]")
    text = json.dumps({"s": "[" * 1000 + '\\"{' * 500, "t": ["]"] * 300, "u": [[1, 2]] * 400})
    assert depth(text.encode()) == 3
    assert loads(text) == json.loads(text)  # thousands of brackets, none nested deep
    assert loads(b'{"x": 1}') == {"x": 1} and loads(bytearray(b"[]")) == []
    with pytest.raises(ValueError):
        loads(b'["unterminated' + b"[" * 200)  # not JSON either way: still a ValueError


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32"])
def test_bytes_in_utf16_or_utf32_are_scanned_as_text(encoding: str) -> None:
    """json.loads reads UTF-16/32 bytes too; scanned as raw bytes, a character such as 山 (0x5C71: a backslash
    byte) hid a deep document, and a valid one was refused."""
    deep = '["山",' + "[" * 100_000 + "]" * 100_000 + ',"a"]'
    with pytest.raises(JsonTooDeep):
        loads(deep.encode(encoding))
    valid = '{"a": "山", "b": "' + "字" * 200 + '", "c": ' + "[" * 100 + "]" * 100 + "}"
    assert loads(valid.encode(encoding)) == json.loads(valid)


def test_the_scan_is_exact_on_documents_full_of_escapes_and_linear_on_hostile_ones() -> None:
    """A regular expression over the strings took a match per string and, on an unterminated one, retried from
    each of its quotes: 31 KB of escaped quotes ending in a backslash took 6 s, holding the interpreter lock."""
    rng = random.Random(7)
    pieces = ["[", "]", "{", "}", '"', "\\", "a", " ", '\\"', "\\\\", "é", "\n"]

    def document(level: int = 0) -> Any:
        roll = rng.random()
        if level > 8 or roll < 0.3:
            return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))) if roll < 0.15 else rng.randint(-5, 5)
        if roll < 0.65:
            return [document(level + 1) for _ in range(rng.randint(0, 4))]
        return {"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))): document(level + 1) for _ in range(3)}

    def nesting(obj: Any) -> int:
        children = obj if isinstance(obj, list) else list(obj.values()) if isinstance(obj, dict) else None
        return 0 if children is None else 1 + max((nesting(c) for c in children), default=0)

    for _ in range(2000):
        obj = document()
        for text in (json.dumps(obj), json.dumps(obj, ensure_ascii=False)):
            assert depth(text.encode()) == nesting(obj), text
    for tail in (b"", b"\\", b"\\\\"):  # unterminated, ending in an odd or even run of backslashes
        body = b"[" * 129 + b'"' + b'\\"' * 200_000 + tail
        assert depth(body) == 129  # the string left open runs to the end
        with pytest.raises(JsonTooDeep):
            loads(body)
