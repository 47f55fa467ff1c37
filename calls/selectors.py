"""Reads of calls, transcripts and turn metrics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet

from calls.models import Call, Message, Role

EXPORT_FIELDS = (
    "session_id",
    "call_started_at",
    "prompt_version",
    "prospect_name",
    "prospect_company",
    "outcome",
    "end_reason",
    "seq",
    "role",
    "created_at",
    "text",
    "interrupted",
    "fallback_tier",
    "error_kind",
    "first_token_ms",
    "first_chunk_ms",
    "first_audio_ms",
    "total_ms",
    "tool_calls",  # the agent's actions in that reply: name, arguments, ok, result
)


def call_list() -> QuerySet[Call]:
    """Calls with their turn, fallback and interruption counts and duration (one query).
    ``message_count`` 0 marks an empty call: a connection (reload, reconnect) where nobody
    said anything."""
    return Call.objects.select_related("prompt_version").annotate(
        message_count=Count("messages"),
        turns=Count("messages", filter=Q(messages__role=Role.ASSISTANT)),
        fallbacks=Count("messages", filter=Q(messages__fallback_tier__isnull=False)),
        interruptions=Count("messages", filter=Q(messages__interrupted=True)),
        duration=ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField()),
    )


def call_transcript(*, call: Call) -> list[Message]:
    return list(call.messages.select_related("metrics").order_by("seq"))


def live_calls() -> QuerySet[Call]:
    """Calls in progress. A call whose server process stopped beating (crashed) is not
    listed, even before a live process has closed it as ``server_lost``."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from calls.models import ServerInstance

    stale = timezone.now() - timedelta(seconds=3 * settings.VANTUM_HEARTBEAT_SECONDS)
    dead = ServerInstance.objects.filter(Q(stopped_at__isnull=False) | Q(heartbeat_at__lt=stale))
    return (
        call_list()
        .filter(ended_at__isnull=True)
        .exclude(server_instance__in=dead.values("id"))
        .order_by("-started_at")
    )


def export_rows(*, call_ids: Iterable[int], chunk_size: int = 2000) -> Iterator[dict[str, Any]]:
    """One row per message of the given calls, streamed from the database in chunks."""
    messages = (
        Message.objects.filter(call_id__in=list(call_ids))
        .order_by("call__started_at", "call_id", "seq")
        .values_list(
            "call__session_id",
            "call__started_at",
            "call__prompt_version__number",
            "call__prospect__name",
            "call__prospect__company",
            "call__outcome",
            "call__end_reason",
            "seq",
            "role",
            "created_at",
            "text",
            "interrupted",
            "fallback_tier",
            "error_kind",
            "metrics__first_token_ms",
            "metrics__first_chunk_ms",
            "metrics__first_audio_ms",
            "metrics__total_ms",
            "tool_calls",
        )
    )
    for row in messages.iterator(chunk_size=chunk_size):
        yield dict(zip(EXPORT_FIELDS, row, strict=True))
