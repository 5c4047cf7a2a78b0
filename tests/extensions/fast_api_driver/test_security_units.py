"""The driver's request checks alone: bearer scheme, JSON media types, Origin, Host, callback destinations."""

from __future__ import annotations

import asyncio
import doctest

import httpx
import pytest

from rvai_sdk.extensions.drivers.http import security

pytestmark = pytest.mark.timeout(30)


def test_the_examples_in_the_checks_docstrings_hold() -> None:
    result = doctest.testmod(security)
    assert result.attempted >= 5 and result.failed == 0


def refusal(url: str, allow: list[str] | None = None) -> str | None:
    """The refusal message for ``url``, or ``None`` when it is allowed."""
    try:
        asyncio.run(security.resolve_callback(httpx.URL(url), allow or []))
    except security.CallbackRefused as exc:
        return str(exc)
    return None


def test_every_spelling_of_a_non_public_callback_address_is_refused_unless_allowed() -> None:
    for url, kind in [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:6379/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://user:pw@127.0.0.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://172.16.0.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/", "link-local"),
        ("http://239.1.2.3/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://100.64.0.1/", "reserved"),
    ]:
        message = refusal(url)
        assert message is not None and f"a {kind} address" in message and "callback_allow" in message, (url, message)
    assert refusal("http://127.0.0.1:8080/", ["127.0.0.1"]) is None
    assert refusal("http://10.20.3.4/", ["10.20.0.0/16"]) is None
    assert refusal("http://10.21.3.4/", ["10.20.0.0/16"]) is not None
    assert refusal("http://localhost/", ["localhost"]) is None  # the name itself is listed
    assert refusal("ftp://127.0.0.1/") is not None
    assert refusal("http://93.184.215.14/") is None  # a public address needs no listing


def test_a_checked_callback_connects_to_the_address_it_checked_and_keeps_the_host_name() -> None:
    target = asyncio.run(security.resolve_callback(httpx.URL("https://user@localhost:8443/hook?x=1"), ["localhost"]))
    args = target.request_args(target.addresses[0])
    assert args["url"].host == target.addresses[0] and args["url"].port == 8443 and args["url"].path == "/hook"
    assert args["headers"] == {"Host": "localhost:8443"} and args["extensions"] == {"sni_hostname": "localhost"}


def test_host_origin_and_content_type_checks() -> None:
    assert security.host_allowed("[::1]:80", "127.0.0.1", []) and security.host_allowed("127.0.0.2", "127.0.0.1", [])
    assert security.host_allowed("app.localhost:8000", "127.0.0.1", [])
    assert not security.host_allowed("127.0.0.1.nip.io", "127.0.0.1", [])
    assert security.host_allowed("anything", "127.0.0.1", ["*"])
    assert security.is_loopback_host("::1") and not security.is_loopback_host("192.168.1.2")
    assert security.same_origin("http://LOCALHOST:8000/", "localhost:8000")
    assert not security.same_origin("http://localhost:8001", "localhost:8000")
    assert security.is_json_media_type(b"application/problem+json") and not security.is_json_media_type(b"")
    assert not security.is_json_media_type(b"text/json") and not security.is_json_media_type(b"multipart/form-data")
    assert security.bearer_matches(b"  Bearer   s3cret ", "s3cret") and not security.bearer_matches(b"Bearer", "s3cret")
