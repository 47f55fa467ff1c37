"""``/metrics`` in Prometheus format: behind a bearer token, or loopback only."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from calls.engines import LLM_METRICS
from calls.session import active_call_count
from calls.telemetry import ACTIVE_CALLS
from vantum.client_address import client_address, is_relayed


def _allowed(request: HttpRequest) -> bool:
    """The bearer token when one is set; else a client on this machine.

    Behind a reverse proxy every request comes from loopback, so a request carrying any
    forwarding header is refused unless a trusted proxy (``VANTUM_TRUSTED_PROXIES``) named
    its client, and that client is on loopback.
    """
    token = settings.METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and hmac.compare_digest(header[7:], token)
    client = client_address(request)
    if is_relayed(request) and client == request.META.get("REMOTE_ADDR", ""):
        return False  # relayed, and no trusted proxy said by whom
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("Forbidden: set METRICS_TOKEN and send it as a bearer token.\n", status=403)
    ACTIVE_CALLS.set(active_call_count())
    body = generate_latest()
    snapshot = LLM_METRICS.snapshot()
    extra = [
        f"vantum_llm_peak_concurrent_sessions {snapshot['peakConcurrentSessions']}",
        f"vantum_llm_average_response_time_ms {snapshot['averageResponseTimeMs']}",
    ]
    return HttpResponse(body + ("\n".join(extra) + "\n").encode(), content_type=CONTENT_TYPE_LATEST)
