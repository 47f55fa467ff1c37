"""What speech is given, and how its audio is cut for the socket."""

import pytest

from tts.framing import PcmFramer
from tts.text_cleaning import clean_for_speech


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("**Great** question!", "Great question!"),
        ("## Pricing\n- Team plan: $400\n- Pro plan: $900", "Pricing Team plan: $400 Pro plan: $900"),
        ("1. First step\n2. Second step", "First step Second step"),
        ("See [our pricing](https://vantum.ai/pricing) page.", "See our pricing page."),
        ("Use `book_demo` now", "Use book_demo now"),
        ("Sounds great 🎉👍 let's talk", "Sounds great let's talk"),
        ("I'd love that <br/> truly", "I'd love that truly"),
        ("Leftover || pipes", "Leftover pipes"),
        (
            "Mail sales@vantum.ai or visit https://vantum.ai",
            "Mail sales@vantum.ai or visit https://vantum.ai",
        ),
        ("It costs $1,200.50, about 3.5% more.", "It costs $1,200.50, about 3.5% more."),
        ("*Really*? _Yes_.", "Really? Yes."),
        ("🎉🎉", ""),
        ("**", ""),
    ],
)
def test_markdown_emoji_and_markup_are_not_read_aloud(written, spoken):
    assert clean_for_speech(written) == spoken


def test_frames_are_whole_samples_within_both_limits_and_lose_nothing():
    framer = PcmFramer(sample_rate=16000, frame_ms=40, max_frame_bytes=1000)
    blocks = [bytes(range(256)) * 3 + b"\x07", b"\x08" * 1501, b"\x09" * 3]  # odd sizes
    frames = [frame for block in blocks for frame in framer.feed(block)]
    frames += list(framer.flush())
    assert all(len(frame) % 2 == 0 for frame in frames)
    assert max(len(frame) for frame in frames) <= 1000
    data = b"".join(blocks)
    assert b"".join(frames) == data[: len(data) - len(data) % 2]


def test_frame_duration_is_capped_by_frame_ms():
    framer = PcmFramer(sample_rate=22050, frame_ms=40, max_frame_bytes=1 << 20)
    frames = list(framer.feed(b"\x00\x01" * 22050))  # one second
    assert {len(frame) for frame in frames[:-1]} == {1764}  # 882 samples = 40 ms
    assert sum(len(f) for f in frames) == 44100


def test_an_odd_byte_is_carried_into_the_next_block_never_sent_alone():
    framer = PcmFramer(sample_rate=16000, frame_ms=20, max_frame_bytes=4096)
    assert list(framer.feed(b"\x01")) == []
    assert list(framer.feed(b"\x02\x03")) == [b"\x01\x02"]
    assert list(framer.flush()) == []
    assert list(framer.feed(b"\x04\x05")) == [b"\x04\x05"]


def test_invalid_framer_settings_are_refused():
    with pytest.raises(ValueError):
        PcmFramer(sample_rate=0, frame_ms=40, max_frame_bytes=1000)


def test_adaptive_frames_start_small_and_double_up_to_the_largest():
    framer = PcmFramer(sample_rate=16000, frame_ms=100, max_frame_bytes=1 << 20, max_frame_ms=500)
    first = list(framer.feed(b"\x00\x01" * 16000))  # one second, in one block
    assert [len(f) // 32 for f in first] == [100, 200, 400, 300]  # ms: the last is what was left
    later = list(framer.feed(b"\x00\x01" * 16000)) + list(framer.flush())
    # The growth spans chunks of one reply: the next chunk goes out in 500 ms frames.
    assert [len(f) // 32 for f in later] == [500, 500]
    assert b"".join(first + later) == b"\x00\x01" * 32000


def test_a_small_block_leaves_at_once_even_when_frames_may_be_larger():
    framer = PcmFramer(sample_rate=16000, frame_ms=100, max_frame_bytes=1 << 20, max_frame_ms=1000)
    assert list(framer.feed(b"\x05\x06" * 160)) == [b"\x05\x06" * 160]  # 10 ms, not held back


def test_adaptive_frames_stay_within_the_byte_cap():
    framer = PcmFramer(sample_rate=24000, frame_ms=100, max_frame_bytes=10_001, max_frame_ms=1000)
    frames = list(framer.feed(b"\x00" * 96000))  # two seconds at 24 kHz
    assert [len(f) for f in frames[:3]] == [4800, 9600, 10000]
    assert max(len(f) for f in frames) == 10000
    assert sum(len(f) for f in frames) == 96000
    with pytest.raises(ValueError, match="max_frame_ms"):
        PcmFramer(sample_rate=16000, frame_ms=100, max_frame_bytes=1000, max_frame_ms=50)
