"""Per-client limits: the bookkeeping, and the context cap defaults."""

from __future__ import annotations

import pytest

from calls.limits import AddressSlots, BufferBudget, FrameBudget, TurnRate
from llm.config import llm_config_from_env
from llm.context import ConversationContext


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _scope(headers: dict[str, str], client: str = "10.0.0.9") -> dict:
    return {
        "client": (client, 50123),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


def test_calls_per_address_are_capped_and_released():
    slots = AddressSlots(2)
    assert [slots.acquire("a"), slots.acquire("a"), slots.acquire("a"), slots.acquire("b")] == [
        True,
        True,
        False,
        True,
    ]
    slots.release("a")
    assert slots.acquire("a") is True
    assert (slots.count("a"), slots.count("b")) == (2, 1)
    slots.release("b")
    assert slots.count("b") == 0


def test_turns_per_minute_refuse_a_burst_and_recover_after_the_window():
    clock = Clock()
    rate = TurnRate(3, clock=clock)
    assert [rate.allow() for _ in range(5)] == [True, True, True, False, False]
    clock.now += 30
    assert rate.allow() is False
    assert rate.retry_after() == 30.0
    clock.now += 30
    assert rate.allow() is True


def test_the_process_audio_buffer_budget_is_shared_by_all_calls():
    budget = BufferBudget(1000)
    assert budget.reserve(600) is True
    assert budget.reserve(500) is False
    assert budget.reserve(400) is True
    budget.release(600)
    assert budget.used == 400
    assert budget.reserve(600) is True


def test_a_frame_flood_is_dropped_and_a_persistent_flooder_is_flagged():
    clock = Clock()
    budget = FrameBudget(frames_per_second=10, bytes_per_second=1000, close_after=5, clock=clock)
    allowed = [budget.allow(10) for _ in range(100)]
    assert allowed.count(True) == 20  # a burst of two seconds' worth
    assert budget.dropped == 80
    assert budget.abusive is False
    for _ in range(60):  # six more seconds of flooding
        clock.now += 0.1
        for _ in range(50):
            budget.allow(10)
    assert budget.abusive is True


def test_a_normal_caller_never_touches_the_frame_budget():
    clock = Clock()
    budget = FrameBudget(frames_per_second=200, bytes_per_second=1024 * 1024, clock=clock)
    # 48 kHz 16-bit audio in 20 ms frames: 50 frames of 1,920 bytes a second, for a minute.
    results = []
    for _ in range(50 * 60):
        clock.now += 0.02
        results.append(budget.allow(1920))
    assert all(results)
    assert budget.abusive is False


def test_a_frame_larger_than_the_byte_budget_is_dropped():
    budget = FrameBudget(frames_per_second=10, bytes_per_second=1000, clock=Clock())
    assert budget.allow(2001) is False
    assert budget.allow(2000) is True


@pytest.fixture
def no_context_env(monkeypatch):
    monkeypatch.delenv("LLM_MAX_MESSAGES", raising=False)
    monkeypatch.delenv("LLM_MAX_CONTEXT_TOKENS", raising=False)


def test_the_context_is_capped_by_default_far_above_a_real_call(no_context_env):
    config = llm_config_from_env()
    assert (config.max_messages, config.max_context_tokens) == (1000, 32000)
    context = ConversationContext(
        max_messages=config.max_messages, max_context_tokens=config.max_context_tokens
    )
    # Two hours of a real call (the maximum duration), an exchange every 20 s: all kept.
    for turn in range(360):
        context.add_user(f"Question {turn} about the pricing of the plan?", timestamp=float(turn))
        context.add_assistant("Our plans start at four hundred dollars a month.", timestamp=float(turn))
    assert len(context.request_messages("SYSTEM")) == 1 + 720
    # An abuser's 200 turns of 4,000 characters: the prompt stays under the cap.
    abused = ConversationContext(
        max_messages=config.max_messages, max_context_tokens=config.max_context_tokens
    )
    for turn in range(200):
        abused.add_user("x" * 4000, timestamp=float(turn))
        abused.add_assistant("Sorry?", timestamp=float(turn))
    prompt_chars = sum(len(m["content"]) for m in abused.request_messages("SYSTEM"))
    assert prompt_chars <= 32000 * 4
