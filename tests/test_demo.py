"""The demo responder: scripted, labelled, streamed through the real SDK."""

import asyncio
import logging

import pytest

from llm.config import LLMConfig, ModelParams
from llm.demo import DEMO_LABEL, build_demo_provider, demo_reply, demo_reply_text
from llm.metrics import LLMServiceMetrics
from llm.session import Conversation
from tests.support import RecordingSink


def test_the_first_reply_says_it_is_a_demo_not_a_model():
    reply = demo_reply_text([{"role": "system", "content": "x"}, {"role": "user", "content": "Hello?"}])
    assert "demo responder" in reply
    assert "not a language model" in reply
    assert reply.count("||BREAK||") == 2


def test_replies_follow_keywords_of_the_last_user_message():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "..."}]
    assert demo_reply_text([*history, {"role": "user", "content": "How much does it cost?"}]).startswith(
        "Great question."
    )
    assert "Tuesday at ten" in demo_reply_text([*history, {"role": "user", "content": "Sure, book a demo"}])
    assert "won't take more of your time" in demo_reply_text(
        [*history, {"role": "user", "content": "not interested"}]
    )
    assert demo_reply_text([*history, {"role": "user", "content": "We use spreadsheets"}]).startswith(
        "That's helpful"
    )


async def test_the_demo_streams_chunks_through_the_whole_pipeline(caplog):
    provider = build_demo_provider()
    assert "not a language model" in caplog.text
    assert provider.describe() == DEMO_LABEL
    conversation = Conversation(
        call_id="demo", provider=provider, config=LLMConfig(), metrics=LLMServiceMetrics()
    )
    sink = RecordingSink()
    reply = await conversation.respond("What does it cost?", sink=sink)
    assert sink.spoken == [
        "Great question.",
        "Plans start at four hundred dollars a month per team, and most customers see it pay for itself "
        "within a quarter.",
        "Would a fifteen-minute walkthrough with numbers for your team help?",
    ]
    assert reply.error is None
    assert reply.first_token_at - reply.started_at >= 0.3  # realistic time to first token


def _turn(last_user: str, replies_so_far: int = 1) -> list[dict[str, str]]:
    history = [{"role": "system", "content": "x"}]
    for n in range(replies_so_far):
        history += [{"role": "user", "content": f"turn {n}"}, {"role": "assistant", "content": "..."}]
    return [*history, {"role": "user", "content": last_user}]


@pytest.mark.parametrize(
    ("said", "starts"),
    [
        ("What's the price?", "Great question."),
        ("No thanks, I'm not interested", "I completely understand"),
        ("Can we schedule a meeting?", "Wonderful."),
        ("Okay, goodbye", "Thank you for your time today."),
        ("What is Vantum exactly?", "Vantum is an AI sales assistant."),
        ("We mostly cold call", "That's helpful to know."),
        ("Hello?", "That's helpful to know."),  # a greeting after the opening is no new opening
    ],
)
def test_each_keyword_gets_its_scripted_reply_with_markers(said, starts):
    reply = demo_reply_text(_turn(said))
    assert reply.startswith(starts)
    assert reply.count("||BREAK||") >= 1


def test_the_opening_is_chosen_by_turn_number_not_by_keyword():
    assert demo_reply_text(_turn("We mostly cold call", replies_so_far=0)).startswith("Hi, this is Alex")
    assert demo_reply_text(_turn("We mostly cold call", replies_so_far=2)).startswith("That's helpful")


async def test_concurrent_calls_get_replies_to_their_own_messages():
    provider = build_demo_provider()
    said = ["How much is it?", "not interested", "Book a demo", "bye"] * 3

    async def one_call(text: str) -> str:
        deltas = [
            d
            async for d in provider.stream_chat(
                messages=_turn(text), params=ModelParams(), call_id=f"call-{text}"
            )
        ]
        return "".join(d.text for d in deltas)

    replies = await asyncio.gather(*(one_call(text) for text in said))
    assert replies == [demo_reply_text(_turn(text)) for text in said]


def test_building_the_demo_warns_that_it_is_not_a_model(caplog):
    with caplog.at_level(logging.WARNING, logger="llm.demo"):
        build_demo_provider()
    (record,) = [r for r in caplog.records if r.name == "llm.demo"]
    assert record.levelno == logging.WARNING
    assert DEMO_LABEL in record.getMessage()


TOOLS = [
    {"type": "function", "function": {"name": n}} for n in ("book_meeting", "schedule_callback", "end_call")
]


def _body(last_user: str, *, tools=TOOLS, extra=()) -> dict:
    return {"messages": [*_turn(last_user), *extra], "tools": tools}


def test_with_tools_the_demo_books_the_chosen_slot_on_the_next_such_weekday():
    import datetime as dt

    reply = demo_reply(_body("Thursday works"), today=dt.date(2030, 1, 10))  # a Thursday
    [call] = reply.tool_calls
    assert reply.text == "Perfect, Thursday at two it is. ||BREAK|| Let me put that in the calendar."
    assert (call.name, call.arguments) == (
        "book_meeting",
        {"start": "2030-01-17T14:00", "duration_minutes": 30, "notes": "Vantum demo"},
    )
    assert demo_reply(_body("call me back later"), today=dt.date(2030, 1, 11)).tool_calls[0].arguments == {
        "when": "2030-01-14T11:00",  # Friday -> Monday
        "reason": "Asked to be called back",
    }


def test_with_tools_the_demo_ends_the_call_with_the_goodbye_in_the_same_reply():
    reply = demo_reply(_body("not interested"))
    assert "won't take more of your time" in reply.text
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("end_call", {"outcome": "not_interested"})]
    booked = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "book_meeting"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true, "booked": "Tuesday"}'},
        {"role": "assistant", "content": "You're all set."},
    ]
    history = [*_turn("Tuesday")[:-1], *booked, {"role": "user", "content": "thanks, bye"}]
    reply = demo_reply({"messages": history, "tools": TOOLS})
    assert reply.tool_calls[0].arguments == {"outcome": "meeting_booked"}


def test_thanks_in_a_question_does_not_end_the_demo_call():
    reply = demo_reply(_body("Thanks! How much does it cost?"))
    assert reply.tool_calls == [] and reply.text.startswith("Great question.")


def test_without_tools_or_with_tool_choice_none_the_demo_only_talks():
    assert demo_reply(_body("Tuesday", tools=None)).tool_calls == []
    assert demo_reply({**_body("not interested"), "tool_choice": "none"}).tool_calls == []


def test_the_demo_speaks_from_the_tool_result():
    def after(name: str, content: str):
        call = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c9", "function": {"name": name}}],
        }
        return demo_reply(
            _body("Tuesday", extra=[call, {"role": "tool", "tool_call_id": "c9", "content": content}])
        )

    assert after(
        "book_meeting", '{"ok": true, "booked": "Tuesday 8 January 2030 at 10:00 (UTC), 30 minutes"}'
    ).text == (
        "You're all set: Tuesday 8 January 2030 at 10:00 (UTC), 30 minutes. ||BREAK|| You'll get a calendar "
        "invite shortly. Is there anything else I can help with?"
    )
    retry = after(
        "book_meeting", '{"ok": false, "error": "taken", "next_free_start": "2030-01-08T10:30:00+00:00"}'
    )
    assert retry.tool_calls[0].arguments == {"start": "2030-01-08T10:30:00+00:00", "duration_minutes": 30}
    assert after("book_meeting", '{"ok": false, "error": "It is in the past."}').text == (
        "Sorry, I couldn't do that: It is in the past. ||BREAK|| What else would work?"
    )
