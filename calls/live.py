"""Live-call messaging over the channel layer (works across processes with ``REDIS_URL``).

Every call consumer joins ``call_group(session_id)`` and obeys ``{"type": "call.end",
"reason": ...}``; it publishes what happens on the call to ``watch_group(session_id)`` as
``{"type": "call.event", "event": {...}}`` for staff following it live.
Event kinds: ``user`` (text), ``chunk`` (utteranceId, index, text), ``reply`` (utteranceId,
text, interrupted, fallbackTier), ``stop`` (utteranceId), ``ended`` (reason).
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.layers import get_channel_layer

END_CALL = "call.end"
CALL_EVENT = "call.event"


def call_group(session_id: uuid.UUID | str) -> str:
    return f"call-{uuid.UUID(str(session_id)).hex}"


def watch_group(session_id: uuid.UUID | str) -> str:
    return f"watch-{uuid.UUID(str(session_id)).hex}"


async def request_call_end(*, session_id: uuid.UUID | str, reason: str = "staff_ended") -> None:
    """Ask whichever process serves the call to end it."""
    layer = get_channel_layer()
    await layer.group_send(call_group(session_id), {"type": END_CALL, "reason": reason})


async def publish_call_event(*, session_id: uuid.UUID | str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    await layer.group_send(watch_group(session_id), {"type": CALL_EVENT, "event": event})
