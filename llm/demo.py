"""The demo responder: what answers when no model is configured. NOT a language model.

A short scripted sales conversation served by the HTTP-level fake through the real
OpenAI adapter, so the whole pipeline (SSE parsing, chunking, speech) runs as it would
with a model. Replies are picked from the request alone (turn number and keywords of the
last user message): no per-call state, any number of concurrent calls.

When the request offers tools, the demo uses them as a model would, so the offline default
shows the whole flow: choosing "Tuesday" or "Thursday" books that slot (``book_meeting``;
if it is taken, the next free slot the tool names is booked in a second round), "call me
back" schedules a callback, and "not interested" or "bye" end the call (``end_call``) with
the goodbye in the same reply. The follow-up after a tool speaks from the tool's result.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from llm.fake_openai import FakeOpenAI, FakeReply, FakeToolCall
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


_SLOTS = (
    (re.compile(r"\btue(s|sday)?\b", re.I), 1, 10, "Tuesday at ten"),
    (re.compile(r"\bthu(rs|rsday)?\b", re.I), 3, 14, "Thursday at two"),
)
_CALLBACK = re.compile(r"\b(call me back|call back|call later|another time|later)\b", re.I)
_NOT_INTERESTED = _RULES[1][0]
_GOODBYE_RULE = 3


def _next_weekday_at(weekday: int, hour: int, today: dt.date) -> str:
    """The next ``weekday`` (0 = Monday) after today, at ``hour``: local ISO, no offset (the
    booking tool reads it in the business timezone)."""
    days = (weekday - today.weekday() - 1) % 7 + 1
    return f"{today + dt.timedelta(days=days):%Y-%m-%d}T{hour:02d}:00"


def _next_working_day_at(hour: int, today: dt.date) -> str:
    """The next Monday-to-Friday after today, at ``hour`` (local ISO, no offset)."""
    day = today + dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return f"{day:%Y-%m-%d}T{hour:02d}:00"


def _tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(tool name, parsed result) of the tool messages that end the request."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        try:
            result = json.loads(message.get("content") or "{}")
        except ValueError:
            result = {"ok": False, "error": "unreadable result"}
        results.append((names.get(message.get("tool_call_id", ""), ""), result))
    return list(reversed(results))


def _booked_in(messages: list[dict[str, Any]]) -> bool:
    return any(
        m.get("role") == "tool"
        and '"ok": true' in str(m.get("content"))
        and '"booked"' in str(m.get("content"))
        for m in messages
    )


def _after_tools(results: list[tuple[str, dict[str, Any]]]) -> FakeReply:
    """The follow-up once tools ran: speak from their results, as a model would."""
    name, result = results[-1]
    if name == "book_meeting" and result.get("ok"):
        return FakeReply(
            text=f"You're all set: {result.get('booked')}. ||BREAK|| You'll get a calendar invite "
            "shortly. Is there anything else I can help with?"
        )
    if name == "book_meeting" and result.get("next_free_start"):
        return FakeReply(
            text="That time was just taken, so I'll take the next free slot.",
            tool_calls=[
                FakeToolCall("book_meeting", {"start": result["next_free_start"], "duration_minutes": 30})
            ],
        )
    if name == "schedule_callback" and result.get("ok"):
        return FakeReply(text=f"Done. ||BREAK|| We'll call you back {result.get('callback')}. Talk soon!")
    if name == "end_call":
        return FakeReply(text="Goodbye!")
    return FakeReply(
        text=f"Sorry, I couldn't do that: {result.get('error', 'it failed')} ||BREAK|| What else would work?"
    )


def demo_reply(body: dict[str, Any], *, today: dt.date | None = None) -> FakeReply:
    """The scripted reply to a chat request, tool calls included when tools are offered."""
    messages = body.get("messages") or []
    offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or ()}
    if body.get("tool_choice") == "none":
        offered = set()
    if messages and messages[-1].get("role") == "tool":
        reply = _after_tools(_tool_results(messages))
        if reply.tool_calls and not offered:
            reply = FakeReply(text="I couldn't book that time. ||BREAK|| Which other time works for you?")
        return reply
    last_user = str(next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), ""))
    today = today or dt.datetime.now(dt.UTC).date()
    if "end_call" in offered and _NOT_INTERESTED.search(last_user):
        return FakeReply(
            text=_RULES[1][1], tool_calls=[FakeToolCall("end_call", {"outcome": "not_interested"})]
        )
    if "book_meeting" in offered:
        for pattern, weekday, hour, said in _SLOTS:
            if pattern.search(last_user):
                start = _next_weekday_at(weekday, hour, today)
                return FakeReply(
                    text=f"Perfect, {said} it is. ||BREAK|| Let me put that in the calendar.",
                    tool_calls=[
                        FakeToolCall(
                            "book_meeting", {"start": start, "duration_minutes": 30, "notes": "Vantum demo"}
                        )
                    ],
                )
    if "schedule_callback" in offered and _CALLBACK.search(last_user):
        when = _next_working_day_at(11, today)
        return FakeReply(
            text="No problem at all.",
            tool_calls=[
                FakeToolCall("schedule_callback", {"when": when, "reason": "Asked to be called back"})
            ],
        )
    # Only when "bye"/"thanks" is what the caller's words are about (the first rule that
    # matches, as for the spoken reply): "thanks, what does it cost?" asks about pricing.
    first_rule = next((n for n, (pattern, _) in enumerate(_RULES) if pattern.search(last_user)), None)
    if "end_call" in offered and first_rule == _GOODBYE_RULE:
        outcome = "meeting_booked" if _booked_in(messages) else "no_decision"
        return FakeReply(
            text=_RULES[_GOODBYE_RULE][1], tool_calls=[FakeToolCall("end_call", {"outcome": outcome})]
        )
    return FakeReply(text=demo_reply_text(messages))


def _respond(body: dict[str, Any]) -> FakeReply:
    reply = demo_reply(body)
    reply.first_token_delay = FIRST_TOKEN_DELAY
    reply.token_delay = TOKEN_DELAY
    return reply


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
