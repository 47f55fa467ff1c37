"""Call outcomes: set by the agent or staff, settled at hang-up when nobody set one."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from calls import services
from calls.models import Call

pytestmark = pytest.mark.django_db


def _start() -> uuid.UUID:
    session_id = uuid.uuid4()
    services.call_start(session_id=session_id, started_at=timezone.now(), prompt_version_id=None)
    return session_id


def test_outcome_set_by_agent_is_kept_at_hang_up():
    session_id = _start()
    assert services.call_set_outcome(
        session_id=session_id, outcome="meeting_booked", source="agent", summary="Demo on Tuesday"
    )
    services.call_end(session_id=session_id, reason="hangup")
    assert services.call_settle_outcome(session_id=session_id) == "meeting_booked"
    call = Call.objects.get(session_id=session_id)
    assert (call.outcome, call.outcome_source, call.outcome_summary) == (
        "meeting_booked",
        "agent",
        "Demo on Tuesday",
    )


def test_hang_up_without_outcome_is_no_decision_or_failed():
    quiet = _start()
    broken = _start()
    assert Call.objects.get(session_id=quiet).outcome == ""
    assert services.call_settle_outcome(session_id=quiet) == "no_decision"
    assert services.call_settle_outcome(session_id=broken, failed=True) == "failed"
    assert Call.objects.get(session_id=broken).outcome_source == "system"
    # settling twice changes nothing
    assert services.call_settle_outcome(session_id=broken) == "failed"


def test_unknown_outcome_or_source_is_a_clear_error_and_stores_nothing():
    session_id = _start()
    with pytest.raises(ValueError, match="unknown outcome 'sold'"):
        services.call_set_outcome(session_id=session_id, outcome="sold", source="agent")
    with pytest.raises(ValueError, match="unknown outcome source"):
        services.call_set_outcome(session_id=session_id, outcome="callback", source="robot")
    assert Call.objects.get(session_id=session_id).outcome == ""
    assert services.call_set_outcome(session_id=uuid.uuid4(), outcome="callback", source="agent") is False
