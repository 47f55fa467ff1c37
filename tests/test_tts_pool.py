"""The synthesis pool (tts/pool.py): blocks on demand, earliest deadline first, paced."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tts.base import SpeechError
from tts.pool import Pacing, SynthesisPool, current_pacing, reset_pacing, use_pacing


def _source(name: str, blocks: int, log: list[str], *, gate: threading.Event | None = None, closed=None):
    def source(cancelled: threading.Event):
        try:
            for n in range(blocks):
                if gate is not None:
                    gate.wait(10)
                log.append(f"{name}{n}")
                yield f"{name}{n}".encode()
        finally:
            if closed is not None:
                closed.append(name)

    return source


async def _drain(pool: SynthesisPool, source, pacing: Pacing | None = None) -> list[bytes]:
    token = use_pacing(pacing)
    try:
        return [block async for block in pool.stream(source)]
    finally:
        reset_pacing(token)


async def test_blocks_come_in_order_one_step_per_request():
    pool = SynthesisPool(2)
    log: list[str] = []
    assert await _drain(pool, _source("a", 4, log)) == [b"a0", b"a1", b"a2", b"a3"]
    assert pool.steps_run == 5  # four blocks and the step that found the end


async def test_nothing_is_synthesized_ahead_of_demand_and_closing_stops_the_source():
    pool = SynthesisPool(1)
    log: list[str] = []
    closed: list[str] = []
    stream = pool.stream(_source("a", 100, log, closed=closed))
    assert await stream.__anext__() == b"a0"
    await asyncio.sleep(0.2)
    assert log == ["a0"]  # the next sentence waits until it is asked for
    await stream.aclose()
    assert closed == ["a"]
    assert pool.queued() == 0


async def test_a_failing_source_is_a_speech_error_after_its_blocks():
    def source(cancelled):
        yield b"ok"
        raise RuntimeError("model crashed")

    pool = SynthesisPool(1)
    received = []
    with pytest.raises(SpeechError, match="model crashed"):
        async for block in pool.stream(source):
            received.append(block)
    assert received == [b"ok"]


async def test_a_new_replys_first_sentence_goes_before_other_replies_tails():
    pool = SynthesisPool(1)
    log: list[str] = []
    gate = threading.Event()
    now = time.monotonic()
    # The only thread is busy with a step that waits for the gate.
    busy = asyncio.create_task(_drain(pool, _source("busy", 1, log, gate=gate)))
    await asyncio.sleep(0.1)
    # Two replies already speaking, 3 s of audio sent: their next sentences are due in ~3 s.
    tails = []
    for name in ("t", "u"):
        pacing = Pacing(lookahead=10.0, now=now)
        pacing.audio_sent(3.0, now=now)
        tails.append(asyncio.create_task(_drain(pool, _source(name, 1, log), pacing)))
    await asyncio.sleep(0.1)
    # A new reply, asked for after them.
    first = asyncio.create_task(_drain(pool, _source("new", 1, log), Pacing(lookahead=10.0)))
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.gather(busy, first, *tails)
    assert log == ["busy0", "new0", "t0", "u0"]


async def test_a_speaking_reply_about_to_run_out_goes_before_a_new_reply():
    pool = SynthesisPool(1)
    log: list[str] = []
    gate = threading.Event()
    busy = asyncio.create_task(_drain(pool, _source("busy", 1, log, gate=gate)))
    await asyncio.sleep(0.1)
    first = asyncio.create_task(_drain(pool, _source("new", 1, log), Pacing(lookahead=10.0)))
    await asyncio.sleep(0.1)
    # Asked for after the new reply, but its caller runs out of audio in half a second.
    pacing = Pacing(lookahead=10.0)
    pacing.audio_sent(0.5)
    urgent = asyncio.create_task(_drain(pool, _source("urgent", 1, log), pacing))
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.gather(busy, first, urgent)
    assert log == ["busy0", "urgent0", "new0"]


async def test_a_new_reply_that_waited_its_budget_goes_before_a_tail_with_time_left():
    pool = SynthesisPool(1)
    log: list[str] = []
    gate = threading.Event()
    busy = asyncio.create_task(_drain(pool, _source("busy", 1, log, gate=gate)))
    await asyncio.sleep(0.1)
    pacing = Pacing(lookahead=10.0)
    pacing.audio_sent(0.9)  # runs dry in 0.9 s: urgent
    tail = asyncio.create_task(_drain(pool, _source("tail", 1, log), pacing))
    await asyncio.sleep(0.05)
    # Asked for 1.5 s ago: past its first-audio budget, so earlier deadline than the tail's.
    waited = Pacing(lookahead=10.0, now=time.monotonic() - 1.5)
    first = asyncio.create_task(_drain(pool, _source("new", 1, log), waited))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(busy, tail, first)
    assert log == ["busy0", "new0", "tail0"]


async def test_a_reply_far_ahead_of_playback_waits_for_its_lookahead():
    pool = SynthesisPool(1)
    log: list[str] = []
    pacing = Pacing(lookahead=0.3)
    pacing.audio_sent(1.0)  # playback started now with 1 s sent: the next sentence is due in 1 s
    started = time.monotonic()
    stream = pool.stream(_source("a", 2, log))
    token = use_pacing(pacing)
    try:
        assert await stream.__anext__() == b"a0"
    finally:
        reset_pacing(token)
        await stream.aclose()
    waited = time.monotonic() - started
    assert waited >= 0.65  # held back until 0.3 s before the 1 s of audio runs out
    assert waited < 5


async def test_an_unpaced_stream_is_not_held_behind_a_paced_one():
    pool = SynthesisPool(1)
    log: list[str] = []
    pacing = Pacing(lookahead=0.1)
    pacing.audio_sent(30.0)  # due in 30 s
    paced = asyncio.create_task(_drain(pool, _source("paced", 1, log), pacing))
    await asyncio.sleep(0.05)
    assert await asyncio.wait_for(_drain(pool, _source("now", 2, log)), 5) == [b"now0", b"now1"]
    assert log == ["now0", "now1"]
    paced.cancel()
    with pytest.raises(asyncio.CancelledError):
        await paced
    assert pool.queued() == 0


async def test_pacing_is_per_task():
    pacing = Pacing(lookahead=1.0)
    token = use_pacing(pacing)
    try:
        assert current_pacing() is pacing

        async def elsewhere():
            use_pacing(None)
            return current_pacing()

        assert await asyncio.create_task(elsewhere()) is None
        assert current_pacing() is pacing
    finally:
        reset_pacing(token)
    assert current_pacing() is None


def test_pacing_deadlines():
    pacing = Pacing(lookahead=2.0, now=100.0)
    assert (pacing.speaking, pacing.deadline(), pacing.not_before()) == (False, 101.0, float("-inf"))
    pacing.audio_sent(1.5, now=101.0)
    pacing.audio_sent(2.5, now=101.2)
    assert (pacing.speaking, pacing.deadline(), pacing.not_before()) == (True, 105.0, 103.0)
    with pytest.raises(ValueError, match="lookahead"):
        Pacing(lookahead=0)
