"""Which browser pages may open our WebSockets (the call ``/ws`` and the staff live view).

A browser always sends ``Origin`` with a WebSocket and cannot forge it, while a cookie
(the staff session) rides along whatever page opens the socket: so the origin check is what
stops another site from using a visitor's session or calling on their behalf. An origin is
its scheme, host *and* port: ``http://voice.example.com`` and
``https://voice.example.com:8443`` are other sites than ``https://voice.example.com``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def parse_origin(origin: str) -> tuple[str, str, int] | None:
    """``"https://Example.com"`` -> ``("https", "example.com", 443)``; None if not a web origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _request_scheme(headers: Mapping[bytes, bytes], scope: Mapping[str, Any]) -> str:
    if scope.get("scheme") in ("wss", "https"):
        return "https"
    proxy_header = settings.SECURE_PROXY_SSL_HEADER  # ("HTTP_X_FORWARDED_PROTO", "https")
    if proxy_header:
        name = proxy_header[0].removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if headers.get(name, b"").decode("latin-1").split(",")[0].strip() == proxy_header[1]:
            return "https"
    return "http"


def origin_allowed(origin: str | None, scope: Mapping[str, Any] | None = None) -> bool:
    """May a page of ``origin`` open a WebSocket of this ``scope``?

    - No Origin: not a browser (nothing to forge with), allowed.
    - ``VANTUM_ALLOWED_ORIGINS`` set: one of them, compared by scheme, host and port
      (``*`` allows any).
    - Otherwise the page must come from this very server: same scheme, host and port as
      the request (its Host header), the host being in ``ALLOWED_HOSTS``. In development
      (``DEBUG``) any local page is allowed too.
    """
    if not origin:
        return True
    parsed = parse_origin(origin)
    allowed_origins = settings.VANTUM_ALLOWED_ORIGINS
    if allowed_origins and "*" in allowed_origins:
        return True
    if parsed is None:
        return False
    if allowed_origins:
        return parsed in {parse_origin(entry) for entry in allowed_origins}
    if settings.DEBUG and parsed[1] in _LOCAL_HOSTS:
        return True
    return _same_origin(parsed, scope or {}, without_host=True)


def staff_origin_allowed(origin: str | None, scope: Mapping[str, Any]) -> bool:
    """May a page of ``origin`` open a staff WebSocket (a live transcript) of this ``scope``?

    Stricter than ``origin_allowed``: a browser sends the admin's cookie from any page, and
    ``VANTUM_ALLOWED_ORIGINS`` (``*``, or the customer sites that embed the call widget) says
    who may *call*, not who may read transcripts. Only the server's own pages may: same
    scheme, host and port as the request, the host in ``ALLOWED_HOSTS``, in development too.
    No Origin (not a browser) is allowed, as for calls.
    """
    if not origin:
        return True
    parsed = parse_origin(origin)
    return parsed is not None and _same_origin(parsed, scope, without_host=False)


def _same_origin(parsed: tuple[str, str, int], scope: Mapping[str, Any], *, without_host: bool) -> bool:
    """Is ``parsed`` this very server: its host in ``ALLOWED_HOSTS`` and the same scheme,
    host and port as the request's Host? ``without_host``: the answer when the request has
    no Host header to compare with."""
    scheme, host, port = parsed
    if not validate_host(f"[{host}]" if ":" in host else host, settings.ALLOWED_HOSTS):
        return False  # ALLOWED_HOSTS writes IPv6 addresses in brackets, as Host does
    headers = dict(scope.get("headers", []))
    host_header = headers.get(b"host", b"").decode("latin-1").lower()
    if not host_header:
        return without_host  # not a real HTTP/1.1 client; nothing to compare with
    request_scheme = _request_scheme(headers, scope)
    request_host, request_port = split_domain_port(host_header)
    request_port_number = int(request_port) if request_port.isdigit() else _DEFAULT_PORTS[request_scheme]
    return (scheme, host.strip("[]"), port) == (request_scheme, request_host.strip("[]"), request_port_number)


def origin_of(scope: Mapping[str, Any]) -> str | None:
    """The Origin header of a WebSocket scope, or None."""
    headers = dict(scope.get("headers", []))
    return headers.get(b"origin", b"").decode("latin-1") or None
