"""Live-call messaging over the channel layer (works across processes with ``REDIS_URL``).

Every call consumer joins ``call_group(session_id)`` and obeys ``{"type": "call.end",
"reason": ...}``; it publishes what happens on the call to ``watch_group(session_id)`` as
``{"type": "call.event", "event": {...}}`` for staff following it live, but only while
someone follows: a follower announces itself to the call group (``call.watch``, renewed
every ``WATCH_RENEW_SECONDS`` as a lease, ``call.unwatch`` when it leaves). Publishing to
nobody is not free: the in-memory layer scans every channel of the process on each
``group_send`` (quadratic in calls) and Redis pays a round trip per event.
Event kinds: ``user`` (text), ``chunk`` (utteranceId, index, text), ``reply`` (utteranceId,
text, interrupted, fallbackTier), ``stop`` (utteranceId), ``ended`` (reason).

Live features are a convenience; calls are not. Redis being down or slow must never end a
call or lose its rows, so:

- ``ResilientRedisChannelLayer`` (the layer of ``vantum.settings`` when ``REDIS_URL`` is
  set) keeps a consumer's receive loop alive through an outage (it waits and reconnects
  instead of raising, which used to kill every call with close code 1006), makes group
  membership best-effort with a timeout, re-joins the groups of this process once Redis is
  back (a restarted Redis has forgotten them), and uses a bounded pool that makes a burst
  wait for a connection instead of opening thousands.
- The functions below never raise on a channel-layer failure: publishing sheds the event
  (counted in ``/metrics``), asking for a call end returns False so staff pages can say
  plainly that live features are unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from calls import telemetry

logger = logging.getLogger(__name__)

END_CALL = "call.end"
CALL_EVENT = "call.event"
WATCH = "call.watch"
UNWATCH = "call.unwatch"
# A follower renews its lease well before it runs out, so one lost renewal costs nothing; a
# follower whose process died stops costing events one lease later.
WATCH_RENEW_SECONDS = 10.0
WATCH_LEASE_SECONDS = 30.0
UNAVAILABLE_MESSAGE = (
    "Live call features (follow, end) are unavailable right now: the message server (Redis) "
    "cannot be reached. Calls go on and are stored; try again in a moment."
)
# A live event is worth little after this long; a control message (end a call) a bit more.
PUBLISH_TIMEOUT = 1.0
CONTROL_TIMEOUT = 3.0
MEMBERSHIP_TIMEOUT = 2.0

LAYER_ERRORS = (RedisError, OSError, TimeoutError, ConnectionError)


def call_group(session_id: uuid.UUID | str) -> str:
    return f"call-{uuid.UUID(str(session_id)).hex}"


def watch_group(session_id: uuid.UUID | str) -> str:
    return f"watch-{uuid.UUID(str(session_id)).hex}"


async def request_call_end(*, session_id: uuid.UUID | str, reason: str = "staff_ended") -> bool:
    """Ask whichever process serves the call to end it. False when the request could not be
    delivered (channel layer unreachable); the caller shows ``UNAVAILABLE_MESSAGE``."""
    return await _group_send(
        call_group(session_id), {"type": END_CALL, "reason": reason}, timeout=CONTROL_TIMEOUT, what="end"
    )


async def publish_call_event(*, session_id: uuid.UUID | str, event: dict[str, Any]) -> bool:
    """Tell staff following the call. Shed (and counted) when the layer is down or saturated."""
    return await _group_send(
        watch_group(session_id), {"type": CALL_EVENT, "event": event}, timeout=PUBLISH_TIMEOUT, what="event"
    )


async def announce_watcher(*, session_id: uuid.UUID | str, watcher: str, watching: bool) -> bool:
    """Tell the call that ``watcher`` (a follower's channel name) follows it, or has left."""
    message = {"type": WATCH if watching else UNWATCH, "watcher": watcher}
    return await _group_send(call_group(session_id), message, timeout=CONTROL_TIMEOUT, what="watch")


class Watchers:
    """Who follows one call, as leases: ``watched`` is true while one is unexpired."""

    __slots__ = ("_clock", "_until")

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def watch(self, watcher: str) -> None:
        self._until[watcher] = self._clock() + WATCH_LEASE_SECONDS

    def unwatch(self, watcher: str) -> None:
        self._until.pop(watcher, None)

    @property
    def watched(self) -> bool:
        if not self._until:
            return False
        now = self._clock()
        for watcher in [w for w, until in self._until.items() if until <= now]:
            del self._until[watcher]
        return bool(self._until)


class LiveCallControls:
    """Channel-layer handlers shared by every call consumer (browser, phone): staff end the
    call, followers come and go. The consumer sets ``session`` once the call has started."""

    session: Any = None

    async def call_end(self, message: dict[str, Any]) -> None:
        """End this call (staff action, expiry on another process)."""
        if self.session is not None:
            await self.session.end(reason=message.get("reason") or "staff_ended")

    async def call_watch(self, message: dict[str, Any]) -> None:
        if self.session is not None:
            self.session.watchers.watch(str(message.get("watcher", "")))

    async def call_unwatch(self, message: dict[str, Any]) -> None:
        if self.session is not None:
            self.session.watchers.unwatch(str(message.get("watcher", "")))


async def layer_reachable() -> bool:
    """Whether live features work right now (Redis answers within a second)."""
    layer = get_channel_layer()
    if layer is None:
        return False
    if not isinstance(layer, RedisChannelLayer):
        return True  # the in-memory layer of a single process
    try:
        await asyncio.wait_for(layer.connection(0).ping(), PUBLISH_TIMEOUT)
        return True
    except LAYER_ERRORS:
        return False


async def _group_send(group: str, message: dict[str, Any], *, timeout: float, what: str) -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        await asyncio.wait_for(layer.group_send(group, message), timeout)
        return True
    except LAYER_ERRORS:
        telemetry.LIVE_FAILURES.labels(what).inc()
        _log_rate_limited(f"live: {what} to {group} not delivered (channel layer unavailable or busy)")
        return False


_last_logged: dict[str, float] = {}


def _log_rate_limited(message: str, *, every: float = 5.0) -> None:
    """One line per kind every few seconds: an outage at 1,000 calls must not flood the log."""
    key = message.split(" to ", 1)[0]
    now = time.monotonic()
    if now - _last_logged.get(key, 0.0) >= every:
        _last_logged[key] = now
        logger.warning("%s", message)


class ResilientRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` that survives Redis outages and bursts (see the module docstring).

    Extra config keys (``CHANNEL_LAYERS["default"]["CONFIG"]``): ``max_connections`` (pool
    size per event loop) and ``pool_timeout`` (seconds a command waits for a free connection
    before failing; failures are handled by the callers above, never by a call).
    """

    def __init__(self, *args: Any, max_connections: int = 64, pool_timeout: float = 5.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        # group -> channels of *this process* in it, to re-join after Redis restarts empty.
        self._memberships: dict[str, set[str]] = {}
        self._failed_at: float | None = None

    def create_pool(self, index: int) -> aioredis.ConnectionPool:
        host = dict(self.hosts[index])
        address = host.pop("address", None)
        host.setdefault("socket_connect_timeout", 2.0)
        host.setdefault("retry_on_timeout", False)
        options = {"max_connections": self.max_connections, "timeout": self.pool_timeout, **host}
        if address is not None:
            return aioredis.BlockingConnectionPool.from_url(address, **options)
        return aioredis.BlockingConnectionPool(**options)

    @property
    def available(self) -> bool:
        """False while this process cannot reach Redis (as last seen by a command)."""
        return self._failed_at is None

    async def group_add(self, group: str, channel: str) -> None:
        """Best effort, bounded in time: membership is remembered and re-applied when Redis
        is back, so a call connects (and stays connected) through an outage."""
        self._memberships.setdefault(group, set()).add(channel)
        await self._best_effort("group_add", super().group_add(group, channel))

    async def group_discard(self, group: str, channel: str) -> None:
        members = self._memberships.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self._memberships[group]
        # Redis also expires memberships (group_expiry); a failed discard only costs a
        # message sent to a channel nobody reads.
        await self._best_effort("group_discard", super().group_discard(group, channel))

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        try:
            await super().group_send(group, message)
        except LAYER_ERRORS:
            self._mark_failed()
            raise

    async def _best_effort(self, what: str, operation: Any) -> None:
        try:
            await asyncio.wait_for(operation, MEMBERSHIP_TIMEOUT)
        except LAYER_ERRORS:
            self._mark_failed()
            telemetry.LIVE_FAILURES.labels(what).inc()
            _log_rate_limited(f"live: {what} to a group failed (channel layer unavailable)")

    def _mark_failed(self) -> None:
        if self._failed_at is None:
            self._failed_at = time.monotonic()
            logger.error("live: channel layer unreachable; calls go on without live features")

    async def receive_single(self, channel: str) -> tuple[str, dict[str, Any]]:
        """Wait through an outage instead of raising (a raise here ends every consumer of the
        process). Backs off up to 2 s between attempts; once Redis answers again, re-joins
        this process's groups before receiving (a restarted Redis has forgotten them)."""
        delay = 0.1
        while True:
            try:
                if self._failed_at is not None:
                    await self._recover(channel)
                return await super().receive_single(channel)
            except LAYER_ERRORS:
                self._mark_failed()
                telemetry.LIVE_FAILURES.labels("receive").inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _recover(self, channel: str) -> None:
        await asyncio.wait_for(self.connection(self.consistent_hash(channel)).ping(), MEMBERSHIP_TIMEOUT)
        for group, channels in list(self._memberships.items()):
            for member in list(channels):
                await asyncio.wait_for(super().group_add(group, member), MEMBERSHIP_TIMEOUT)
        outage = time.monotonic() - (self._failed_at or time.monotonic())
        self._failed_at = None
        logger.warning("live: channel layer reachable again after %.1fs; groups re-joined", outage)
