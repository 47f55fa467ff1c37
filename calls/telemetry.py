"""Prometheus metrics of the call server (exposed at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

TURNS = Counter("vantum_turns_total", "Assistant turns", ["outcome"])  # ok / fallback / interrupted
MODEL_FAILURES = Counter("vantum_model_failures_total", "Model failures by class", ["kind"])
FALLBACKS = Counter("vantum_fallbacks_total", "Fallback messages spoken, by tier", ["tier"])
SPEECH_FAILURES = Counter("vantum_speech_failures_total", "Chunks whose synthesis failed")
PROTOCOL_ERRORS = Counter("vantum_protocol_errors_total", "Bad frames from clients")
ACTIVE_CALLS = Gauge("vantum_active_calls", "Calls connected to this process")
CALLS = Counter("vantum_calls_total", "Calls accepted")
REJECTED_CALLS = Counter("vantum_calls_rejected_total", "Calls refused", ["reason"])
FIRST_TOKEN = Histogram(
    "vantum_first_token_seconds", "User turn final to first model token", buckets=LATENCY_BUCKETS
)
FIRST_CHUNK = Histogram(
    "vantum_first_chunk_seconds", "User turn final to first semantic chunk", buckets=LATENCY_BUCKETS
)
FIRST_AUDIO = Histogram(
    "vantum_first_audio_seconds", "User turn final to first audio frame sent", buckets=LATENCY_BUCKETS
)
TURN_TOTAL = Histogram("vantum_turn_seconds", "Whole assistant turn", buckets=LATENCY_BUCKETS)


def observe_turn(
    *,
    outcome: str,
    error_kind: str | None,
    fallback_tier: int | None,
    first_token_s: float | None,
    first_chunk_s: float | None,
    first_audio_s: float | None,
    total_s: float | None,
) -> None:
    TURNS.labels(outcome).inc()
    if error_kind:
        MODEL_FAILURES.labels(error_kind).inc()
    if fallback_tier:
        FALLBACKS.labels(str(fallback_tier)).inc()
    for histogram, value in (
        (FIRST_TOKEN, first_token_s),
        (FIRST_CHUNK, first_chunk_s),
        (FIRST_AUDIO, first_audio_s),
        (TURN_TOTAL, total_s),
    ):
        if value is not None:
            histogram.observe(value)


# --- outages (issue 10)
LIVE_FAILURES = Counter(
    "vantum_live_failures_total",
    "Channel-layer (Redis) operations that failed or were shed; calls are not affected",
    ["operation"],
)
RECORDER_RETRIES = Counter("vantum_recorder_retries_total", "Database writes retried")
RECORDER_SPOOLED = Counter(
    "vantum_recorder_spooled_total", "Database writes spooled to a local file while the database was down"
)
RECORDER_REPLAYED = Counter("vantum_recorder_replayed_total", "Spooled writes stored after recovery")
RECORDER_LOST = Counter(
    "vantum_recorder_lost_writes_total", "Writes that could not be stored nor spooled (logged as errors)"
)
WEBHOOKS_LOST = Counter(
    "vantum_webhooks_lost_total",
    "Call reports given up: not accepted after all retries or past the age limit (logged as errors)",
)
WEBHOOKS_DELIVERED = Counter("vantum_webhooks_delivered_total", "Call reports accepted by the receiver")
WEBHOOKS_REFUSED = Counter(
    "vantum_webhooks_refused_total",
    "Call reports refused with a 4xx by the receiver (final; logged as errors)",
)
WEBHOOKS_PENDING = Gauge("vantum_webhooks_pending", "Call reports in the outbox waiting for a retry")
RECORDER_PENDING = Gauge("vantum_recorder_spool_pending", "Spooled writes waiting for the database")
CALLS_LOST = Counter("vantum_calls_lost_total", "Calls of crashed processes closed as server_lost")
REJECTED_TURNS = Counter("vantum_turns_rejected_total", "Turns refused by VANTUM_MAX_TURNS_PER_MINUTE")
