"""The demo responder: what answers when no model is configured. NOT a language model.

A short scripted sales conversation served by the HTTP-level fake through the real
OpenAI adapter, so the whole pipeline (SSE parsing, chunking, speech) runs as it would
with a model. Replies are picked from the request alone (turn number and keywords of the
last user message): no per-call state, any number of concurrent calls.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from llm.fake_openai import FakeOpenAI, FakeReply
from llm.openai_adapter import OpenAIChatProvider

logger = logging.getLogger(__name__)

DEMO_LABEL = "Demo responder (scripted, not a language model)"
DEMO_BASE_URL = "http://demo-responder.invalid/v1"  # never contacted: the fake answers in-process
FIRST_TOKEN_DELAY = 0.35
TOKEN_DELAY = 0.02

_OPENING = (
    "Hi, this is Alex from Vantum. ||BREAK|| Quick note: I'm the Vantum demo responder, "
    "a scripted voice, not a language model. ||BREAK|| I help sales teams book more meetings "
    "with AI-powered outreach. What does your team's outreach look like today?"
)
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"\b(price|pricing|cost|costs|expensive|budget|how much)\b", re.I),
        "Great question. ||BREAK|| Plans start at four hundred dollars a month per team, "
        "and most customers see it pay for itself within a quarter. ||BREAK|| "
        "Would a fifteen-minute walkthrough with numbers for your team help?",
    ),
    (
        re.compile(r"\b(not interested|no thanks|busy|stop calling|remove me)\b", re.I),
        "I completely understand, and thanks for being direct. ||BREAK|| "
        "I won't take more of your time. ||BREAK|| Have a great rest of your day!",
    ),
    (
        re.compile(r"\b(demo|meeting|book|schedule|calendar|yes|sure|sounds good)\b", re.I),
        "Wonderful. ||BREAK|| I can offer Tuesday at ten or Thursday at two. ||BREAK|| "
        "Which of those works better for you?",
    ),
    (
        re.compile(r"\b(bye|goodbye|thanks|thank you)\b", re.I),
        "Thank you for your time today. ||BREAK|| Goodbye!",
    ),
    (
        re.compile(r"\b(who|what is|what's|vantum)\b", re.I),
        "Vantum is an AI sales assistant. ||BREAK|| It calls prospects, holds natural "
        "conversations, and books qualified meetings straight into your calendar. ||BREAK|| "
        "How do you book meetings today?",
    ),
)
_DEFAULT = (
    "That's helpful to know. ||BREAK|| Teams like yours usually save about ten hours a week "
    "on prospecting with Vantum. ||BREAK|| Would you be open to a short demo next week?"
)


def demo_reply_text(messages: list[dict[str, Any]]) -> str:
    """The scripted reply to a chat request's messages.

    The first matching keyword rule on the last user message wins; without one, the
    opening (which says it is a demo) on the first turn, else a generic follow-up.
    """
    replies_so_far = sum(1 for m in messages if m.get("role") == "assistant")
    last_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    for pattern, reply in _RULES:
        if pattern.search(str(last_user)):
            return reply
    return _OPENING if replies_so_far == 0 else _DEFAULT


def _respond(body: dict[str, Any]) -> FakeReply:
    return FakeReply(
        text=demo_reply_text(body.get("messages") or []),
        first_token_delay=FIRST_TOKEN_DELAY,
        token_delay=TOKEN_DELAY,
    )


def build_demo_provider() -> OpenAIChatProvider:
    """The real adapter on an in-process fake whose replies come from ``demo_reply_text``.

    Nothing leaves the process (the fake answers every request; ``DEMO_BASE_URL`` is never
    resolved). The fake keeps no log, so a long-running demo server does not grow.
    """
    logger.warning("No OPENAI_API_KEY or OPENAI_BASE_URL: the %s answers calls.", DEMO_LABEL)
    fake = FakeOpenAI(responder=_respond, keep_log=False)
    return OpenAIChatProvider(
        api_key="demo",
        base_url=DEMO_BASE_URL,
        request_timeout=30.0,
        http_client=fake.http_client(),
        name="demo",
        description=DEMO_LABEL,
    )
