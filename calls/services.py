"""Writes of calls, messages and turn metrics.

Plain synchronous functions; the consumer never calls them between a token and its audio:
``calls.recorder.TranscriptRecorder`` runs them off the audio path.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from calls.models import Call, Message, Outcome, OutcomeSource, Role, TurnMetrics

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


# session id -> primary key, filled by call_start: every later write of the call saves a
# lookup. Bounded: a long-running process forgets the oldest calls (they fall back to a query).
_CALL_PKS: dict[uuid.UUID, int] = {}
_CALL_PKS_MAX = 20_000


def _call_pk(session_id: uuid.UUID) -> int:
    pk = _CALL_PKS.get(session_id)
    if pk is None:
        pk = Call.objects.values_list("pk", flat=True).get(session_id=session_id)
    return pk


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
    call = Call.objects.create(
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
    if len(_CALL_PKS) >= _CALL_PKS_MAX:
        _CALL_PKS.pop(next(iter(_CALL_PKS)))
    _CALL_PKS[session_id] = call.pk
    return call


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
    _CALL_PKS.pop(session_id, None)


def message_record_user(
    *, session_id: uuid.UUID, seq: int, text: str, source: str, created_at: datetime
) -> Message:
    values = {"role": Role.USER, "text": text, "raw_text": text, "source": source, "created_at": created_at}
    return _message_save(call_pk=_call_pk(session_id), seq=seq, values=values)


def _message_save(*, call_pk: int, seq: int, values: dict[str, Any]) -> Message:
    """Insert first (one statement on the hot path); a retried write updates instead."""
    try:
        with transaction.atomic():
            return Message.objects.create(call_id=call_pk, seq=seq, **values)
    except IntegrityError:
        Message.objects.filter(call_id=call_pk, seq=seq).update(**values)
        return Message.objects.get(call_id=call_pk, seq=seq)


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
    tool_calls: list[dict[str, Any]] | None = None,
) -> Message:
    """Store one assistant turn and its metrics. Idempotent per (call, seq), so a retried
    write after a lost acknowledgement does not duplicate the turn."""
    message = _message_save(
        call_pk=_call_pk(session_id),
        seq=seq,
        values={
            "role": Role.ASSISTANT,
            "text": text,
            "raw_text": raw_text,
            "chunks": chunks,
            "interrupted": interrupted,
            "fallback_tier": fallback_tier,
            "error_kind": error_kind,
            "utterance_id": utterance_id,
            "created_at": created_at,
            "tool_calls": tool_calls or [],
        },
    )
    values = {name: metrics.get(name) for name in METRIC_FIELDS if name in metrics}
    values.setdefault("chunk_count", len(chunks))
    values["error_kind"] = values.get("error_kind") or ""
    values["created_at"] = created_at
    try:
        with transaction.atomic():
            TurnMetrics.objects.create(message=message, **values)
    except IntegrityError:
        TurnMetrics.objects.filter(message=message).update(**values)
    return message


def message_mark_interrupted(*, session_id: uuid.UUID, seq: int) -> None:
    """The caller cut the reply off while it was still playing."""
    Message.objects.filter(call__session_id=session_id, seq=seq).update(interrupted=True)


def call_set_outcome(*, session_id: uuid.UUID, outcome: str, source: str, summary: str = "") -> bool:
    """Store what the call achieved (an ``Outcome`` value) and who decided it.

    Raises ``ValueError`` for an unknown outcome or source, so a tool can hand the model a
    clear error. Later calls overwrite earlier ones (the agent may book a meeting after first
    scheduling a callback; staff correct the agent). Returns False when no such call exists.
    """
    if outcome not in Outcome.values:
        raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(Outcome.values)}")
    if source not in OutcomeSource.values:
        raise ValueError(f"unknown outcome source {source!r}")
    changes: dict[str, Any] = {"outcome": outcome, "outcome_source": source}
    if summary:
        changes["outcome_summary"] = summary
    return Call.objects.filter(session_id=session_id).update(**changes) > 0


def call_settle_outcome(*, session_id: uuid.UUID, failed: bool = False) -> str:
    """At the end of a call, give it an outcome if nobody set one: ``failed`` when the call
    ended on a technical failure, else ``no_decision`` (source ``system``). An outcome set by
    the agent or staff is kept. Returns the call's outcome afterwards ("" if no such call).

    Called by the call layer once the call has ended (after ``call_end``); idempotent.
    """
    default = Outcome.FAILED if failed else Outcome.NO_DECISION
    Call.objects.filter(session_id=session_id, outcome="").update(
        outcome=default, outcome_source=OutcomeSource.SYSTEM
    )
    return Call.objects.filter(session_id=session_id).values_list("outcome", flat=True).first() or ""
