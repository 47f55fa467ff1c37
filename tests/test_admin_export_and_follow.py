"""Export memory stays flat for 10,000 messages; staff follow a call over a WebSocket."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from calls import live
from calls.exports import csv_lines
from calls.models import Call, Message
from calls.selectors import export_rows
from calls.staff_consumers import FollowCallConsumer


@pytest.mark.django_db
def test_exporting_10000_messages_streams_with_flat_memory():
    now = timezone.now()
    calls = Call.objects.bulk_create([Call(session_id=uuid.uuid4(), started_at=now) for _ in range(100)])
    text = "A realistic sentence that an agent might say on a sales call, repeated. " * 3
    Message.objects.bulk_create(
        Message(call=call, seq=n, role="assistant" if n % 2 else "user", text=text, created_at=now)
        for call in calls
        for n in range(100)
    )
    ids = [c.pk for c in calls]

    tracemalloc.start()
    lines = 0
    for _ in csv_lines(export_rows(call_ids=ids, chunk_size=500)):
        lines += 1
    _, streaming_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    tracemalloc.start()
    materialized = list(csv_lines(export_rows(call_ids=ids)))
    _, materialized_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert lines == 10_001 == len(materialized)
    # Streaming holds one database chunk at a time, not the export.
    assert streaming_peak < materialized_peak / 3
    assert streaming_peak < 8 * 1024 * 1024


def _user(*, staff: bool, reviewer: bool) -> User:
    user = User.objects.create_user(f"u{uuid.uuid4().hex[:8]}", is_staff=staff)
    if reviewer:
        # Transactional tests flush the groups the data migration made; permissions come back.
        user.user_permissions.add(Permission.objects.get(codename="review_transcripts"))
    return user


async def _follow(user: User, session_id: uuid.UUID) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(FollowCallConsumer.as_asgi(), f"/ws/staff/calls/{session_id}/")
    communicator.scope["user"] = user
    communicator.scope["url_route"] = {"kwargs": {"session_id": session_id}}
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_a_reviewer_follows_a_call_as_it_happens():
    user = await database_sync_to_async(_user)(staff=True, reviewer=True)
    session_id = uuid.uuid4()
    communicator = await _follow(user, session_id)
    connected, _ = await communicator.connect()
    assert connected
    await live.publish_call_event(session_id=session_id, event={"kind": "user", "text": "Hello?"})
    assert await communicator.receive_json_from() == {"kind": "user", "text": "Hello?"}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("staff", "reviewer"), [(False, True), (True, False)])
async def test_only_staff_with_the_transcript_permission_may_follow(staff, reviewer):
    user = await database_sync_to_async(_user)(staff=staff, reviewer=reviewer)
    communicator = await _follow(user, uuid.uuid4())
    connected, code = await communicator.connect()
    assert (connected, code) == (False, 4003)
    assert get_channel_layer() is not None


def test_a_follower_lease_runs_out_unless_renewed():
    now = [100.0]
    watchers = live.Watchers(clock=lambda: now[0])
    assert not watchers.watched
    watchers.watch("staff-a")
    watchers.watch("staff-b")
    watchers.unwatch("staff-a")
    assert watchers.watched  # b still follows
    now[0] += live.WATCH_LEASE_SECONDS - 1
    watchers.watch("staff-b")  # renewed in time
    now[0] += live.WATCH_LEASE_SECONDS - 1
    assert watchers.watched
    now[0] += 1  # b's process died: no renewal, the lease runs out
    assert not watchers.watched


@pytest.mark.django_db(transaction=True)
async def test_the_staff_follow_page_announces_itself_to_the_call_and_leaves(use_engines):
    from calls.session import CallSession
    from tests.test_call_session import RecordingPort

    user = await database_sync_to_async(_user)(staff=True, reviewer=True)
    session = CallSession(port=RecordingPort())
    await session.start()
    layer = get_channel_layer()
    call_channel = await layer.new_channel()
    await layer.group_add(live.call_group(session.session_id), call_channel)

    communicator = await _follow(user, session.session_id)
    connected, _ = await communicator.connect()
    assert connected
    announced = await asyncio.wait_for(layer.receive(call_channel), 5)
    assert announced["type"] == live.WATCH
    await communicator.disconnect()
    left = await asyncio.wait_for(layer.receive(call_channel), 5)
    assert (left["type"], left["watcher"]) == (live.UNWATCH, announced["watcher"])
    await session.hangup()
