"""The call's write queue (``TranscriptRecorder``): writes are stored in the order they were
queued, also those queued after the queue had gone idle (it then holds no task), and
``close`` stores everything queued before it returns."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from calls import recorder as recorder_module
from calls import services
from calls.models import Call, Message
from calls.recorder import TranscriptRecorder, decode_line, service_key

pytestmark = pytest.mark.django_db(transaction=True)


def _say(recorder: TranscriptRecorder, session_id: uuid.UUID, seq: int, text: str) -> None:
    recorder.record(
        services.message_record_user,
        session_id=session_id,
        seq=seq,
        text=text,
        source="text",
        created_at=timezone.now(),
    )


@database_sync_to_async
def _stored(session_id: uuid.UUID) -> tuple[list[tuple[int, str]], str]:
    call = Call.objects.get(session_id=session_id)
    messages = Message.objects.filter(call=call).order_by("seq").values_list("seq", "text")
    return list(messages), call.end_reason


async def test_writes_queued_after_an_idle_pause_are_stored_in_order():
    session_id = uuid.uuid4()
    recorder = TranscriptRecorder(call_id=str(session_id))
    recorder.record(
        services.call_start, session_id=session_id, started_at=timezone.now(), prompt_version_id=None
    )
    _say(recorder, session_id, 1, "Hello")
    await recorder.flush()
    assert recorder.pending == 0

    await asyncio.sleep(0.05)  # idle: the next writes start the queue again
    for seq in range(2, 12):  # queued at once: each runs after the one before it
        _say(recorder, session_id, seq, f"turn {seq}")
    recorder.record(services.call_end, session_id=session_id, reason="hangup", ended_at=timezone.now())
    await recorder.close(wait_seconds=10)

    assert recorder.pending == 0
    assert recorder.failed_writes == 0
    assert await _stored(session_id) == (
        [(1, "Hello")] + [(seq, f"turn {seq}") for seq in range(2, 12)],
        "hangup",
    )


async def test_close_on_a_recorder_that_never_wrote_returns_at_once():
    recorder = TranscriptRecorder(call_id=str(uuid.uuid4()))
    await asyncio.wait_for(recorder.close(wait_seconds=10), 1)
    await asyncio.wait_for(recorder.flush(), 1)
    assert recorder.pending == 0


def _slow_write(*, seconds: float) -> None:
    """Stands in for a write the database is slow to take (a lock, a failing-over server)."""
    time.sleep(seconds)


async def test_writes_after_a_close_that_spooled_follow_the_spooled_ones(monkeypatch, settings, tmp_path):
    settings.VANTUM_SPOOL_DIR = str(tmp_path)
    monkeypatch.setattr(recorder_module, "SPOOLABLE", recorder_module.SPOOLABLE | {service_key(_slow_write)})
    session_id = uuid.uuid4()
    recorder = TranscriptRecorder(call_id=str(session_id))
    recorder.record(_slow_write, seconds=1.0)
    _say(recorder, session_id, 1, "queued behind the slow write")
    await recorder.close(wait_seconds=0.1)  # gives up waiting: the rest goes to the spool
    _say(recorder, session_id, 2, "a write made after the hang-up")  # e.g. the phone call's finish
    await recorder.flush()

    spooled = [decode_line(line) for line in (tmp_path / f"{session_id}.jsonl").read_text().splitlines()]
    assert [(service.split(":")[1], kwargs.get("seq")) for service, kwargs in spooled] == [
        ("_slow_write", None),
        ("message_record_user", 1),
        ("message_record_user", 2),
    ]
    assert recorder.failed_writes == 0
