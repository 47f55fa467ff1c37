"""Writes of calls, messages and turn metrics.

Plain synchronous functions; the consumer never calls them between a token and its audio:
``calls.recorder.TranscriptRecorder`` runs them off the audio path.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from calls.models import Call, Message, Role, TurnMetrics

METRIC_FIELDS = (
    "first_token_ms",
    "first_chunk_ms",
    "first_audio_ms",
    "total_ms",
    "chunk_count",
    "prompt_tokens",
    "completion_tokens",
    "retries",
    "error_kind",
)


def call_start(
    *,
    session_id: uuid.UUID,
    started_at: datetime,
    prompt_version_id: int | None,
    prospect: dict[str, str] | None = None,
    voice_id: str = "",
    language: str = "",
    llm_model: str = "",
    tts_engine: str = "",
    stt_engine: str = "",
) -> Call:
    return Call.objects.create(
        session_id=session_id,
        started_at=started_at,
        prompt_version_id=prompt_version_id,
        prospect=prospect or {},
        voice_id=voice_id,
        language=language,
        llm_model=llm_model,
        tts_engine=tts_engine,
        stt_engine=stt_engine,
    )


def call_update_settings(
    *,
    session_id: uuid.UUID,
    prospect: dict[str, str] | None = None,
    voice_id: str | None = None,
    language: str | None = None,
) -> None:
    changes: dict[str, Any] = {}
    if prospect is not None:
        changes["prospect"] = prospect
    if voice_id is not None:
        changes["voice_id"] = voice_id
    if language is not None:
        changes["language"] = language
    if changes:
        Call.objects.filter(session_id=session_id).update(**changes)


def call_end(*, session_id: uuid.UUID, reason: str, ended_at: datetime | None = None) -> None:
    """Mark the call ended. The first end reason wins (a hang-up after a staff end stays staff)."""
    Call.objects.filter(session_id=session_id, ended_at__isnull=True).update(
        ended_at=ended_at or timezone.now(), end_reason=reason
    )


def message_record_user(
    *, session_id: uuid.UUID, seq: int, text: str, source: str, created_at: datetime
) -> Message:
    call = Call.objects.only("id").get(session_id=session_id)
    message, _ = Message.objects.update_or_create(
        call=call,
        seq=seq,
        defaults={
            "role": Role.USER,
            "text": text,
            "raw_text": text,
            "source": source,
            "created_at": created_at,
        },
    )
    return message


@transaction.atomic
def message_record_assistant(
    *,
    session_id: uuid.UUID,
    seq: int,
    text: str,
    raw_text: str,
    chunks: list[dict[str, Any]],
    interrupted: bool,
    fallback_tier: int | None,
    error_kind: str,
    utterance_id: str,
    created_at: datetime,
    metrics: dict[str, Any],
) -> Message:
    """Store one assistant turn and its metrics. Idempotent per (call, seq), so a retried
    write after a lost acknowledgement does not duplicate the turn."""
    call = Call.objects.only("id").get(session_id=session_id)
    message, _ = Message.objects.update_or_create(
        call=call,
        seq=seq,
        defaults={
            "role": Role.ASSISTANT,
            "text": text,
            "raw_text": raw_text,
            "chunks": chunks,
            "interrupted": interrupted,
            "fallback_tier": fallback_tier,
            "error_kind": error_kind,
            "utterance_id": utterance_id,
            "created_at": created_at,
        },
    )
    values = {name: metrics.get(name) for name in METRIC_FIELDS if name in metrics}
    values.setdefault("chunk_count", len(chunks))
    values["error_kind"] = values.get("error_kind") or ""
    TurnMetrics.objects.update_or_create(message=message, defaults={**values, "created_at": created_at})
    return message


def message_mark_interrupted(*, session_id: uuid.UUID, seq: int) -> None:
    """The caller cut the reply off while it was still playing."""
    Message.objects.filter(call__session_id=session_id, seq=seq).update(interrupted=True)
