"""The FastAPIDriver's request checks: callback destinations (SSRF), Host (DNS rebinding), Origin and
content type (CSRF), and the bearer token.

Each check is a small function of plain values, so it is tested alone and the driver
stays one route, one implementation: the driver calls them and maps a refusal to its
JSON error.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CallbackRefused",
    "CallbackUnresolved",
    "bearer_matches",
    "is_json_media_type",
    "is_loopback_host",
    "host_allowed",
    "same_origin",
    "CallbackTarget",
    "resolve_callback",
]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackRefused(Exception):
    """A ``callback_url`` names a destination the driver does not reach; the message says why and what to do."""


class CallbackUnresolved(CallbackRefused):
    """A ``callback_url``'s host name cannot be resolved now (it may later: DNS is retried)."""


# -- bearer token ------------------------------------------------------------------------------


def bearer_matches(header: bytes, key: str) -> bool:
    """Whether an ``Authorization`` header value carries ``key`` as a bearer token.

    The scheme is case-insensitive (RFC 9110: ``bearer``, ``Bearer``, ``BEARER``), and
    spaces around the token are ignored; the token itself is compared in constant time.

    Examples:
        >>> bearer_matches(b"bearer s3cret", "s3cret"), bearer_matches(b"Basic s3cret", "s3cret")
        (True, False)
    """
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(token.strip(), key.encode())


# -- content type and origin -------------------------------------------------------------------


def is_json_media_type(content_type: bytes) -> bool:
    """Whether a ``Content-Type`` value is JSON (``application/json`` or ``application/<x>+json``).

    Examples:
        >>> is_json_media_type(b"application/json; charset=utf-8"), is_json_media_type(b"text/plain")
        (True, False)
    """
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def _split_host(value: str) -> str:
    """The host part of a ``Host`` header or an origin's authority, lowercased, without port or trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def same_origin(origin: str, host: str) -> bool:
    """Whether an ``Origin`` header names the server the request was sent to (its ``Host``).

    Examples:
        >>> same_origin("http://127.0.0.1:8000", "127.0.0.1:8000"), same_origin("https://evil.example", "127.0.0.1:8000")
        (True, False)
        >>> same_origin("null", "127.0.0.1:8000")
        False
    """
    _, sep, authority = origin.strip().partition("://")
    if not sep:
        return False
    return authority.rstrip("/").lower() == host.strip().lower()


# -- Host header (DNS rebinding) --------------------------------------------------------------

_LOOPBACK_NAMES = frozenset(("localhost", "127.0.0.1", "::1"))


@functools.lru_cache(maxsize=64)
def is_loopback_host(host: str) -> bool:
    """Whether a listening address is a loopback one (``127.0.0.0/8``, ``::1``, ``localhost``).

    Examples:
        >>> is_loopback_host("127.0.0.1"), is_loopback_host("0.0.0.0"), is_loopback_host("localhost")
        (True, False, True)
    """
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(header: str, bound: str, extra: Iterable[str]) -> bool:
    """Whether a ``Host`` header is acceptable on a server listening on the loopback address ``bound``.

    A loopback name or address (``localhost``, ``127.0.0.1``, ``[::1]``, with any port),
    the bound address, or a name in ``extra`` (``"*"``: any). Anything else is the mark
    of DNS rebinding: a hostile page whose name now resolves to 127.0.0.1.

    Examples:
        >>> host_allowed("localhost:8000", "127.0.0.1", []), host_allowed("evil.example:8000", "127.0.0.1", [])
        (True, False)
        >>> host_allowed("api.internal", "127.0.0.1", ["api.internal"])
        True
    """
    name = _split_host(header)
    if name in _LOOPBACK_NAMES or name == _split_host(bound) or name.endswith(".localhost"):
        return True
    try:
        if ipaddress.ip_address(name).is_loopback:
            return True
    except ValueError:
        pass
    for allowed in extra:
        allowed = allowed.strip().lower()
        if allowed == "*" or _split_host(allowed) == name:
            return True
    return False


# -- callback destinations (SSRF) -------------------------------------------------------------


def _kind(address: _IPAddress) -> str | None:
    """Why an address is not public (``"loopback"``, ``"private"``...), or ``None`` when it is."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def _allowed(name: str, address: _IPAddress, allow: Sequence[str]) -> bool:
    for entry in allow:
        entry = entry.strip().lower()
        if not entry:
            continue
        if _split_host(entry) == name:
            return True
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            continue
        if address.version == network.version and address in network:
            return True
    return False


class CallbackTarget:
    """Where a callback goes: the URL as given, and the checked addresses its request may connect to.

    The request is sent to a checked address itself (with the URL's ``Host`` and, for
    https, its name for TLS), so a name cannot resolve to a public address for the
    check and to a private one for the connection.
    """

    def __init__(self, url: Any, addresses: Sequence[str]) -> None:
        self.url = url
        self.addresses = list(addresses)

    def request_args(self, address: str) -> dict[str, Any]:
        """``httpx`` request arguments that connect to ``address``: ``url``, ``headers``, ``extensions``."""
        url = self.url
        headers = {"Host": url.netloc.decode("ascii").rpartition("@")[2]}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        return {"url": url.copy_with(host=address), "headers": headers, "extensions": extensions}


async def resolve_callback(url: Any, allow: Sequence[str]) -> CallbackTarget:
    """Resolve a callback URL and check every address it resolves to.

    Loopback, private, link-local, multicast and other non-public addresses are refused
    unless the host name, or a network holding the address, is listed in ``allow``.
    Every address the name resolves to must pass (one private address among public
    ones is refused too), so the check cannot be steered by which address is tried.

    Args:
        url: an ``httpx.URL`` with an ``http`` or ``https`` scheme.
        allow: the driver's ``callback_allow`` entries: host names, addresses, networks.

    Raises:
        CallbackRefused: the URL is not http(s), its host cannot be resolved, or it
            resolves to an address that is not allowed.
    """
    if url.scheme not in ("http", "https") or not url.host:
        raise CallbackRefused(f"callback_url {str(url)!r} must be an http:// or https:// URL with a host")
    name = url.host.lower().rstrip(".")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise CallbackUnresolved(f"callback_url host {name!r} cannot be resolved: {exc}") from exc
    addresses: list[_IPAddress] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        addresses.append(address)
    if not addresses:
        raise CallbackUnresolved(f"callback_url host {name!r} resolves to no address")
    for address in addresses:
        kind = _kind(address)
        if kind is not None and not _allowed(name, address, allow):
            shown = name if name == str(address) else f"{name} ({address})"
            raise CallbackRefused(
                f"callback_url {str(url)!r} reaches {shown}, a {kind} address; callbacks go to public addresses "
                f"only. To allow it, list it in the driver parameter callback_allow, e.g. "
                f"set_parameters({{'callback_allow': [{str(address)!r}]}})"
            )
    return CallbackTarget(url, list(dict.fromkeys(str(a) for a in addresses)))
