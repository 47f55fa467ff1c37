"""Context limits: drop the oldest turns, never the system prompt or the newest user turn."""

from llm.context import ConversationContext, estimate_tokens


def _fill(context: ConversationContext, turns: int) -> None:
    for n in range(1, turns + 1):
        context.add_user(f"question {n}", timestamp=float(n))
        context.add_assistant(f"answer {n}", timestamp=float(n))


def test_unlimited_context_keeps_everything():
    context = ConversationContext()
    _fill(context, 30)
    messages = context.request_messages("SYSTEM")
    assert len(messages) == 61
    assert messages[0] == {"role": "system", "content": "SYSTEM"}
    assert messages[1] == {"role": "user", "content": "question 1"}


def test_max_messages_drops_the_oldest_whole_turns():
    context = ConversationContext(max_messages=4)
    _fill(context, 3)
    context.add_user("question 4", timestamp=4.0)
    contents = [m["content"] for m in context.request_messages("SYSTEM")]
    assert contents == ["SYSTEM", "question 3", "answer 3", "question 4"]


def test_max_messages_never_drops_the_newest_user_message():
    context = ConversationContext(max_messages=1)
    context.add_user("first", timestamp=1.0)
    context.add_assistant("reply", timestamp=1.0)
    context.add_user("second", timestamp=2.0)
    assert context.request_messages("S") == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "second"},
    ]


def test_token_budget_keeps_the_newest_turns_and_the_system_prompt():
    context = ConversationContext(
        max_context_tokens=estimate_tokens("SYSTEM") + 3 * estimate_tokens("question 10")
    )
    _fill(context, 10)
    context.add_user("question 11", timestamp=11.0)
    messages = context.request_messages("SYSTEM")
    assert messages[0]["role"] == "system"
    assert messages[1]["role"] == "user"
    assert messages[-1] == {"role": "user", "content": "question 11"}
    assert len(messages) <= 4
    # Trimming affects the request only: the stored history is whole.
    assert len(context.messages) == 21


def test_empty_assistant_text_is_not_recorded():
    context = ConversationContext()
    context.add_user("hello", timestamp=1.0)
    context.add_assistant("   ", timestamp=1.0)
    assert [m.role for m in context.messages] == ["user"]
