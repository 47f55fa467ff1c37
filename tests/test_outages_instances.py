"""Server instances: a crashed process's calls are closed as lost, and never listed live."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from calls import services
from calls.models import Call, ServerInstance
from calls.selectors import live_calls

pytestmark = [pytest.mark.django_db]


def _instance(*, beat_ago: float) -> uuid.UUID:
    now = timezone.now()
    instance = ServerInstance.objects.create(
        id=uuid.uuid4(), hostname="h", pid=1, started_at=now, heartbeat_at=now - timedelta(seconds=beat_ago)
    )
    return instance.id


def _call(instance: uuid.UUID | None) -> uuid.UUID:
    session = uuid.uuid4()
    services.call_start(
        session_id=session, started_at=timezone.now(), prompt_version_id=None, server_instance=instance
    )
    return session


def test_a_crashed_process_is_not_listed_live_and_its_calls_are_closed_as_lost(settings):
    settings.VANTUM_HEARTBEAT_SECONDS = 5
    alive, dead = _instance(beat_ago=1), _instance(beat_ago=60)
    kept, ghost, legacy = _call(alive), _call(dead), _call(None)
    assert {c.session_id for c in live_calls()} == {kept, legacy}

    closed = services.server_instances_close_lost(stale_after=timedelta(seconds=15), exclude=alive)
    assert closed == 1
    ended = Call.objects.get(session_id=ghost)
    assert ended.end_reason == "server_lost"
    assert ended.ended_at == ServerInstance.objects.get(id=dead).heartbeat_at
    assert Call.objects.get(session_id=kept).ended_at is None
    # Idempotent: a second sweep (another process) changes nothing.
    assert services.server_instances_close_lost(stale_after=timedelta(seconds=15), exclude=alive) == 0


def test_call_start_is_idempotent_for_a_replayed_write():
    session = _call(None)
    again = services.call_start(session_id=session, started_at=timezone.now(), prompt_version_id=None)
    assert Call.objects.filter(session_id=session).count() == 1
    assert again.session_id == session


def test_unstorable_characters_are_replaced_and_the_rest_is_kept():
    assert services.storable("Hi\x00 there \ud800!") == "Hi\ufffd there \ufffd!"
    nested = {"name": "A\x00B", "n": [1, "x\x00"]}
    assert services.storable(nested) == {"name": "A\ufffdB", "n": [1, "x\ufffd"]}


def test_a_process_found_lost_that_beats_again_keeps_its_new_calls():
    revived, sweeper = _instance(beat_ago=60), _instance(beat_ago=0)
    old = _call(revived)
    assert services.server_instances_close_lost(stale_after=timedelta(seconds=15), exclude=sweeper) == 1
    services.server_instance_beat(instance_id=revived, hostname="h", pid=1, started_at=timezone.now())
    new = _call(revived)

    assert services.server_instances_close_lost(stale_after=timedelta(seconds=15), exclude=sweeper) == 0
    assert services.server_instances_close_lost(stale_after=timedelta(seconds=15), exclude=revived) == 0
    assert Call.objects.get(session_id=new).ended_at is None
    assert Call.objects.get(session_id=old).end_reason == "server_lost"
    instance = ServerInstance.objects.get(id=revived)
    assert (instance.stopped_at, instance.stop_reason) == (None, "")
    assert {c.session_id for c in live_calls()} == {new}


def test_a_sweeper_just_back_from_an_outage_judges_nobody_until_siblings_could_beat():
    silent, sweeper = _instance(beat_ago=60), _instance(beat_ago=0)
    call = _call(silent)
    now = timezone.now()
    back = now - timedelta(seconds=5)  # the sweeper reached the database again 5 s ago
    assert (
        services.server_instances_close_lost(
            stale_after=timedelta(seconds=15), now=now, exclude=sweeper, reachable_since=back
        )
        == 0
    )
    assert Call.objects.get(session_id=call).ended_at is None
    # 15 s of beating later, the sibling had its chance: it is lost.
    later = now + timedelta(seconds=11)
    assert (
        services.server_instances_close_lost(
            stale_after=timedelta(seconds=15), now=later, exclude=sweeper, reachable_since=back
        )
        == 1
    )
    assert Call.objects.get(session_id=call).end_reason == "server_lost"
