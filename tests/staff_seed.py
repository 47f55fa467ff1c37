"""Ninety days of believable calls for looking at the staff pages (browser screenshots).

Run inside a configured Django process: ``manage.py shell -c "from tests.staff_seed import
seed; seed()"``. Deterministic (fixed random seed), written through the services. Besides
the calls: the agent's tool calls (long arguments and results, a refusal), a recording, and
meetings and callbacks with long e-mails, notes and reasons, so every staff page that shows
them has something wide to fit.
"""

from __future__ import annotations

import json
import math
import random
import uuid
import wave
from datetime import timedelta
from io import BytesIO

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from agents.models import PromptSplit
from agents.selectors import EDITABLE_FIELDS
from agents.services import prompt_version_create, prompt_version_ensure_initial
from bookings import services as bookings
from calls import services

PROSPECTS = [
    ("Dana Ruiz", "Acme Logistics"),
    ("Lee Park", "Northwind Traders"),
    ("Amara Okafor", "Blue Harbor Freight"),
    ("Jonas Weber", "Contoso Manufacturing International"),
    ("Priya Natarajan", "Fabrikam"),
]
OUTCOMES = ["meeting_booked", "callback", "not_interested", "no_decision", "failed"]


def seed(*, days: int = 90, seed_value: int = 7) -> None:
    rng = random.Random(seed_value)
    v1 = prompt_version_ensure_initial(config=settings.VANTUM_LLM)
    values = {field: getattr(v1, field) for field in EDITABLE_FIELDS}
    long_line = (
        "When the prospect asks about pricing, explain the three plans in plain words, mention the "
        "free 14-day trial, and offer to book a short demo with a specialist on a day that suits them."
    )
    v2 = prompt_version_create(
        profile=v1.profile,
        values={**values, "system_prompt": values["system_prompt"] + "\n" + long_line, "temperature": 0.5},
        created_by=None,
        note="Offer the trial early",
    )
    PromptSplit.objects.create(profile=v1.profile, version=v1, weight=1)
    PromptSplit.objects.create(profile=v1.profile, version=v2, weight=1)
    reviewer = User.objects.filter(is_superuser=True).first()
    now = timezone.now()
    for day in range(days):
        for _ in range(rng.randint(0, 6) if day > 7 else rng.randint(3, 9)):
            started = now - timedelta(days=day, minutes=rng.randint(5, 600))
            version = v2 if rng.random() < 0.5 else v1
            name, company = rng.choice(PROSPECTS)
            session_id = uuid.uuid4()
            services.call_start(
                session_id=session_id,
                started_at=started,
                prompt_version_id=version.pk,
                prospect={"name": name, "company": company},
                llm_model="demo",
                tts_engine="piper",
                stt_engine="openai",
            )
            if rng.random() < 0.12:  # a reload: connected, said nothing
                services.call_end(
                    session_id=session_id, reason="hangup", ended_at=started + timedelta(seconds=3)
                )
                continue
            seq = 0
            for turn in range(rng.randint(1, 4)):
                at = started + timedelta(seconds=20 * turn + 2)
                seq += 1
                services.message_record_user(
                    session_id=session_id,
                    seq=seq,
                    text="How much does it cost for a team of twelve?",
                    source="voice",
                    created_at=at,
                )
                seq += 1
                fallback = rng.random() < 0.05
                services.message_record_assistant(
                    session_id=session_id,
                    seq=seq,
                    text="Great question. Plans start at four hundred dollars a month.",
                    raw_text="Great question. ||BREAK|| Plans start at four hundred dollars a month.",
                    chunks=[
                        {"index": 0, "text": "Great question.", "spoken": True, "fallback": False},
                        {
                            "index": 1,
                            "text": "Plans start at four hundred dollars a month.",
                            "spoken": not fallback,
                            "fallback": False,
                        },
                    ],
                    interrupted=rng.random() < 0.1,
                    fallback_tier=rng.choice([1, 1, 2, 3]) if fallback else None,
                    error_kind="timeout" if fallback else "",
                    utterance_id=uuid.uuid4().hex,
                    created_at=at + timedelta(seconds=2),
                    metrics={
                        "first_token_ms": rng.uniform(250, 600),
                        "first_chunk_ms": rng.uniform(350, 800),
                        "first_audio_ms": rng.uniform(450, 1100),
                        "total_ms": rng.uniform(1500, 4000),
                    },
                )
            weights = [0.32, 0.15, 0.3, 0.18, 0.05] if version == v2 else [0.18, 0.15, 0.4, 0.22, 0.05]
            outcome = rng.choices(OUTCOMES, weights)[0]
            services.call_set_outcome(session_id=session_id, outcome=outcome, source="agent")
            reason = (
                "error"
                if outcome == "failed"
                else rng.choice(["hangup", "hangup", "idle_timeout", "staff_ended"])
            )
            services.call_end(
                session_id=session_id,
                reason=reason,
                ended_at=started + timedelta(seconds=rng.randint(40, 600)),
            )
            if reviewer and rng.random() < 0.2:
                from calls.models import Call

                services.call_review(
                    call=Call.objects.get(session_id=session_id),
                    reviewer=reviewer,
                    rating=rng.randint(1, 5),
                    note="Handled the price objection well; could have asked for the meeting sooner.",
                )
    _seed_bookings(now, rng)
    # One call in progress, for the live and follow pages: the agent booked a meeting in it.
    live_id = uuid.uuid4()
    services.call_start(
        session_id=live_id,
        started_at=now - timedelta(seconds=40),
        prompt_version_id=v2.pk,
        prospect={"name": "Sam Lee", "company": "Tailspin Toys"},
    )
    _seed_tool_turns(live_id, now - timedelta(seconds=30))
    # The newest finished call (the call page of the layout test): tool calls and a recording.
    showcase_id = uuid.uuid4()
    services.call_start(
        session_id=showcase_id,
        started_at=now - timedelta(minutes=3),
        prompt_version_id=v2.pk,
        prospect={"name": "Jonas Weber", "company": "Contoso Manufacturing International"},
        llm_model="demo",
        tts_engine="piper",
        stt_engine="openai",
    )
    _seed_tool_turns(showcase_id, now - timedelta(minutes=3))
    services.call_end(session_id=showcase_id, reason="agent_ended", ended_at=now - timedelta(minutes=1))
    services.call_set_outcome(
        session_id=showcase_id, outcome="meeting_booked", source="agent", summary="Demo booked"
    )
    name = default_storage.save(f"recordings/seed/{showcase_id}.wav", ContentFile(_tone_wav(seconds=4)))
    services.call_attach_recording(session_id=showcase_id, name=name, seconds=4.0)


LONG_EMAIL = "jonas.weber.procurement-team@contoso-manufacturing-international.example.com"
LONG_NOTE = (
    "Demo of the outbound dialer for the procurement team; they want to see the CRM export, "
    "the call recordings and the prompt A/B comparison, and asked for pricing for 40 seats."
)


def _seed_bookings(now, rng: random.Random) -> None:
    """Meetings and callbacks for a few recent calls, in the coming working hours."""
    from calls.models import Call

    hours = bookings.working_hours()
    calls = list(Call.objects.filter(outcome="meeting_booked").order_by("-started_at")[:6])
    after = now
    for n, call in enumerate(calls):
        start = bookings.meeting_next_free_start(after=after, duration_minutes=45, hours=hours)
        if start is None:
            break
        bookings.meeting_book(
            session_id=call.session_id,
            start=start,
            duration_minutes=45 if n % 2 else 30,
            attendee_email=LONG_EMAIL if n % 2 else "dana@acme.example",
            notes=LONG_NOTE if n % 3 == 0 else "Short intro call",
            hours=hours,
            store_outcome=False,
        )
        after = start + timedelta(hours=rng.randint(1, 5))
    for n, call in enumerate(Call.objects.filter(outcome="callback").order_by("-started_at")[:6]):
        due = bookings.meeting_next_free_start(after=now + timedelta(days=1 + n), duration_minutes=15)
        if due is not None:
            bookings.callback_schedule(
                session_id=call.session_id,
                when=due,
                reason="Asked to be called back after the quarterly budget review with their CFO "
                "and the head of sales operations"
                if n % 2 == 0
                else "After lunch",
                hours=hours,
                store_outcome=False,
            )


def _seed_tool_turns(session_id: uuid.UUID, started) -> None:
    """A caller agreeing to a time, and the agent's reply with a refused and a done booking."""
    services.message_record_user(
        session_id=session_id,
        seq=1,
        text="Tuesday at ten works for me, send the invite to my procurement address.",
        source="voice",
        created_at=started,
    )
    refused = {
        "ok": False,
        "error": "Tuesday 8 December 2026 at 10:00 (Europe/London) is already booked. The next free "
        "slot is Tuesday 8 December 2026 at 10:30 (Europe/London).",
        "next_free_start": "2026-12-08T10:30:00+00:00",
    }
    booked = {
        "ok": True,
        "booked": "Tuesday 8 December 2026 at 10:30 (Europe/London), 30 minutes",
        "start": "2026-12-08T10:30:00+00:00",
        "attendee_email": LONG_EMAIL,
    }
    arguments = {"start": "2026-12-08T10:00", "duration_minutes": 30, "attendee_email": LONG_EMAIL}
    services.message_record_assistant(
        session_id=session_id,
        seq=2,
        text="Let me book that. Ten was just taken, so you're booked for half past ten.",
        raw_text="Let me book that. ||BREAK|| Ten was just taken, so you're booked for half past ten.",
        chunks=[
            {"index": 0, "text": "Let me book that.", "spoken": True, "fallback": False},
            {
                "index": 1,
                "text": "Ten was just taken, so you're booked for half past ten.",
                "spoken": True,
                "fallback": False,
            },
        ],
        interrupted=False,
        fallback_tier=None,
        error_kind="",
        utterance_id=uuid.uuid4().hex,
        created_at=started + timedelta(seconds=3),
        metrics={
            "first_token_ms": 420.0,
            "first_chunk_ms": 510.0,
            "first_audio_ms": 690.0,
            "total_ms": 3100.0,
        },
        tool_calls=[
            {
                "id": "call_0_0",
                "name": "book_meeting",
                "arguments": json.dumps(arguments),
                "ok": False,
                "result": json.dumps(refused),
            },
            {
                "id": "call_1_0",
                "name": "book_meeting",
                "arguments": json.dumps({**arguments, "start": "2026-12-08T10:30", "notes": LONG_NOTE}),
                "ok": True,
                "result": json.dumps(booked),
            },
        ],
    )


def _tone_wav(*, seconds: float, rate: int = 8000) -> bytes:
    """A stereo WAV: a tone on the caller's channel, another on the agent's."""
    frames = bytearray()
    for n in range(int(seconds * rate)):
        left = int(8000 * math.sin(2 * math.pi * 220 * n / rate))
        right = int(8000 * math.sin(2 * math.pi * 330 * n / rate))
        frames += left.to_bytes(2, "little", signed=True) + right.to_bytes(2, "little", signed=True)
    buffer = BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(frames))
    return buffer.getvalue()
