"""Database writes of one call, off the audio path, and never lost to a database outage.

The consumer *enqueues* writes (never awaits them between a token and its audio); one
background task per call runs them in order through ``calls.services``. ``close()`` drains
what is queued, so a caller who hangs up mid-reply still leaves the user message and the
partial reply stored.

When the database cannot be reached (``OperationalError``/``InterfaceError``: stopped,
restarting, network cut), the head write is retried with backoff, in order, for
``VANTUM_SPOOL_AFTER_SECONDS``; past that (or past ``VANTUM_RECORDER_MAX_PENDING`` queued
writes: bounded memory), the call's writes go, in order, to a local spool file
(``VANTUM_SPOOL_DIR/<session id>.jsonl``, one JSON line per write, fsync'd). The process
heartbeat (``calls.instances``) replays spool files as soon as the database answers, and at
the next start after a crash. Every service is idempotent per call and sequence number, so
replaying a write that had in fact reached the database changes nothing.

A write that fails for another reason (bad data) is retried a few times, then logged as an
error and counted in ``vantum_recorder_lost_writes_total``; so is a write that cannot be
spooled (disk full).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError

from calls import telemetry

logger = logging.getLogger(__name__)

RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)
UNREACHABLE = (OperationalError, InterfaceError)
# The services a spool line may name, "module:function" (never an arbitrary callable read
# from disk). Each is idempotent per call (and sequence number), so a replay is harmless.
SPOOLABLE = frozenset(
    {
        "calls.services:call_start",
        "calls.services:call_update_settings",
        "calls.services:call_end",
        "calls.services:call_settle_outcome",
        "calls.services:message_record_user",
        "calls.services:message_record_assistant",
        "calls.services:message_mark_interrupted",
        "calls.services:message_keep_heard",
        "calls.services:call_attach_recording",
        "bookings.services:bookings_link_call",
        "bookings.services:call_outcome_from_agent",
        "telephony.services:phone_call_finish",
        "calls.webhook:webhook_delivery_create",
    }
)


def service_key(service: Callable[..., Any]) -> str:
    return f"{getattr(service, '__module__', '')}:{getattr(service, '__name__', '')}"


def service_for_key(key: str) -> Callable[..., Any]:
    if ":" not in key:
        key = f"calls.services:{key}"  # lines written before keys named their module
    if key not in SPOOLABLE:
        raise KeyError(key)
    module, name = key.split(":", 1)
    return getattr(importlib.import_module(module), name)


def database_unreachable(error: BaseException) -> bool:
    return isinstance(error, UNREACHABLE)


class TranscriptRecorder:
    """One call's write queue. ``record`` queues, one task runs the writes in order.

    The task runs only while writes are queued (it ends when the queue is empty and the next
    ``record`` starts another), and the queue exists only while it holds something: an idle
    call holds neither (a task, its coroutine and a queue cost ~4 KB a call)."""

    def __init__(
        self,
        *,
        call_id: str,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        spool_after: float | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.call_id = call_id
        self.retry_delays = retry_delays
        self.spool_after = settings.VANTUM_SPOOL_AFTER_SECONDS if spool_after is None else spool_after
        self.max_pending = settings.VANTUM_RECORDER_MAX_PENDING if max_pending is None else max_pending
        self.failed_writes = 0
        self.spooled_writes = 0
        self.spooling = False  # once a write is spooled, the rest of the call follows it (order)
        # Writes (service, kwargs) and flush markers (futures), in order; None when empty.
        self._queue: deque[object] | None = None
        self._task: asyncio.Task[None] | None = None
        self._current: tuple[Callable[..., Any], dict[str, Any]] | None = None

    def record(self, service: Callable[..., Any], /, **kwargs: Any) -> None:
        """Queue ``service(**kwargs)``; returns at once."""
        self._enqueue((service, kwargs))

    def _enqueue(self, item: object) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        if self._task is None or self._task.done():  # done: cancelled before it could run
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"recorder-{self.call_id}"
            )

    @property
    def pending(self) -> int:
        return len(self._queue or ()) + (self._current is not None)

    async def flush(self) -> None:
        """Wait until every write queued so far has run (stored, spooled or given up)."""
        if self._task is not None:
            done = asyncio.get_running_loop().create_future()
            self._enqueue(done)
            await asyncio.shield(done)

    async def close(self, wait_seconds: float = 10.0) -> None:
        """Run what is queued, then return. Shielded: a cancelled consumer still stores its
        call. What is still pending after ``wait_seconds`` is spooled, not dropped."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), wait_seconds)
        except TimeoutError:
            logger.warning(
                "call=%s %d writes still pending after %.0fs: spooling them",
                self.call_id,
                self.pending,
                wait_seconds,
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._spool_remaining()

    def _spool_remaining(self) -> None:
        """Spool what is still queued; this call's later writes then follow it into the
        spool, so replay stores them in the order they were made."""
        items = [self._current] if self._current is not None else []
        self._current = None
        queue, self._queue = self._queue or deque(), None
        for item in queue:
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
            else:
                items.append(item)  # type: ignore[arg-type]
        if items:
            self.spooling = True
        self._spool(items)

    async def _drain(self) -> None:
        try:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, asyncio.Future):
                    if not item.done():
                        item.set_result(None)
                    continue
                self._current = item  # type: ignore[assignment]
                service, kwargs = item  # type: ignore[misc]
                if self.spooling:
                    self._spool([item])  # type: ignore[list-item]
                else:
                    await self._run_with_retries(service, kwargs)
                self._current = None
            self._queue = None  # empty: the next record() makes a new one
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _run_with_retries(self, service: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        # Any worker thread (each keeps its own connection): calls' writes run in parallel
        # instead of queueing behind one thread; each call's writes stay in order (awaited).
        run = database_sync_to_async(service, thread_sensitive=False)
        first_failure: float | None = None
        attempt = 0
        while True:
            try:
                await run(**kwargs)
                return
            except Exception as error:
                attempt += 1
                telemetry.RECORDER_RETRIES.inc()
                now = time.monotonic()
                first_failure = first_failure or now
                if database_unreachable(error):
                    # Wait in order; spool once the outage outlasts the budget or the queue grows.
                    if now - first_failure >= self.spool_after or self.pending > self.max_pending:
                        logger.error(
                            "call=%s database unreachable for %.1fs (%s): spooling this call's writes",
                            self.call_id,
                            now - first_failure,
                            type(error).__name__,
                        )
                        self.spooling = True
                        self._spool([(service, kwargs)])
                        return
                    delay = self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)]
                    await asyncio.sleep(delay)
                    continue
                if attempt > len(self.retry_delays):
                    self.failed_writes += 1
                    telemetry.RECORDER_LOST.inc()
                    logger.exception(
                        "call=%s LOST WRITE: giving up on %s after %d attempts",
                        self.call_id,
                        service.__name__,
                        attempt,
                    )
                    return
                logger.warning(
                    "call=%s %s failed (attempt %d), retrying",
                    self.call_id,
                    service.__name__,
                    attempt,
                    exc_info=True,
                )
                await asyncio.sleep(self.retry_delays[attempt - 1])

    def _spool(self, items: list[tuple[Callable[..., Any], dict[str, Any]]]) -> None:
        if not items:
            return
        lines = []
        for service, kwargs in items:
            key = service_key(service)
            if key not in SPOOLABLE:
                self.failed_writes += 1
                telemetry.RECORDER_LOST.inc()
                logger.error("call=%s LOST WRITE: %s cannot be spooled", self.call_id, key)
                continue
            lines.append(encode_line(key, kwargs))
        if not lines:
            return
        try:
            spool_append(session_id=self.call_id, lines=lines)
        except OSError:
            self.failed_writes += len(lines)
            telemetry.RECORDER_LOST.inc(len(lines))
            logger.exception("call=%s LOST %d WRITES: the spool cannot be written", self.call_id, len(lines))
            return
        self.spooled_writes += len(lines)
        telemetry.RECORDER_SPOOLED.inc(len(lines))


# ---------------------------------------------------------------------------- the spool


def spool_dir() -> Path:
    return Path(settings.VANTUM_SPOOL_DIR)


def _encode(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"cannot spool {type(value).__name__}")


def _decode(value: dict[str, Any]) -> Any:
    if len(value) == 1:
        if "$uuid" in value:
            return uuid.UUID(value["$uuid"])
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
    return value


def encode_line(service: str, kwargs: dict[str, Any]) -> str:
    return json.dumps({"service": service, "kwargs": kwargs}, default=_encode, ensure_ascii=True) + "\n"


def decode_line(line: str) -> tuple[str, dict[str, Any]]:
    record = json.loads(line, object_hook=_decode)
    return record["service"], record["kwargs"]


def spool_append(*, session_id: str, lines: list[str]) -> None:
    """Append ``lines`` to the call's spool file, durably (fsync) and under a lock that the
    replayer also takes, so a line is never appended to a file being replayed and removed."""
    directory = spool_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.UUID(str(session_id))}.jsonl"
    data = "".join(lines).encode()
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:
                continue  # replayed and removed between open and lock: start a new file
            os.write(fd, data)
            os.fsync(fd)
            break
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):  # make the new directory entry durable too
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def spool_pending_files() -> list[Path]:
    directory = spool_dir()
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime if p.exists() else 0)


def spool_replay() -> tuple[int, int]:
    """Store every spooled write (synchronous: run it off the event loop). Returns (stored,
    lost). Stops at the first sign the database is still unreachable, leaving the rest (and
    the file being replayed, re-applied idempotently next time) for the next attempt."""
    stored = lost = 0
    pending = 0
    files = spool_pending_files()
    for index, path in enumerate(files):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being appended to right now; next time
            if os.fstat(fd).st_nlink == 0:
                continue
            with os.fdopen(os.dup(fd), "r", encoding="utf-8") as reader:
                lines = reader.read().splitlines()
            for number, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    name, kwargs = decode_line(line)
                except (ValueError, KeyError):
                    if number == len(lines) - 1:
                        logger.warning("spool %s: incomplete last line skipped (crash mid-write)", path.name)
                    else:
                        lost += 1
                        telemetry.RECORDER_LOST.inc()
                        logger.error("spool %s: LOST WRITE, unreadable line %d", path.name, number + 1)
                    continue
                try:
                    service = service_for_key(name)
                except (KeyError, ImportError, AttributeError):
                    lost += 1
                    telemetry.RECORDER_LOST.inc()
                    logger.error("spool %s: LOST WRITE, unknown service %r", path.name, name)
                    continue
                try:
                    service(**kwargs)
                except Exception as error:
                    if database_unreachable(error):
                        pending = len(lines) - number + sum(_count_lines(p) for p in files[index + 1 :])
                        telemetry.RECORDER_PENDING.set(pending)
                        from django.db import connection

                        connection.close()
                        return stored, lost
                    lost += 1
                    telemetry.RECORDER_LOST.inc()
                    logger.exception("spool %s: LOST WRITE, %s failed on replay", path.name, name)
                    continue
                stored += 1
                telemetry.RECORDER_REPLAYED.inc()
            path.unlink()
        finally:
            os.close(fd)
    telemetry.RECORDER_PENDING.set(pending)
    if stored or lost:
        logger.warning("spool: %d writes stored after the outage, %d lost", stored, lost)
    return stored, lost


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as reader:
            return sum(1 for _ in reader)
    except OSError:
        return 0
