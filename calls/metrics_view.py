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


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and hmac.compare_digest(header[7:], token)
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
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
