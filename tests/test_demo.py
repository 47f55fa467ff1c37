"""The demo responder: scripted, labelled, streamed through the real SDK."""

from llm.config import LLMConfig
from llm.demo import DEMO_LABEL, build_demo_provider, demo_reply_text
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
