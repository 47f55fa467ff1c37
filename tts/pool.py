"""Synthesis threads shared by every call of the process, most urgent work first, paced.

A local engine (Piper, eSpeak) is CPU work that must run off the event loop. With a plain
executor every reply was synthesized whole, as fast as possible, first come first served:
under load, the later sentences of long replies held the threads while other calls waited
for their first audio. Here synthesis runs in *steps* (one block, e.g. one Piper sentence)
and only on demand: a step is queued when the consumer asks for the next block, and the
pool's threads run queued steps earliest deadline first.

A reply's ``Pacing`` (set by the speaker for the task that consumes the speech, through a
context variable) gives each step a deadline: for a speaking reply, the moment its caller
runs out of the audio sent so far; for a new reply's first sentence, ``FIRST_AUDIO_BUDGET``
after the reply was asked for. When a thread is free it runs, among the steps that are due:

1. the steps whose deadline is within ``URGENT_SECONDS`` (or two recent steps' time, when
   steps run slow), earliest deadline first: a speaking call about to run dry, a new reply
   that has waited its budget;
2. else new replies' first sentences (earliest first): first audio comes before the tails
   of replies that still have audio buffered;
3. else the next sentences of speaking replies (earliest deadline first).

A speaking reply's step is not due before ``lookahead`` seconds (plus twice the recent
average time of a step, which grows when the machine is busy) ahead of its deadline, so no
reply is synthesized further ahead than needed (a barge-in then wastes at most
``lookahead`` seconds of synthesis). Under overload both first audio and speaking calls
degrade gradually, by their deadlines, instead of new replies waiting behind whole replies.

Without a ``Pacing`` (tests, a consumer that is not a call), a step counts as a first
sentence asked for when it was queued: first come first served, never held back.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from tts.base import SpeechError

logger = logging.getLogger(__name__)

BlockSource = Callable[[threading.Event], Iterator[bytes]]

URGENT_SECONDS = 1.0  # a step this close to its deadline goes first
FIRST_AUDIO_BUDGET = 1.0  # seconds a new reply's first sentence may wait before it is urgent


class Pacing:
    """Where one reply's playback stands, as the speaker estimates it. One per reply.

    The speaker calls ``audio_sent`` for every frame it sends; the caller's playback is
    assumed to start with the first frame and run in real time (the browser client adds
    small gaps, so the estimate runs early: on the safe side).
    """

    __slots__ = ("lookahead", "requested_at", "sent_seconds", "started_at")

    def __init__(self, *, lookahead: float, now: float | None = None) -> None:
        if lookahead <= 0:
            raise ValueError(f"lookahead must be positive, got {lookahead}")
        self.lookahead = lookahead
        self.requested_at = time.monotonic() if now is None else now
        self.started_at: float | None = None
        self.sent_seconds = 0.0

    def audio_sent(self, seconds: float, *, now: float | None = None) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic() if now is None else now
        self.sent_seconds += seconds

    @property
    def speaking(self) -> bool:
        return self.started_at is not None

    def deadline(self) -> float:
        """When the caller runs out of this reply's audio (``time.monotonic()``); before the
        first audio, ``FIRST_AUDIO_BUDGET`` after the reply was asked for."""
        if self.started_at is None:
            return self.requested_at + FIRST_AUDIO_BUDGET
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
        # (speaking, deadline, order, not_before, stream); scanned on each take: a few
        # hundred entries at most, next to steps of tens of milliseconds or more.
        self._queue: list[tuple[bool, float, int, float, _Stream]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.steps_run = 0
        self.step_seconds = 0.0  # moving average of a step's wall time

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
                state.future = loop.create_future()
                if pacing is None:
                    self._submit(state, False, time.monotonic() + FIRST_AUDIO_BUDGET, float("-inf"))
                else:
                    self._submit(state, pacing.speaking, pacing.deadline(), pacing.not_before())
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
                    self._queue = [entry for entry in self._queue if entry[4] is not state]
            if idle:
                _close(state.blocks)

    def _submit(self, state: _Stream, speaking: bool, deadline: float, not_before: float) -> None:
        with self._condition:
            self._queue.append((speaking, deadline, next(self._order), not_before, state))
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
                # Steps take longer on a busy machine: start paced work that much earlier.
                margin = 2 * self.step_seconds
                urgent = max(URGENT_SECONDS, margin)
                best, best_key, soonest = -1, (3, 0.0, 0), float("inf")
                for index, (speaking, deadline, order, not_before, _) in enumerate(self._queue):
                    if not_before - margin > now:
                        soonest = min(soonest, not_before - margin)
                        continue
                    rank = 0 if deadline - now <= urgent else 2 if speaking else 1
                    key = (rank, deadline, order)
                    if key < best_key:
                        best, best_key = index, key
                if best < 0:
                    # Nothing due: sleep until the first paced step is, or new work arrives.
                    self._condition.wait(None if soonest == float("inf") else soonest - now)
                    continue
                state = self._queue.pop(best)[4]
                state.running = True
                return state

    def _work(self) -> None:
        while True:
            state = self._take()
            try:
                began = time.monotonic()
                item: object = next(state.blocks) if not state.cancelled.is_set() else _END
            except StopIteration:
                item = _END
            except Exception as error:  # reported to the consumer as a SpeechError
                item = error
            with self._condition:
                self.steps_run += 1
                if item is not _END:
                    self.step_seconds += 0.2 * (time.monotonic() - began - self.step_seconds)
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
