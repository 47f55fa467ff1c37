"""This server process: its instance id and heartbeat, crash recovery, the spool replay, the
prompt version new calls use when the database is down, and a clean shutdown.

- **Heartbeat** (a daemon thread, so it works the same under uvicorn, daphne and
  ``runserver``): every ``VANTUM_HEARTBEAT_SECONDS`` it records the beat of this process
  (``ServerInstance``), closes the calls of processes silent for three beats with reason
  ``server_lost`` (a crash, SIGKILL, OOM: noticed by any live sibling, or three beats into
  the next start; silence counts only while this process itself reached the database,
  since after an outage everybody's last beat is old),
  replays spooled transcript writes (``calls.recorder``) and refreshes the cached prompt
  version. Database errors are logged (rate-limited) and retried at the next beat.
- **Shutdown**: on SIGTERM/SIGINT every live call of this process is ended with reason
  ``server_shutdown`` (the caller gets ``voicechat.call.ended``, rows are flushed or spooled)
  before the server's own handler runs and closes the sockets. ``uvicorn`` calls
  ``lifespan`` startup (``vantum.asgi``), where the handlers are chained; under daphne they
  are chained at the first request; where the loop does not run in the main thread
  (``runserver`` with its autoreloader) an ``atexit`` hook does the same.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

logger = logging.getLogger(__name__)

INSTANCE_ID = uuid.uuid4()  # replaced in a forked worker (start_process_services)
_INSTANCE_PID = os.getpid()
HOSTNAME = socket.gethostname()
STARTED_AT = timezone.now()
SHUTDOWN_REASON = "server_shutdown"
STALE_BEATS = 3

EndCallback = Callable[[str], Awaitable[None]]

# ------------------------------------------------------------------ live calls of this process

_live_calls: dict[str, EndCallback] = {}
_shutting_down = False


def call_opened(session_id: str, end: EndCallback) -> None:
    """Register a live call; ``end(reason)`` ends it and returns once its rows are flushed."""
    _live_calls[session_id] = end


def call_closed(session_id: str) -> None:
    _live_calls.pop(session_id, None)


def live_call_count() -> int:
    return len(_live_calls)


def shutting_down() -> bool:
    return _shutting_down


async def end_all_calls(*, reason: str = SHUTDOWN_REASON, timeout: float | None = None) -> int:
    """End every live call of this process with ``reason`` and wait (bounded) until each has
    told its caller and stored its rows. Returns how many calls were ended."""
    timeout = settings.VANTUM_SHUTDOWN_SECONDS if timeout is None else timeout
    ends = list(_live_calls.items())
    if not ends:
        return 0
    logger.warning("ending %d live calls: %s", len(ends), reason)
    tasks = [asyncio.ensure_future(_end_quietly(session_id, end, reason)) for session_id, end in ends]
    deadline = time.monotonic() + timeout
    await asyncio.wait(tasks, timeout=timeout)
    # The calls unregister themselves once their rows are flushed (after the socket closed).
    while any(s in _live_calls for s, _ in ends) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    left = [session_id for session_id, _ in ends if session_id in _live_calls]
    if left:
        logger.error("%d calls still open after %.0fs of shutdown: %s", len(left), timeout, left[:5])
    return len(ends)


async def _end_quietly(session_id: str, end: EndCallback, reason: str) -> None:
    try:
        await end(reason)
    except Exception:
        logger.exception("call=%s could not be ended cleanly", session_id)


# ------------------------------------------------------------------ the prompt version

_prompt_version: Any = None


def prompt_version_for_new_call(profile_name: str | None = None) -> Any:
    """The prompt version a new call uses (synchronous; run it off the event loop).

    Read from the database on every call (``agents.selectors.prompt_version_for_new_call``:
    an A/B split, else the active version, created at first start), so activating a version
    in admin applies at once on every process. When the database cannot be reached, the
    last version this process used is taken (refreshed by the heartbeat), so new calls still
    connect. None when the database has been unreachable since start: the call then runs on
    the environment's prompt, and its row records no version.
    """
    global _prompt_version
    from agents.selectors import prompt_version_for_new_call as pick_version
    from agents.services import prompt_version_ensure_initial
    from calls.recorder import database_unreachable

    try:
        # A named profile (a phone campaign's) without a version yet falls back to the default one.
        named = pick_version(profile_name=profile_name) if profile_name else None
        version = named or pick_version() or prompt_version_ensure_initial(config=settings.VANTUM_LLM)
    except Exception as error:
        if not database_unreachable(error):
            raise
        logger.warning("database unreachable: new call uses the cached prompt version (%s)", _prompt_version)
        connection.close()
        return _prompt_version
    version = _shared_version(version)
    _prompt_version = version
    return version


# Versions in use, each by itself: a call keeps its version (``CallSession.prompt_version``)
# for its whole life, and calls that read an identical row (and profile) share one instance
# instead of each holding its own copy of the prompt texts (~3 KB a call). Read-only.
_shared_versions: dict[tuple[Any, ...], Any] = {}
SHARED_MAX = 16  # versions (and configs) kept shared; versions change rarely


def _shared_version(version: Any) -> Any:
    if version is None:
        return None
    profile = version._state.fields_cache.get("profile")
    key = (
        tuple(getattr(version, field.attname) for field in version._meta.concrete_fields),
        profile and tuple(getattr(profile, field.attname) for field in profile._meta.concrete_fields),
    )
    if len(_shared_versions) >= SHARED_MAX and key not in _shared_versions:
        _shared_versions.clear()
    return _shared_versions.setdefault(key, version)


def refresh_cached_prompt_version() -> None:
    """The heartbeat's refresh: the active version (no A/B draw)."""
    global _prompt_version
    from agents.services import prompt_version_ensure_initial

    _prompt_version = prompt_version_ensure_initial(config=settings.VANTUM_LLM)


# Configs in use, each by itself (LLMConfig is frozen and hashable): a call keeps its config
# for its whole life, and every call reading the same version then shares one copy of the
# prompt texts instead of holding its own (~3 KB a call). Small: versions change rarely.
_shared_configs: dict[Any, Any] = {}


def llm_config_for_new_call(version: Any) -> Any:
    from agents.selectors import llm_config_for_version

    if version is None:
        return settings.VANTUM_LLM
    config = llm_config_for_version(base=settings.VANTUM_LLM, version=version)
    if len(_shared_configs) >= SHARED_MAX and config not in _shared_configs:
        _shared_configs.clear()
    return _shared_configs.setdefault(config, config)


# ------------------------------------------------------------------ heartbeat


class Heartbeat(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(name="vantum-heartbeat", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()
        self.failing_since: float | None = None
        self.beats = 0
        # Since when every beat of ours reached the database (None: the last one failed).
        # Siblings are judged lost only on silence while the database was reachable.
        self.reachable_since: datetime | None = None
        self.last_beat: datetime | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            self.beat_once()
            self.stopping.wait(self.interval)

    def beat_once(self) -> None:
        from calls import recorder, services, telemetry, webhook

        close_old_connections()
        stale_after = timedelta(seconds=STALE_BEATS * self.interval)
        try:
            beat_at = timezone.now()
            services.server_instance_beat(
                instance_id=INSTANCE_ID,
                hostname=HOSTNAME,
                pid=os.getpid(),
                started_at=STARTED_AT,
                now=beat_at,
            )
            # A long gap since our last beat (a failed beat, a stalled thread) means we
            # cannot vouch that the database was reachable meanwhile: start over.
            if (
                self.reachable_since is None
                or self.last_beat is None
                or beat_at - self.last_beat > stale_after
            ):
                self.reachable_since = beat_at
            self.last_beat = beat_at
            lost = services.server_instances_close_lost(
                stale_after=stale_after, exclude=INSTANCE_ID, reachable_since=self.reachable_since
            )
            if lost:
                telemetry.CALLS_LOST.inc(lost)
                logger.warning("closed %d calls left open by lost server processes (server_lost)", lost)
            recorder.spool_replay()
            webhook.call_reports_retry_soon()  # due reports, in a thread of their own
            refresh_cached_prompt_version()
        except Exception as error:
            connection.close()
            self.reachable_since = None
            now = time.monotonic()
            if self.failing_since is None or now - self.failing_since > 60:
                logger.error(
                    "heartbeat: database unreachable (%s); retrying every %.0fs", error, self.interval
                )
                self.failing_since = now
            return
        if self.failing_since is not None:
            logger.warning("heartbeat: database reachable again")
            self.failing_since = None
        self.beats += 1

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self.interval + 5)


_heartbeat: Heartbeat | None = None
_tasks: set[asyncio.Task[None]] = set()
_loop: asyncio.AbstractEventLoop | None = None
_started = threading.Lock()


def start_process_services(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Start the heartbeat and install the shutdown hooks (idempotent). Called by
    ``vantum.asgi`` when a server starts serving (lifespan startup, or the first request)."""
    global _heartbeat, _loop
    with _started:
        if _heartbeat is not None:
            return
        _loop = loop or asyncio.get_running_loop()
        _new_instance_after_fork()
        _heartbeat = Heartbeat(settings.VANTUM_HEARTBEAT_SECONDS)
        _heartbeat.start()
    _install_shutdown_hooks()
    logger.info("server instance %s (pid %d) started", INSTANCE_ID, os.getpid())


def _new_instance_after_fork() -> None:
    """Workers forked from a process that imported us (gunicorn --preload) must not share
    its instance id: one worker's crash would be hidden by its siblings' heartbeats."""
    global INSTANCE_ID, _INSTANCE_PID
    if os.getpid() != _INSTANCE_PID:
        INSTANCE_ID, _INSTANCE_PID = uuid.uuid4(), os.getpid()


async def shutdown(reason: str = SHUTDOWN_REASON) -> None:
    """End every call, store what is left, mark this instance stopped. Idempotent."""
    global _shutting_down
    if _shutting_down:
        return
    _shutting_down = True
    await end_all_calls(reason=reason)
    heartbeat = _heartbeat
    if heartbeat is not None:
        await asyncio.get_running_loop().run_in_executor(None, _stop_heartbeat, heartbeat)


def _stop_heartbeat(heartbeat: Heartbeat) -> None:
    from calls import services

    heartbeat.stop()
    close_old_connections()
    try:
        services.server_instance_stop(instance_id=INSTANCE_ID, reason=SHUTDOWN_REASON)
    except Exception:
        logger.warning("could not record this instance as stopped (database unreachable)")
    finally:
        connection.close()


def _install_shutdown_hooks() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            signal.signal(signum, _chained_handler(previous))
    # Before the interpreter joins threads and shuts the thread pools down (the ORM needs
    # them): threading's own exit hooks run first, newest first. atexit is the fallback.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_shutdown_at_exit)
    else:
        atexit.register(_shutdown_at_exit)


def _chained_handler(previous: Any) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        loop = _loop
        if _shutting_down or loop is None or loop.is_closed():
            _call_previous(previous, signum, frame)  # a second Ctrl-C: stop now
            return
        logger.warning("signal %s: ending live calls before stopping", signal.Signals(signum).name)

        async def shutdown_then_stop() -> None:
            try:
                await shutdown()
            finally:
                _call_previous(previous, signum, frame)

        def start() -> None:
            task = loop.create_task(shutdown_then_stop())
            _tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(_tasks.discard)

        loop.call_soon_threadsafe(start)

    return handler


def _call_previous(previous: Any, signum: int, frame: Any) -> None:
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _shutdown_at_exit() -> None:
    """``runserver`` (loop in a thread) or an exit without our signal handler."""
    loop = _loop
    if _shutting_down or loop is None or loop.is_closed() or not loop.is_running():
        return
    if threading.current_thread() is threading.main_thread() and _loop_thread_is_main():
        return  # cannot block the loop's own thread
    future = asyncio.run_coroutine_threadsafe(shutdown(), loop)
    with contextlib.suppress(Exception):
        future.result(timeout=settings.VANTUM_SHUTDOWN_SECONDS + 5)


def _loop_thread_is_main() -> bool:
    return getattr(_loop, "_thread_id", None) == threading.main_thread().ident
