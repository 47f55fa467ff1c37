"""The staff live-transcript WebSocket opens only from the server's own pages: a site allowed
to place calls (``VANTUM_ALLOWED_ORIGINS``: ``*``, or a customer's site embedding the call
widget) cannot read a transcript with an admin's cookie, in development either."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from calls import live

pytestmark = [pytest.mark.django_db(transaction=True)]

OWN = b"http://localhost:8000"
CUSTOMER = "https://shop.customer.example"


def _admin_cookie() -> str:
    user = User.objects.create_superuser(
        f"admin{uuid.uuid4().hex[:6]}", "a@example.com", "a-long-pass-phrase"
    )
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _follow(cookie: str, origin: bytes | None, session_id: uuid.UUID) -> tuple[bool, int | None]:
    from vantum.asgi import application

    headers = [(b"cookie", f"sessionid={cookie}".encode()), (b"host", b"localhost:8000")]
    if origin is not None:
        headers.append((b"origin", origin))
    communicator = WebsocketCommunicator(application, f"/ws/staff/calls/{session_id}/", headers=headers)
    result = await communicator.connect(timeout=10)
    if result[0]:
        await live.publish_call_event(
            session_id=session_id, event={"kind": "user", "text": "my card is 4111"}
        )
        assert await communicator.receive_json_from(timeout=5) == {"kind": "user", "text": "my card is 4111"}
    await communicator.disconnect()
    return result


@pytest.mark.parametrize("allowed", [["*"], [CUSTOMER]])
async def test_a_site_allowed_to_call_cannot_read_a_live_transcript(settings, allowed):
    settings.VANTUM_ALLOWED_ORIGINS = allowed
    cookie = await database_sync_to_async(_admin_cookie)()
    session_id = uuid.uuid4()
    assert await _follow(cookie, CUSTOMER.encode(), session_id) == (False, 4003)
    assert await _follow(cookie, b"https://evil.example", session_id) == (False, 4003)
    assert await _follow(cookie, OWN, session_id) == (True, None)


async def test_in_development_another_local_page_cannot_read_a_live_transcript(settings):
    settings.DEBUG = True
    settings.VANTUM_ALLOWED_ORIGINS = []
    cookie = await database_sync_to_async(_admin_cookie)()
    session_id = uuid.uuid4()
    assert await _follow(cookie, b"http://localhost:3000", session_id) == (False, 4003)
    assert await _follow(cookie, b"https://localhost:8000", session_id) == (False, 4003)
    assert await _follow(cookie, OWN, session_id) == (True, None)
    assert await _follow(cookie, None, session_id) == (True, None)  # not a browser: nothing forged
