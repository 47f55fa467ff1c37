"""Synthesis threads shared by every call of the process, most urgent work first, paced.

A local engine (Piper, eSpeak) is CPU work that must run off the event loop. With a plain
executor every reply was synthesized whole, as fast as possible, first come first served:
under load, the later sentences of long replies held the threads while other calls waited
for their first audio. Here synthesis runs in *steps* (one block, e.g. one Piper sentence)
and only on demand: a step is queued when the consumer asks for the next block, and the
pool's threads run queued steps earliest deadline first.

A reply's deadline comes from its ``Pacing`` (set by the speaker for the task that
consumes the speech, through a context variable):

- before its first audio, ``requested_at + first_audio_budget``: a new reply's first
  sentence goes before the tail of replies that still have audio buffered;
- after it, the moment the caller's playback runs out of what was sent
  (``started_at + sent_seconds``), and the step is held back until ``lookahead`` seconds
  before that, so no reply is synthesized further ahead of its caller than needed (a
  barge-in then wastes at most ``lookahead`` seconds of synthesis).

Without a ``Pacing`` (tests, a consumer that is not a call), a step's deadline is the time
it was asked for: first come first served, one step at a time, never held back.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from tts.base import SpeechError

logger = logging.getLogger(__name__)

BlockSource = Callable[[threading.Event], Iterator[bytes]]

FIRST_AUDIO_BUDGET = 0.5  # seconds a new reply may wait for its first audio before it outranks tails


class Pacing:
    """Where one reply's playback stands, as the speaker estimates it. One per reply.

    The speaker calls ``audio_sent`` for every frame it sends; the caller's playback is
    assumed to start with the first frame and run in real time (the browser client adds
    small gaps, so the estimate runs early: on the safe side).
    """

    __slots__ = ("first_audio_budget", "lookahead", "requested_at", "sent_seconds", "started_at")

    def __init__(
        self, *, lookahead: float, first_audio_budget: float = FIRST_AUDIO_BUDGET, now: float | None = None
    ) -> None:
        if lookahead <= 0:
            raise ValueError(f"lookahead must be positive, got {lookahead}")
        self.lookahead = lookahead
        self.first_audio_budget = first_audio_budget
        self.requested_at = time.monotonic() if now is None else now
        self.started_at: float | None = None
        self.sent_seconds = 0.0

    def audio_sent(self, seconds: float, *, now: float | None = None) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic() if now is None else now
        self.sent_seconds += seconds

    def deadline(self) -> float:
        """When this reply's next audio is needed (``time.monotonic()`` clock)."""
        if self.started_at is None:
            return self.requested_at + self.first_audio_budget
        return self.started_at + self.sent_seconds

    def not_before(self) -> float:
        """The earliest moment its next step may run (no holding back before the first audio)."""
        if self.started_at is None:
            return float("-inf")
        return self.started_at + self.sent_seconds - self.lookahead


_current_pacing: contextvars.ContextVar[Pacing | None] = contextvars.ContextVar("tts_pacing", default=None)


def use_pacing(pacing: Pacing | None) -> contextvars.Token:
    """Pace the speech this task consumes from now on (``reset_pacing(token)`` to undo)."""
    return _current_pacing.set(pacing)


def reset_pacing(token: contextvars.Token) -> None:
    _current_pacing.reset(token)


def current_pacing() -> Pacing | None:
    return _current_pacing.get()


class _Stream:
    """One ``stream()`` call: its generator, advanced one step at a time by the pool."""

    __slots__ = ("blocks", "cancelled", "closed", "future", "loop", "running")

    def __init__(self, blocks: Iterator[bytes], cancelled: threading.Event, loop: asyncio.AbstractEventLoop):
        self.blocks = blocks
        self.cancelled = cancelled
        self.loop = loop
        self.future: asyncio.Future | None = None
        self.running = False
        self.closed = False


_END = object()


class SynthesisPool:
    """``workers`` threads (started on first use) running synthesis steps by deadline."""

    def __init__(self, workers: int, *, name: str = "tts") -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.name = name
        self._queue: list[tuple[float, int, float, _Stream]] = []  # (deadline, order, not_before, stream)
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.steps_run = 0

    def queued(self) -> int:
        with self._condition:
            return len(self._queue)

    async def stream(self, source: BlockSource) -> AsyncIterator[bytes]:
        """Yield the blocks of ``source(cancelled)``, each computed in a pool thread when asked
        for. Closing or cancelling the consumer stops the source between two blocks."""
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        state = _Stream(source(cancelled), cancelled, loop)
        try:
            while True:
                pacing = current_pacing()
                if pacing is None:
                    deadline, not_before = time.monotonic(), float("-inf")
                else:
                    deadline, not_before = pacing.deadline(), pacing.not_before()
                state.future = loop.create_future()
                self._submit(state, deadline, not_before)
                item = await state.future
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise SpeechError(str(item) or type(item).__name__) from item
                yield item  # type: ignore[misc]
        finally:
            with self._condition:
                cancelled.set()
                # Queued or idle: the generator is ours to close; running: the worker closes
                # it when its step ends (never both, never while it runs).
                idle = not state.running and not state.closed
                if idle:
                    state.closed = True
                    self._queue = [entry for entry in self._queue if entry[3] is not state]
                    heapq.heapify(self._queue)
            if idle:
                _close(state.blocks)

    def _submit(self, state: _Stream, deadline: float, not_before: float) -> None:
        with self._condition:
            heapq.heappush(self._queue, (deadline, next(self._order), not_before, state))
            if len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._condition.notify()

    def _take(self) -> _Stream:
        with self._condition:
            while True:
                now = time.monotonic()
                queue = self._queue
                if queue and queue[0][2] <= now:
                    index = 0
                else:
                    # The most urgent step is held back (paced): run the most urgent one
                    # that is due, else sleep until one is due or new work arrives.
                    index, soonest = -1, float("inf")
                    for position, entry in enumerate(queue):
                        if entry[2] <= now:
                            if index < 0 or entry[:2] < queue[index][:2]:
                                index = position
                        elif entry[2] < soonest:
                            soonest = entry[2]
                    if index < 0:
                        self._condition.wait(None if soonest == float("inf") else soonest - now)
                        continue
                state = queue[index][3]
                if index == 0:
                    heapq.heappop(queue)
                else:
                    queue[index] = queue[-1]
                    queue.pop()
                    heapq.heapify(queue)
                state.running = True
                return state

    def _work(self) -> None:
        while True:
            state = self._take()
            try:
                item: object = next(state.blocks) if not state.cancelled.is_set() else _END
            except StopIteration:
                item = _END
            except Exception as error:  # reported to the consumer as a SpeechError
                item = error
            with self._condition:
                self.steps_run += 1
                state.running = False
                closing = state.cancelled.is_set() and not state.closed
                if closing:
                    state.closed = True
            if closing:
                _close(state.blocks)
                continue
            future = state.future
            if future is not None and not state.loop.is_closed():
                state.loop.call_soon_threadsafe(_resolve, future, item)


def _resolve(future: asyncio.Future, item: object) -> None:
    if not future.done():
        future.set_result(item)


def _close(blocks: Iterator[bytes]) -> None:
    close = getattr(blocks, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # a source failing to clean up must not kill a pool thread
            logger.exception("closing a speech source failed")
