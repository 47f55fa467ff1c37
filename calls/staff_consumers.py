"""Staff following a call live: the call's events, as JSON, over ``/ws/staff/calls/<id>/``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from calls import live
from calls.origins import origin_of, staff_origin_allowed


class FollowCallConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        # The staff cookie rides along whatever page opens this socket: only our own pages
        # may read a live transcript (not every site allowed to place calls).
        if not staff_origin_allowed(origin_of(self.scope), self.scope):
            await self.close(code=4003)
            return
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4003)
            return
        if not await self._may_review(user):
            await self.close(code=4003)
            return
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        self.group = live.watch_group(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)  # best effort, bounded
        await self.accept()
        # The call publishes only while someone follows: join first, then say so (and renew).
        self.lease = asyncio.get_running_loop().create_task(self._keep_watching())
        if not await live.layer_reachable():
            # Say so plainly; the page keeps the stored transcript and the layer re-joins the
            # group once Redis is back.
            await self.send_json({"kind": "unavailable", "message": live.UNAVAILABLE_MESSAGE})

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "lease"):
            self.lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.lease
            await live.announce_watcher(session_id=self.session_id, watcher=self.channel_name, watching=False)
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def _keep_watching(self) -> None:
        while True:
            await live.announce_watcher(session_id=self.session_id, watcher=self.channel_name, watching=True)
            await asyncio.sleep(live.WATCH_RENEW_SECONDS)

    async def call_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])

    @staticmethod
    async def _may_review(user: Any) -> bool:
        from channels.db import database_sync_to_async

        return await database_sync_to_async(user.has_perm)("calls.review_transcripts")
