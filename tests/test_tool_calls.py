"""Function calling in the streaming turn, through the real OpenAI SDK on the HTTP fake."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from llm.config import LLMConfig
from llm.fake_openai import FakeOpenAI, FakeReply, FakeToolCall, Fault
from llm.metrics import LLMServiceMetrics
from llm.openai_adapter import OpenAIChatProvider
from llm.providers import ErrorKind, ProviderError
from llm.session import Conversation
from llm.tools import (
    DEFAULT_GOODBYE,
    Tool,
    ToolCallAssembler,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolResult,
)
from llm.turn import Reply
from tests.support import RecordingSink

CONFIG = LLMConfig(request_timeout=2.0, streaming_timeout=10.0, stall_timeout=1.0, retry_delays=(0.0,))
TIER1, TIER2, TIER3 = CONFIG.fallback_messages

SLOT_SCHEMA = {
    "type": "object",
    "properties": {
        "start": {"type": "string", "minLength": 1},
        "duration_minutes": {"type": "integer", "minimum": 15, "maximum": 120},
    },
    "required": ["start", "duration_minutes"],
    "additionalProperties": False,
}


@dataclasses.dataclass
class Desk:
    """Tools of a test call that record what they were asked to do."""

    runs: list[tuple[str, dict]] = dataclasses.field(default_factory=list)
    spoken_when_run: list[list[str]] = dataclasses.field(default_factory=list)
    sink: RecordingSink | None = None
    gate: asyncio.Event | None = None
    started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    end_gate: asyncio.Event | None = None  # holds end_call until set
    end_started: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def book(self, context, *, start: str, duration_minutes: int) -> dict:
        self.runs.append(("book", {"start": start, "duration_minutes": duration_minutes}))
        self.spoken_when_run.append(list(self.sink.spoken) if self.sink else [])
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if start == "taken":
            raise ToolError("That slot is already booked.")
        if start == "crash":
            raise RuntimeError("database exploded at line 42")
        return {"meeting": f"{start} for {duration_minutes} minutes", "call": context.call_id}

    async def note(self, context, *, text: str) -> dict:
        self.runs.append(("note", {"text": text}))
        return {"saved": text}

    async def end(self, context, *, outcome: str) -> ToolResult:
        self.runs.append(("end", {"outcome": outcome}))
        self.end_started.set()
        if self.end_gate is not None:
            await self.end_gate.wait()
        return ToolResult.success({"ending": True, "outcome": outcome}, ends_call=True)

    def registry(self, *, timeout: float = 2.0) -> ToolRegistry:
        return ToolRegistry(
            [
                Tool("book_meeting", "Book a meeting.", SLOT_SCHEMA, self.book),
                Tool(
                    "take_note",
                    "Save a note.",
                    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
                    self.note,
                ),
                Tool(
                    "end_call",
                    "End the call.",
                    {
                        "type": "object",
                        "properties": {
                            "outcome": {"type": "string", "enum": ["meeting_booked", "not_interested"]}
                        },
                        "required": ["outcome"],
                    },
                    self.end,
                ),
            ],
            timeout=timeout,
        )


def _setup(*replies: FakeReply, desk: Desk | None = None, config: LLMConfig = CONFIG, tools=True):
    fake = FakeOpenAI()
    fake.script(*replies)
    provider = OpenAIChatProvider(api_key="sk-test", request_timeout=5.0, http_client=fake.http_client())
    desk = desk or Desk()
    conversation = Conversation(
        call_id="call-t",
        provider=provider,
        config=config,
        metrics=LLMServiceMetrics(),
        tools=desk.registry() if tools else None,
    )
    return fake, conversation, desk


def _chat_bodies(fake: FakeOpenAI) -> list[dict]:
    return [r["json"] for r in fake.requests if r["path"].endswith("/chat/completions")]


def _tool_results(body: dict) -> list[dict]:
    return [json.loads(m["content"]) for m in body["messages"] if m["role"] == "tool"]


def _count_tool_deltas(conversation: Conversation) -> list[int]:
    """Counts the tool-call deltas the real adapter yields to the turn."""
    adapter, seen = conversation.provider, [0]

    class Counting:
        name = adapter.name

        async def stream_chat(self, **kwargs):
            async for delta in adapter.stream_chat(**kwargs):
                seen[0] += bool(delta.tool_calls)
                yield delta

    conversation.provider = Counting()
    return seen


BOOK = {"start": "2030-01-08T10:00", "duration_minutes": 30}


async def test_a_tool_call_split_across_many_deltas_runs_once_with_the_whole_arguments():
    fake, conversation, desk = _setup(
        FakeReply(
            tool_calls=[FakeToolCall("book_meeting", BOOK, id="call_abc", piece=2)],
            prompt_tokens=100,
            completion_tokens=7,
        ),
        FakeReply(text="You're booked for Tuesday at ten.", prompt_tokens=150, completion_tokens=9),
    )
    seen = _count_tool_deltas(conversation)
    sink = RecordingSink()
    reply = await conversation.respond("Tuesday at ten works", sink=sink)

    assert seen[0] >= 20  # the adapter handed the turn the call in at least 20 pieces
    assert desk.runs == [("book", BOOK)]
    assert sink.spoken == ["You're booked for Tuesday at ten."]
    assert reply.error is None
    first, follow_up = _chat_bodies(fake)
    assert [t["function"]["name"] for t in first["tools"]] == ["book_meeting", "take_note", "end_call"]
    assert "tool_choice" not in first
    assert follow_up["messages"][-2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "book_meeting", "arguments": json.dumps(BOOK)},
            }
        ],
    }
    assert follow_up["messages"][-1]["role"] == "tool"
    assert follow_up["messages"][-1]["tool_call_id"] == "call_abc"
    assert json.loads(follow_up["messages"][-1]["content"]) == {
        "ok": True,
        "meeting": "2030-01-08T10:00 for 30 minutes",
        "call": "call-t",
    }
    assert [c.record()["name"] for c in reply.tool_calls] == ["book_meeting"]
    assert (reply.prompt_tokens, reply.completion_tokens) == (250, 16)  # both rounds count


async def test_two_tool_calls_in_one_reply_run_in_order_and_both_results_go_back():
    fake, conversation, desk = _setup(
        FakeReply(
            tool_calls=[
                FakeToolCall("take_note", {"text": "wants pricing"}, id="call_1"),
                FakeToolCall("book_meeting", BOOK, id="call_2"),
            ]
        ),
        FakeReply(text="Noted, and booked."),
    )
    sink = RecordingSink()
    await conversation.respond("book it", sink=sink)

    assert desk.runs == [("note", {"text": "wants pricing"}), ("book", BOOK)]
    follow_up = _chat_bodies(fake)[1]
    assert [c["id"] for c in follow_up["messages"][-3]["tool_calls"]] == ["call_1", "call_2"]
    assert [m.get("tool_call_id") for m in follow_up["messages"][-2:]] == ["call_1", "call_2"]
    assert [r["ok"] for r in _tool_results(follow_up)] == [True, True]
    assert sink.spoken == ["Noted, and booked."]


async def test_text_before_a_tool_call_is_spoken_before_the_tool_runs_and_the_follow_up_in_the_same_reply():
    fake, conversation, desk = _setup(
        FakeReply(
            text="Let me check the calendar.",
            tool_calls=[FakeToolCall("book_meeting", BOOK)],
            text_after=" One moment.",
            token_delay=0.005,
        ),
        FakeReply(text="Done: Tuesday at ten. ||BREAK|| Anything else?"),
    )
    sink = RecordingSink()
    desk.sink = sink
    # The tool waits until the text before it has been spoken: it must not wait for the model.
    desk.gate = asyncio.Event()

    async def release_when_spoken():
        while not sink.spoken:
            await asyncio.sleep(0.005)
        desk.gate.set()

    releaser = asyncio.create_task(release_when_spoken())
    reply = await asyncio.wait_for(conversation.respond("Tuesday?", sink=sink), 5)
    await releaser

    assert sink.spoken == [
        "Let me check the calendar.",
        "One moment.",
        "Done: Tuesday at ten.",
        "Anything else?",
    ]
    assert sink.max_concurrent == 1
    assert desk.runs == [("book", BOOK)]
    follow_up = _chat_bodies(fake)[1]
    assert follow_up["messages"][-2]["content"] == "Let me check the calendar. One moment."
    # The next turn's context holds what was heard, the call and its result, in order.
    assert [m["role"] for m in conversation.context.request_messages("s")] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert reply.said_text == "Let me check the calendar. One moment. Done: Tuesday at ten. Anything else?"


async def test_the_request_carries_no_tools_when_none_are_registered_or_they_are_disabled():
    fake, conversation, _ = _setup(FakeReply(text="Hi."), tools=False)
    await conversation.respond("hi", sink=RecordingSink())
    fake2, conversation2, _ = _setup(
        FakeReply(text="Hi."), config=dataclasses.replace(CONFIG, tools_enabled=False)
    )
    await conversation2.respond("hi", sink=RecordingSink())
    assert "tools" not in _chat_bodies(fake)[0]
    assert "tools" not in _chat_bodies(fake2)[0]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            FakeToolCall("fly_to_moon", {}),
            "There is no tool named 'fly_to_moon'. Available tools: book_meeting, take_note, end_call.",
        ),
        (
            FakeToolCall("book_meeting", '{"start": "2030-01-08T10:00", "duration_'),
            "The arguments are not valid JSON",
        ),
        (FakeToolCall("book_meeting", "[1, 2]"), "The arguments must be a JSON object."),
        (FakeToolCall("book_meeting", {"start": "x"}), "Invalid arguments: 'duration_minutes' is required."),
        (
            FakeToolCall("book_meeting", {"start": 5, "duration_minutes": "thirty", "room": "A"}),
            "Invalid arguments: 'start' must be string, got int; "
            "'duration_minutes' must be integer, got str; 'room' is not an argument of this tool.",
        ),
        (
            FakeToolCall("book_meeting", {"start": "x", "duration_minutes": 5}),
            "Invalid arguments: 'duration_minutes' must be at least 15.",
        ),
        (
            FakeToolCall("book_meeting", {"start": "taken", "duration_minutes": 30}),
            "That slot is already booked.",
        ),
        (
            FakeToolCall("book_meeting", {"start": "crash", "duration_minutes": 30}),
            "book_meeting failed because of a technical problem. It was not done.",
        ),
    ],
    ids=[
        "unknown-tool",
        "broken-json",
        "not-an-object",
        "missing",
        "wrong-types",
        "out-of-range",
        "refused",
        "raises",
    ],
)
async def test_bad_tool_input_gives_the_model_an_error_result_and_the_reply_goes_on(call, error):
    fake, conversation, _ = _setup(
        FakeReply(text="Let me see.", tool_calls=[call]),
        FakeReply(text="Sorry, I couldn't do that. ||BREAK|| Shall we try another time?"),
    )
    sink = RecordingSink()
    reply = await conversation.respond("book it", sink=sink)

    [result] = _tool_results(_chat_bodies(fake)[1])
    assert result["ok"] is False
    assert result["error"].startswith(error)
    assert "Traceback" not in result["error"] and "line 42" not in result["error"]
    assert sink.spoken == ["Let me see.", "Sorry, I couldn't do that.", "Shall we try another time?"]
    assert reply.error is None and reply.fallback_tier is None


async def test_a_tool_that_hangs_is_cut_off_by_its_timeout_and_the_model_is_told():
    desk = Desk(gate=asyncio.Event())  # never set
    fake, conversation, _ = _setup(
        FakeReply(tool_calls=[FakeToolCall("book_meeting", BOOK)]),
        FakeReply(text="The calendar is slow today."),
        desk=desk,
    )
    conversation.tools = desk.registry(timeout=0.2)
    sink = RecordingSink()
    await asyncio.wait_for(conversation.respond("book it", sink=sink), 5)
    [result] = _tool_results(_chat_bodies(fake)[1])
    assert result == {"ok": False, "error": "book_meeting did not finish in time; it may not have been done."}
    assert sink.spoken == ["The calendar is slow today."]


async def test_tool_rounds_are_bounded_and_the_last_round_may_not_call_tools():
    config = dataclasses.replace(CONFIG, max_tool_rounds=2)
    note = FakeToolCall("take_note", {"text": "again"})
    fake, conversation, desk = _setup(
        FakeReply(text="One.", tool_calls=[note]),
        FakeReply(text="Two.", tool_calls=[note]),
        FakeReply(text="Three.", tool_calls=[note]),  # ignored: tools were not allowed any more
        FakeReply(text="Never requested."),
        config=config,
    )
    sink = RecordingSink()
    reply = await conversation.respond("go", sink=sink)

    bodies = _chat_bodies(fake)
    assert len(bodies) == 3
    assert [b.get("tool_choice") for b in bodies] == [None, None, "none"]
    assert len(desk.runs) == 2
    assert sink.spoken == ["One.", "Two.", "Three."]
    assert reply.error is None
    # The ignored call is not in the context: every call there has its result.
    roles = [m["role"] for m in conversation.context.request_messages("s")]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]


async def test_a_barge_in_during_a_tool_call_stops_the_reply_and_leaves_a_coherent_context():
    desk = Desk(gate=asyncio.Event())
    fake, conversation, _ = _setup(
        FakeReply(text="Booking that now.", tool_calls=[FakeToolCall("book_meeting", BOOK, id="call_b")]),
        FakeReply(text="This follow-up is never requested."),
        FakeReply(text="Sure, what else?"),
        desk=desk,
    )
    sink = RecordingSink()
    turn = asyncio.create_task(conversation.respond("book it", sink=sink))
    await asyncio.wait_for(desk.started.wait(), 5)
    turn.cancel()
    await asyncio.sleep(0.05)
    assert not turn.done()  # the booking is let finish, so the context can say whether it happened
    desk.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(turn, 5)

    assert len(_chat_bodies(fake)) == 1  # no follow-up after the barge-in
    second = RecordingSink()
    await conversation.respond("actually, one more thing", sink=second)
    body = _chat_bodies(fake)[1]  # the fake answers 400 to an unpaired tool call: it was accepted
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][2]["tool_calls"][0]["id"] == "call_b"
    assert body["messages"][3]["tool_call_id"] == "call_b"
    assert json.loads(body["messages"][3]["content"])["ok"] is True
    assert second.spoken == ["This follow-up is never requested."]


async def test_a_barge_in_while_end_call_runs_still_asks_the_call_to_end():
    desk = Desk(end_gate=asyncio.Event())
    _, conversation, _ = _setup(
        FakeReply(
            text="Thanks for your time. ||BREAK|| Goodbye!",
            tool_calls=[FakeToolCall("end_call", {"outcome": "not_interested"})],
        ),
        desk=desk,
    )
    reply = Reply()
    turn = asyncio.create_task(conversation.respond("not interested", sink=RecordingSink(), reply=reply))
    await asyncio.wait_for(desk.end_started.wait(), 5)
    turn.cancel()  # the caller talks while the tool stores the outcome
    desk.end_gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(turn, 5)
    # The outcome is stored and the model was told the call ends: the call layer must end it.
    assert reply.end_call is not None and reply.end_call.by == "tool"


async def test_end_call_with_its_goodbye_ends_the_reply_without_a_follow_up():
    fake, conversation, desk = _setup(
        FakeReply(
            text="Thanks for your time. ||BREAK|| Goodbye!",
            tool_calls=[FakeToolCall("end_call", {"outcome": "not_interested"})],
        ),
        FakeReply(text="Never requested."),
    )
    sink = RecordingSink(speak_seconds=0.05)
    reply = await conversation.respond("not interested", sink=sink)
    assert len(_chat_bodies(fake)) == 1
    assert desk.runs == [("end", {"outcome": "not_interested"})]
    assert reply.end_call is not None and reply.end_call.by == "tool"
    # respond() returns only once the goodbye has been spoken: the call layer ends the call after it.
    assert sink.spoken == ["Thanks for your time.", "Goodbye!"]


async def test_end_call_without_words_gets_a_spoken_goodbye_from_a_follow_up_without_tools():
    fake, conversation, _ = _setup(
        FakeReply(tool_calls=[FakeToolCall("end_call", {"outcome": "meeting_booked"})]),
        FakeReply(text="See you Tuesday. Goodbye!"),
    )
    sink = RecordingSink()
    reply = await conversation.respond("great, bye", sink=sink)
    assert _chat_bodies(fake)[1]["tool_choice"] == "none"
    assert sink.spoken == ["See you Tuesday. Goodbye!"]
    assert reply.end_call is not None


async def test_end_call_when_the_model_says_nothing_at_all_speaks_the_default_goodbye():
    _, conversation, _ = _setup(
        FakeReply(tool_calls=[FakeToolCall("end_call", {"outcome": "not_interested"})]),
        FakeReply(text=""),
    )
    sink = RecordingSink()
    reply = await conversation.respond("bye", sink=sink)
    assert sink.spoken == [DEFAULT_GOODBYE]
    assert reply.error is None and reply.end_call is not None


async def test_tier_3_fallback_ends_the_call_unless_configured_not_to():
    _, conversation, _ = _setup(*[FakeReply(fault=Fault.SERVER_ERROR)] * 3)
    ends = []
    for n in range(3):
        reply = await conversation.respond(f"turn {n}", sink=RecordingSink())
        ends.append(reply.end_call.by if reply.end_call else None)
    assert ends == [None, None, "fallback"]

    _, conversation, _ = _setup(
        *[FakeReply(fault=Fault.SERVER_ERROR)] * 3, config=dataclasses.replace(CONFIG, tier3_ends_call=False)
    )
    replies = [await conversation.respond(f"turn {n}", sink=RecordingSink()) for n in range(3)]
    assert [r.fallback_tier for r in replies] == [1, 2, 3]
    assert all(r.end_call is None for r in replies)


async def test_a_stream_dropped_mid_tool_call_is_retried_and_the_call_runs_once_with_clean_arguments():
    config = dataclasses.replace(CONFIG, max_retries=1)
    call = FakeToolCall("book_meeting", BOOK, id="call_r", piece=3)
    _, conversation, desk = _setup(
        FakeReply(tool_calls=[call], fault=Fault.DROP, fault_after=6),
        FakeReply(tool_calls=[call]),
        FakeReply(text="Booked."),
        config=config,
    )
    sink = RecordingSink()
    reply = await conversation.respond("book it", sink=sink)
    assert desk.runs == [("book", BOOK)]
    assert reply.retries == 1
    assert sink.spoken == ["Booked."]


async def test_the_fake_refuses_a_follow_up_whose_tool_calls_have_no_results():
    fake = FakeOpenAI()
    provider = OpenAIChatProvider(api_key="sk-test", http_client=fake.http_client())
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "x", "arguments": "{}"}}],
        },
        {"role": "user", "content": "hello?"},
    ]
    with pytest.raises(ProviderError) as raised:
        async for _ in provider.stream_chat(messages=messages, params=CONFIG.params, call_id="c"):
            pass
    assert raised.value.kind is ErrorKind.INVALID_REQUEST
    assert "did not have response messages: c1" in raised.value.message


def test_the_assembler_joins_pieces_by_index_even_interleaved_or_with_a_repeated_name():
    assembler = ToolCallAssembler()
    assembler.feed([{"index": 1, "id": "b", "function": {"name": "end_call", "arguments": ""}}])
    assembler.feed([{"index": 0, "id": "a", "function": {"name": "book_meeting", "arguments": '{"st'}}])
    assembler.feed([{"index": 1, "function": {"name": "end_call", "arguments": '{"outcome": '}}])
    assembler.feed(
        [
            {"index": 0, "function": {"arguments": 'art": "x"}'}},
            {"index": 1, "function": {"arguments": '"no"}'}},
        ]
    )
    assembler.feed([{"index": 2, "function": {"name": "take_note", "arguments": "{}"}}])  # no id
    calls = assembler.calls(id_prefix="call_0")
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("a", "book_meeting", '{"start": "x"}'),
        ("b", "end_call", '{"outcome": "no"}'),
        ("call_0_2", "take_note", "{}"),
    ]


async def test_an_empty_required_text_is_refused_by_name():
    registry = Desk().registry()
    result = await registry.run(
        name="book_meeting", arguments='{"start": "", "duration_minutes": 30}', context=ToolContext("c")
    )
    assert json.loads(result.content) == {
        "ok": False,
        "error": "Invalid arguments: 'start' must not be empty.",
    }


async def test_when_the_goodbye_after_end_call_fails_the_caller_still_hears_a_goodbye_not_a_question():
    _, conversation, _ = _setup(
        FakeReply(tool_calls=[FakeToolCall("end_call", {"outcome": "not_interested"})]),
        FakeReply(fault=Fault.SERVER_ERROR),
    )
    sink = RecordingSink()
    reply = await conversation.respond("bye", sink=sink)
    assert sink.spoken == [DEFAULT_GOODBYE]
    assert reply.end_call is not None and reply.end_call.by == "tool"
    assert reply.fallback_tier == 1 and reply.error is not None


async def test_a_server_that_refuses_tools_gets_the_request_again_without_them_for_the_rest_of_the_call():
    fake, conversation, _ = _setup(
        FakeReply(fault=Fault.BAD_REQUEST), FakeReply(text="Hi there."), FakeReply(text="Sure.")
    )
    first, second = RecordingSink(), RecordingSink()
    reply = await conversation.respond("hello", sink=first)
    await conversation.respond("and then?", sink=second)
    assert first.spoken == ["Hi there."] and second.spoken == ["Sure."]
    assert reply.error is None and reply.fallback_tier is None and reply.tools_refused is True
    assert ["tools" in body for body in _chat_bodies(fake)] == [True, False, False]
