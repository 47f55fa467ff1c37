"""Ninety days of believable calls for looking at the staff pages (browser screenshots).

Run inside a configured Django process: ``manage.py shell -c "from tests.staff_seed import
seed; seed()"``. Deterministic (fixed random seed), written through the services.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from agents.models import PromptSplit
from agents.selectors import EDITABLE_FIELDS
from agents.services import prompt_version_create, prompt_version_ensure_initial
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
    # One call in progress, for the live page.
    services.call_start(
        session_id=uuid.uuid4(),
        started_at=now - timedelta(seconds=40),
        prompt_version_id=v2.pk,
        prospect={"name": "Sam Lee", "company": "Tailspin Toys"},
    )
