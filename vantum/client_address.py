"""Who is on the other end: one answer for HTTP requests and WebSocket scopes.

A forwarding header (``X-Forwarded-For``, ``X-Real-IP``, ``Forwarded``) is written by
whoever sent the request, so it is believed only when the connection comes from a proxy
listed in ``VANTUM_TRUSTED_PROXIES``, and only the header named by
``VANTUM_CLIENT_IP_HEADER``. With no trusted proxy configured, the client is the socket's
peer and every forwarding header is ignored.

Used by ``/metrics`` (loopback only), the admin login throttle (django-axes) and the
per-address call limit.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDING_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded")


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` -> networks. Raises ValueError naming a bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(networks)


@functools.lru_cache(maxsize=8)
def _trusted(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return parse_networks(proxies)


def _is_in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _normalise(value: str) -> str | None:
    """An IP address from a header item (``1.2.3.4``, ``"[::1]:80"``, ``for=1.2.3.4``), or None."""
    value = value.strip().strip('"')
    if value.lower().startswith("for="):
        value = value[4:].strip('"')
    if value.startswith("["):  # [v6]:port
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _peer_and_headers(source: Any) -> tuple[str, Mapping[str, str]]:
    if isinstance(source, Mapping):  # an ASGI scope
        client = source.get("client") or ("",)
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in source.get("headers", [])
        }
        return str(client[0] or ""), headers
    headers = {name.lower(): value for name, value in source.headers.items()}
    return str(source.META.get("REMOTE_ADDR") or ""), headers


def is_relayed(source: Any) -> bool:
    """True when the request carries any forwarding header: someone relayed it, so a
    loopback peer does not mean a local client."""
    _, headers = _peer_and_headers(source)
    return any(headers.get(name) for name in FORWARDING_HEADERS)


def client_address(source: Any) -> str:
    """The client's IP address for a Django request or an ASGI scope ("" when unknown).

    The peer's address, unless the peer is a trusted proxy: then the configured header is
    read right to left, skipping trusted proxies, so a client cannot prepend a fake
    address to ``X-Forwarded-For`` and be believed.
    """
    peer, headers = _peer_and_headers(source)
    trusted = _trusted(tuple(settings.VANTUM_TRUSTED_PROXIES))
    if not trusted or not _is_in(peer, trusted):
        return peer
    header = settings.VANTUM_CLIENT_IP_HEADER.lower()
    value = headers.get(header, "")
    if not value:
        return peer
    items = value.split(",")
    if header == "forwarded":  # for=1.2.3.4;proto=https, for="[::1]"
        items = [
            part for item in items for part in item.split(";") if part.strip().lower().startswith("for=")
        ]
    addresses = [address for item in items if (address := _normalise(item))]
    for address in reversed(addresses):
        if not _is_in(address, trusted):
            return address
    return addresses[0] if addresses else peer


def axes_client_ip(request: Any) -> str:
    """``AXES_CLIENT_IP_CALLABLE``: the login throttle counts per real client address."""
    return client_address(request)
