"""Database writes of one call, off the audio path.

The consumer *enqueues* writes (never awaits them between a token and its audio); one
background task per call runs them in order through ``calls.services``. A failed write is
retried with backoff and logged; the call goes on. ``close()`` drains what is queued, so a
caller who hangs up mid-reply still leaves the user message and the partial reply stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

logger = logging.getLogger(__name__)

RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)
_STOP = object()


class TranscriptRecorder:
    def __init__(self, *, call_id: str, retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.call_id = call_id
        self.retry_delays = retry_delays
        self.failed_writes = 0
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def record(self, service: Callable[..., Any], /, **kwargs: Any) -> None:
        """Queue ``service(**kwargs)``; returns at once."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"recorder-{self.call_id}"
            )
        self._queue.put_nowait((service, kwargs))

    async def flush(self) -> None:
        """Wait until every write queued so far has run (or given up)."""
        if self._task is not None:
            done = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(done)
            await asyncio.shield(done)

    async def close(self, wait_seconds: float = 10.0) -> None:
        """Run what is queued, then stop. Shielded: a cancelled consumer still stores its call."""
        if self._task is None:
            return
        self._queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), wait_seconds)
        except TimeoutError:
            logger.error("call=%s transcript writes still pending after %.0fs", self.call_id, wait_seconds)

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            service, kwargs = item  # type: ignore[misc]
            await self._run_with_retries(service, kwargs)

    async def _run_with_retries(self, service: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        run = database_sync_to_async(service)
        for attempt in range(len(self.retry_delays) + 1):
            try:
                await run(**kwargs)
                return
            except Exception:
                if attempt == len(self.retry_delays):
                    self.failed_writes += 1
                    logger.exception(
                        "call=%s giving up on %s after %d attempts",
                        self.call_id,
                        service.__name__,
                        attempt + 1,
                    )
                    return
                logger.warning(
                    "call=%s %s failed (attempt %d), retrying",
                    self.call_id,
                    service.__name__,
                    attempt + 1,
                    exc_info=True,
                )
                await asyncio.sleep(self.retry_delays[attempt])
