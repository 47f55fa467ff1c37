"""The semantic chunker: the spec's cases, and the cases models really produce."""

from __future__ import annotations

import pytest

from llm.chunking import SemanticChunker


def chunk(text_or_tokens, **options) -> list[str]:
    chunker = SemanticChunker(**options)
    tokens = [text_or_tokens] if isinstance(text_or_tokens, str) else text_or_tokens
    out = [c for token in tokens for c in chunker.feed(token)]
    return out + chunker.flush()


# --- the spec's cases -------------------------------------------------------------------


def test_extracts_chunks_at_break_markers():
    assert chunk("Hi there friend, welcome. ||BREAK|| How can I help you today?") == [
        "Hi there friend, welcome.",
        "How can I help you today?",
    ]


def test_the_specs_integration_example_gives_three_chunks():
    tokens = [
        "Hi, this is Alex. ",
        "||BREAK|| ",
        "How can I help you? ",
        "||BREAK|| ",
        "We have great offers.",
    ]
    assert chunk(tokens) == ["Hi, this is Alex.", "How can I help you?", "We have great offers."]


def test_chunks_are_trimmed_and_empty_chunks_filtered():
    assert chunk("   Hello there.   ||BREAK||   ||BREAK|| ... ||BREAK||\n\n Next part.  ") == [
        "Hello there.",
        "Next part.",
    ]


def test_multiple_consecutive_markers_cut_once():
    assert chunk("One two three.||BREAK||||BREAK|| ||BREAK||Four five six.") == [
        "One two three.",
        "Four five six.",
    ]


def test_text_without_markers_falls_back_to_sentences():
    text = "Thanks so much for taking my call today. I wanted to ask about your outreach. Is now okay?"
    assert chunk(text) == [
        "Thanks so much for taking my call today.",
        "I wanted to ask about your outreach.",
        "Is now okay?",
    ]


def test_short_sentences_merge_until_the_minimum_word_count():
    assert chunk("Hi there. Great to meet you. I am Alex from Vantum. Ok.") == [
        "Hi there. Great to meet you.",
        "I am Alex from Vantum.",
        "Ok.",
    ]


def test_complete_mode_keeps_a_marker_less_reply_whole():
    text = "Thanks so much for taking my call today. I wanted to ask about your outreach."
    assert chunk(text, fallback_mode="complete") == [text]


def test_a_forced_cut_never_cuts_mid_word():
    text = " ".join(["extraordinarily"] * 40)
    chunks = chunk(text, max_chunk_chars=100)
    assert all(len(c) <= 100 for c in chunks)
    assert all(set(c.split()) == {"extraordinarily"} for c in chunks)
    assert sum(len(c.split()) for c in chunks) == 40


# --- markers as models write them ----------------------------------------------------------


@pytest.mark.parametrize(
    "marker", ["||BREAK||", "|| BREAK ||", "||break||", "||Break||", "|| break||", "||  BREAK  ||"]
)
def test_markers_in_any_case_and_with_spaces_cut(marker):
    assert chunk(f"First part of the reply. {marker} Second part of the reply.") == [
        "First part of the reply.",
        "Second part of the reply.",
    ]


def test_a_marker_split_at_every_position_gives_the_same_chunks():
    text = "Glad to hear it. ||BREAK|| Let me explain how it works."
    start = text.index("||")
    for split in range(start - 1, start + len("||BREAK||") + 2):
        assert chunk([text[:split], text[split:]]) == ["Glad to hear it.", "Let me explain how it works."]


def test_a_chunk_is_returned_by_the_feed_that_completes_its_marker():
    chunker = SemanticChunker()
    assert chunker.feed("That's a great question! ") == []
    assert chunker.feed("||BRE") == []
    assert chunker.feed("AK|") == []
    assert chunker.feed("|") == ["That's a great question!"]
    assert chunker.saw_marker is True


def test_a_truncated_marker_at_the_end_is_never_spoken():
    assert chunk(["We can help with that. ", "||BRE"]) == ["We can help with that."]
    assert chunk("Sure thing, see you then ||") == ["Sure thing, see you then"]


def test_lone_pipes_are_content():
    assert chunk("Use A|B testing, or x || y logic, in campaigns.") == [
        "Use A|B testing, or x || y logic, in campaigns."
    ]


def test_after_the_first_marker_only_markers_cut():
    text = "Okay. ||BREAK|| First sentence here. Second sentence there. ||BREAK|| Last one."
    assert chunk(text) == ["Okay.", "First sentence here. Second sentence there.", "Last one."]


def test_before_any_marker_a_long_enough_sentence_is_spoken_at_once():
    chunker = SemanticChunker()
    assert chunker.feed("I understand your concern completely. Many") == [
        "I understand your concern completely."
    ]


def test_flush_readies_the_chunker_for_the_next_response():
    chunker = SemanticChunker()
    chunker.feed("Part one is here. ||BREAK|| Part two")
    assert chunker.flush() == ["Part two"]
    assert chunker.saw_marker is False
    assert chunker.feed("Another reply starts now with enough words. And") == [
        "Another reply starts now with enough words."
    ]


# --- limits and where they cut ----------------------------------------------------------------

SMALL = {"min_chunk_words": 2, "max_chunk_words": 8, "max_chunk_chars": 60}


def test_limits_prefer_a_sentence_end_then_a_clause_then_a_space():
    assert chunk("||BREAK|| Short one here. Then a much longer sentence follows it", **SMALL) == [
        "Short one here.",
        "Then a much longer sentence follows it",
    ]
    assert chunk("||BREAK|| We looked at costs, and then we looked at the timeline", **SMALL) == [
        "We looked at costs,",
        "and then we looked at the timeline",
    ]
    assert chunk("||BREAK|| one two three four five six seven eight nine ten", **SMALL) == [
        "one two three four five six seven eight",
        "nine ten",
    ]


@pytest.mark.parametrize(
    "protected",
    [
        "Dr. Smith",
        "the U.S. office",
        "e.g. this",
        "5 p.m. today",
        "etc. and more",
        "J. R. Martinez",
        "Really? yes",
        "Wait... and then",
    ],
)
def test_limit_cuts_never_fall_after_abbreviations_initials_or_lowercase_continuations(protected):
    text = f"||BREAK|| a b c {protected} d e f g h i j k l m n"
    chunks = chunk(text, **SMALL)
    assert any(protected in c for c in chunks), chunks


@pytest.mark.parametrize("atom", ["$3.50", "1,200", "https://vantum.ai/pricing?plan=team", "sales@vantum.ai"])
def test_numbers_urls_and_emails_are_never_split(atom):
    words = ["word"] * 6 + [atom] + ["word"] * 6
    chunks = chunk("||BREAK|| " + " ".join(words), **SMALL)
    assert sum(c.split().count(atom) for c in chunks) == 1


def test_closing_quotes_and_brackets_stay_with_their_sentence():
    assert chunk('He said "we are ready to start." Then we talked about (the next steps.) Fine by me.') == [
        'He said "we are ready to start."',
        "Then we talked about (the next steps.)",
        "Fine by me.",
    ]


def test_a_word_longer_than_the_limit_is_spoken_whole():
    url = "https://vantum.ai/" + "x" * 120
    assert chunk(f"||BREAK|| See {url} for details", max_chunk_chars=60) == ["See", url, "for details"]


def test_long_marker_less_text_obeys_both_limits():
    text = " ".join(f"word{n}" for n in range(500))
    chunks = chunk(text)
    assert all(len(c.split()) <= 50 and len(c) <= 300 for c in chunks)
    assert " ".join(chunks) == text


def test_unicode_and_emoji_pass_through():
    assert chunk("Très bien, merci beaucoup 🎉 ||BREAK|| Größe ist wichtig.") == [
        "Très bien, merci beaucoup 🎉",
        "Größe ist wichtig.",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"break_marker": ""}, "break_marker"),
        ({"min_chunk_words": 0}, "min_chunk_words"),
        ({"min_chunk_words": 9, "max_chunk_words": 5}, "max_chunk_words"),
        ({"max_chunk_chars": 5}, "max_chunk_chars"),
        ({"max_buffer_size": 100}, "max_buffer_size"),
        ({"fallback_mode": "words"}, "fallback_mode"),
    ],
)
def test_nonsense_configuration_is_refused_naming_the_field(options, message):
    with pytest.raises(ValueError) as raised:
        SemanticChunker(**options)
    assert str(raised.value).startswith(message)


def test_concurrent_replies_use_separate_chunkers_and_do_not_mix():
    first, second = SemanticChunker(), SemanticChunker()
    out = first.feed("Alpha beta gamma delta. ||BRE") + second.feed("One two three four. ||BREAK||")
    out += first.feed("AK||")
    assert out == ["One two three four.", "Alpha beta gamma delta."]
