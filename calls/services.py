"""Writes of calls, messages and turn metrics.

Plain synchronous functions; the consumer never calls them between a token and its audio:
``calls.recorder.TranscriptRecorder`` runs them off the audio path.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from calls.models import Call, EndReason, Message, Outcome, OutcomeSource, Role, ServerInstance, TurnMetrics

logger = logging.getLogger(__name__)

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


# What PostgreSQL cannot store in text or jsonb: NUL, and lone surrogates (not UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable(value: Any) -> Any:
    """``value`` with every character the database cannot store replaced by U+FFFD, in
    strings nested in dicts and lists too. Everything else is kept as it was: no text is
    dropped because one character of it was unstorable (a NUL in a typed turn used to lose
    the whole message)."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value) if _UNSTORABLE.search(value) else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


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
    server_instance: uuid.UUID | None = None,
    transport: str = "browser",
    phone_number: str = "",
) -> Call:
    """Create the call's row. Idempotent per ``session_id``: a write replayed from the spool
    (``calls.recorder``) after its first attempt did reach the database changes nothing."""
    call, created = Call.objects.get_or_create(
        session_id=session_id,
        defaults={
            "started_at": started_at,
            "prompt_version_id": prompt_version_id,
            "prospect": storable(prospect or {}),
            "voice_id": storable(voice_id),
            "language": storable(language),
            "llm_model": llm_model,
            "tts_engine": tts_engine,
            "stt_engine": stt_engine,
            "server_instance": server_instance,
            "transport": transport,
            "phone_number": phone_number,
        },
    )
    if len(_CALL_PKS) >= _CALL_PKS_MAX:
        _CALL_PKS.pop(next(iter(_CALL_PKS)))
    _CALL_PKS[session_id] = call.pk
    if created and server_instance is not None:
        _server_instance_ensure(instance_id=server_instance, session_id=session_id)
    return call


# Instances whose row is known to exist: after the first call of a process, no extra query.
_KNOWN_INSTANCES: set[uuid.UUID] = set()
_KNOWN_INSTANCES_MAX = 1_000


def _server_instance_ensure(*, instance_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Give the call's process a row if it has none yet. A process that started while the
    database was down, spooled its calls and crashed before its first beat never writes
    one: its calls, replayed by another process, would name an unknown instance that the
    lost-process sweep and the live list never see (ghosts "in progress" forever). The row
    is dated now: its process has three beats from now to prove it is alive (its own beat
    fills in the rest), else its calls are closed as ``server_lost``."""
    if instance_id in _KNOWN_INSTANCES:
        return
    now = timezone.now()
    _, created = ServerInstance.objects.get_or_create(
        id=instance_id, defaults={"started_at": now, "heartbeat_at": now}
    )
    if created:
        logger.warning("call=%s: its server instance %s had no row; recorded now", session_id, instance_id)
    if len(_KNOWN_INSTANCES) >= _KNOWN_INSTANCES_MAX:
        _KNOWN_INSTANCES.clear()
    _KNOWN_INSTANCES.add(instance_id)


def call_update_settings(
    *,
    session_id: uuid.UUID,
    prospect: dict[str, str] | None = None,
    voice_id: str | None = None,
    language: str | None = None,
) -> None:
    changes: dict[str, Any] = {}
    if prospect is not None:
        changes["prospect"] = storable(prospect)
    if voice_id is not None:
        changes["voice_id"] = storable(voice_id)
    if language is not None:
        changes["language"] = storable(language)
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
    text = storable(text)
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
            "text": storable(text),
            "raw_text": storable(raw_text),
            "chunks": storable(chunks),
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


def message_mark_interrupted(*, session_id: uuid.UUID, seq: int, text: str | None = None) -> None:
    """The caller cut the reply off while it was still playing (barge-in, hang-up); ``text``
    is what they had heard of it by then, when known."""
    changes: dict[str, Any] = {"interrupted": True}
    if text is not None:
        changes["text"] = storable(text)
    Message.objects.filter(call__session_id=session_id, seq=seq).update(**changes)


def message_keep_heard(*, session_id: uuid.UUID, seq: int, text: str, heard: list[int]) -> None:
    """A barge-in cut the agent's reply ``seq`` while the caller's side still had audio of
    it to play: keep as said only ``text``, the chunks in ``heard`` (indexes); the rest was
    sent but never played. Idempotent."""
    message = Message.objects.filter(call__session_id=session_id, seq=seq).first()
    if message is None:
        return
    keep = set(heard)
    chunks = [
        {**chunk, "spoken": bool(chunk.get("spoken")) and chunk.get("index") in keep}
        for chunk in message.chunks
    ]
    Message.objects.filter(pk=message.pk).update(chunks=chunks, text=storable(text), interrupted=True)


def server_instance_beat(
    *, instance_id: uuid.UUID, hostname: str, pid: int, started_at: datetime, now: datetime | None = None
) -> None:
    """Record that this server process is alive (creates its row on the first beat). A
    process that a sibling wrongly found lost (it could not beat for a while) is alive
    again: both stop marks are cleared, or its new calls would be closed as lost."""
    now = now or timezone.now()
    updated = ServerInstance.objects.filter(id=instance_id).update(
        heartbeat_at=now, stopped_at=None, stop_reason="", hostname=hostname, pid=pid, started_at=started_at
    )
    if not updated:
        ServerInstance.objects.get_or_create(
            id=instance_id,
            defaults={"hostname": hostname, "pid": pid, "started_at": started_at, "heartbeat_at": now},
        )


def server_instance_stop(*, instance_id: uuid.UUID, reason: str = "stopped") -> None:
    """A clean stop: this process's calls were ended; it no longer beats."""
    ServerInstance.objects.filter(id=instance_id).update(stopped_at=timezone.now(), stop_reason=reason)


def server_instances_close_lost(
    *,
    stale_after: timedelta,
    now: datetime | None = None,
    exclude: uuid.UUID | None = None,
    reachable_since: datetime | None = None,
) -> int:
    """Close the calls left "in progress" by server processes that stopped beating (crash,
    SIGKILL, OOM) with reason ``server_lost``, ended at the last beat. Returns the number of
    calls closed. Safe with several processes running it at once: each update only touches
    rows still open, and an instance is marked lost only while its beat is still stale.

    ``reachable_since``: the sweeping process has reached the database at every beat since
    then. Silence is only evidence of a crash while the database could be reached: after an
    outage every process's last beat is old, so nobody is judged until the sweeper itself
    has been beating for ``stale_after`` (its siblings had that long to beat again).
    """
    now = now or timezone.now()
    cutoff = now - stale_after
    if reachable_since is not None and reachable_since > cutoff:
        return 0
    lost = ServerInstance.objects.filter(stopped_at__isnull=True, heartbeat_at__lt=cutoff)
    if exclude is not None:
        lost = lost.exclude(id=exclude)
    closed = 0
    for instance in list(lost):
        with transaction.atomic():
            # Re-checked under the row lock: a beat that landed since the read wins.
            marked = ServerInstance.objects.filter(
                id=instance.id, stopped_at__isnull=True, heartbeat_at__lt=cutoff
            ).update(stopped_at=now, stop_reason=EndReason.LOST)
            if marked:
                closed += Call.objects.filter(server_instance=instance.id, ended_at__isnull=True).update(
                    ended_at=instance.heartbeat_at, end_reason=EndReason.LOST
                )
    # A call whose row arrived (from a spool) after its process was already found lost;
    # never a process that beat again since (it is alive, its calls too).
    stopped = ServerInstance.objects.filter(stop_reason=EndReason.LOST, heartbeat_at__lt=cutoff)
    if exclude is not None:
        stopped = stopped.exclude(id=exclude)
    closed += Call.objects.filter(server_instance__in=stopped.values("id"), ended_at__isnull=True).update(
        ended_at=now, end_reason=EndReason.LOST
    )
    return closed


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


def call_review(
    *,
    call: Call,
    reviewer: Any | None,
    rating: int | None,
    note: str,
    outcome: str | None = None,
) -> Call:
    """Store a reviewer's 1–5 rating and note; an ``outcome`` different from the stored one
    is a staff correction (source ``staff``). Raises ``ValueError`` for a rating outside 1..5
    or an unknown outcome, before anything is written."""
    if rating is not None and not 1 <= rating <= 5:
        raise ValueError("the rating must be between 1 and 5")
    if outcome and outcome not in Outcome.values:
        raise ValueError(f"unknown outcome {outcome!r}")
    with transaction.atomic():
        call.rating = rating
        call.review_note = note.strip()
        call.reviewed_by = reviewer if reviewer is not None and reviewer.is_authenticated else None
        call.reviewed_at = timezone.now()
        fields = ["rating", "review_note", "reviewed_by", "reviewed_at"]
        if outcome and outcome != call.outcome:
            call.outcome, call.outcome_source = outcome, OutcomeSource.STAFF
            fields += ["outcome", "outcome_source"]
        call.save(update_fields=fields)
        if "outcome" in fields and outcome == Outcome.DO_NOT_CALL:
            from telephony.services import do_not_call_for_call  # a phone call's number is listed

            do_not_call_for_call(session_id=call.session_id)
    return call


def call_attach_recording(*, session_id: uuid.UUID, name: str, seconds: float) -> bool:
    """Point the call at its stored recording (a name in the default file storage)."""
    return Call.objects.filter(session_id=session_id).update(recording=name, recording_seconds=seconds) > 0


def call_delete_recordings(*, calls: Any) -> int:
    """Delete the recording files of ``calls`` (a queryset) from storage; returns how many.
    A file already gone is not an error (retention must not stop on one missing file)."""
    from django.core.files.storage import default_storage

    deleted = 0
    for name in calls.exclude(recording="").values_list("recording", flat=True).iterator():
        try:
            default_storage.delete(name)
            deleted += 1
        except OSError:
            logger.warning("recording %s could not be deleted", name, exc_info=True)
    return deleted
