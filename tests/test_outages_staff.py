"""Staff pages while Redis is down: they say plainly that live features are unavailable,
never a 500 (a real redis-server, stopped)."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from calls import live, services
from calls.models import Call
from calls.staff_consumers import FollowCallConsumer
from tests.outage_servers import StoppableRedis

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]


@pytest.fixture
def redis_down(settings):
    redis = StoppableRedis()
    redis.start()
    redis.stop()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "calls.live.ResilientRedisChannelLayer",
            "CONFIG": {"hosts": [{"address": redis.url, "socket_timeout": None}]},
        }
    }
    channel_layers.backends.clear()
    yield redis
    channel_layers.backends.clear()
    redis.close()


def _live_call() -> Call:
    session_id = uuid.uuid4()
    return services.call_start(session_id=session_id, started_at=timezone.now(), prompt_version_id=None)


@pytest.mark.django_db
def test_ending_a_call_while_redis_is_down_says_so_plainly(admin_client, redis_down):
    call = _live_call()
    assert str(call.session_id) in admin_client.get("/admin/calls/call/live/").content.decode()
    response = admin_client.post(f"/admin/calls/call/{call.pk}/end/", follow=True)
    assert response.status_code == 200
    notes = [str(m) for m in response.context["messages"]]
    assert notes == [f"{call} could not be ended. {live.UNAVAILABLE_MESSAGE}"]


@pytest.mark.django_db(transaction=True)
async def test_following_a_call_while_redis_is_down_says_so_plainly(redis_down):
    def reviewer() -> User:
        user = User.objects.create_user(f"u{uuid.uuid4().hex[:8]}", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="review_transcripts"))
        return user

    user = await database_sync_to_async(reviewer)()
    session_id = uuid.uuid4()
    communicator = WebsocketCommunicator(FollowCallConsumer.as_asgi(), f"/ws/staff/calls/{session_id}/")
    communicator.scope["user"] = user
    communicator.scope["url_route"] = {"kwargs": {"session_id": session_id}}
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert await communicator.receive_json_from(timeout=10) == {
        "kind": "unavailable",
        "message": live.UNAVAILABLE_MESSAGE,
    }
    await communicator.disconnect()
