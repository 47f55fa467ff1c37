"""Hands-free calls (``turnDetection: "server"``) on the transport-free ``CallSession``.

Speech is made on the fly by Piper; the listening engines are the real offline defaults
(Silero VAD, Whisper tiny.en), the speech engine a beep and the model a script (the reply's
words do not matter here, when and whether it is cut does).
"""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from calls.session import CallSession, Request
from tests.calls_helpers import stored_messages
from tests.speech_samples import at_rate, chunks, cough, noise, piper_pcm, silence
from tests.support import BeepEngine, CannedTranscriber, Script, ScriptedProvider, tokens_of
from tests.test_call_session import RecordingPort

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"
UPDATE = Request("voicechat.session.update", "req-u")
QUESTION = "What does it cost for a small team?"
SECOND = "Can we start next week?"


@pytest.fixture(scope="module")
def whisper():
    from stt.local_whisper import LocalWhisperTranscriber

    transcriber = LocalWhisperTranscriber(model="tiny.en", max_concurrent=2, window_seconds=10)
    yield transcriber
    transcriber.close()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def speech(text: str, rate: int = 16000) -> bytes:
    return at_rate(piper_pcm(text), rate)


async def feed(session: CallSession, pcm: bytes, *, rate: int = 16000, chunk_bytes: int = 8192) -> None:
    """Stream ``pcm`` as the browser does (8192-byte chunks), yielding between chunks."""
    for chunk in chunks(pcm, chunk_bytes):
        session.audio_chunk(chunk)
        await asyncio.sleep(0)


async def until(condition, timeout: float = 30.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"still waiting after {timeout} s; the port got {_ports[-1].calls}") from None


_ports: list[RecordingPort] = []


async def hands_free(port: RecordingPort, *, rate: int | None = None) -> CallSession:
    _ports.append(port)
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.update(request=UPDATE, turn_detection="server")
    if rate is not None:
        await session.audio_start(
            request=Request("voicechat.audio.start"), sample_rate=rate, voice_id=None, language=None
        )
    return session


async def settle(session: CallSession) -> None:
    """Let the listener's queue drain and every turn finish."""
    await asyncio.sleep(0.05)
    if session.turn_tasks:
        await asyncio.wait_for(asyncio.gather(*session.turn_tasks, return_exceptions=True), 60)


async def test_a_spoken_question_is_heard_ended_by_silence_transcribed_and_answered(use_engines, whisper):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    question = speech(QUESTION)
    spoken_ms = len(question) // 32
    await feed(session, silence(600) + question + silence(1200))
    await until(lambda: "complete" in port.kinds())
    await settle(session)
    await session.hangup()

    kinds = port.kinds()
    assert kinds[:4] == ["speech_started", "speech_stopped", "user", "start"]
    started, stopped = port.calls[0][1], port.calls[1][1]
    assert 600 - 64 <= started <= 600 + 64  # the onset, in audio time (32 ms frames)
    # The end: the last speech sample plus TURN_END_SILENCE_MS (400 ms), within a frame or three.
    assert 600 + spoken_ms + 400 - 64 <= stopped <= 600 + spoken_ms + 400 + 96
    assert words(port.calls[2][1]) == words(QUESTION)
    assert session.listener.speculations_reused == 1  # the pause's transcript was the turn's
    messages = await stored_messages(session.session_id)
    assert [(m.role, m.source if m.role == "user" else "") for m in messages] == [
        ("user", "voice"),
        ("assistant", ""),
    ]


async def test_two_turns_in_a_row_at_the_browser_rate_with_odd_chunk_sizes(use_engines, whisper):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port, rate=48000)
    audio = (
        silence(300, 48000)
        + speech(QUESTION, 48000)
        + silence(2000, 48000)
        + speech(SECOND, 48000)
        + silence(1000, 48000)
    )
    await feed(session, audio, rate=48000, chunk_bytes=8191)  # odd: every other chunk splits a sample
    await until(lambda: port.kinds().count("complete") == 2)
    await settle(session)
    await session.hangup()

    users = [c[1] for c in port.calls if c[0] == "user"]
    assert [words(u) for u in users] == [words(QUESTION), words(SECOND)]
    assert port.kinds().count("speech_started") == 2
    assert port.kinds().count("speech_stopped") == 2


async def test_speaking_over_the_agent_cuts_its_reply_and_keeps_only_what_was_heard(use_engines, whisper):
    never = asyncio.Event()
    use_engines(
        chat=ScriptedProvider(
            [Script(tokens_of(REPLY), pause_after=12, resume=never), Script(tokens_of(REPLY))]
        ),
        speech=BeepEngine(),
        transcriber=whisper,
    )
    port = RecordingPort()
    session = await hands_free(port)
    await session.text_input("Hello", request=Request("voicechat.text.input", "t1"))
    await until(lambda: "audio" in port.kinds())  # the agent is speaking, its model still writing
    await feed(session, silence(300) + speech("Sorry, stop, how much is it?") + silence(1000))
    await until(lambda: "stop" in port.kinds())
    await until(lambda: port.kinds().count("user") == 2)
    await settle(session)
    await session.hangup()

    kinds = port.kinds()
    # Cut once the caller had spoken BARGE_IN_MIN_SPEECH_MS, before their turn ended.
    assert kinds.index("speech_started") < kinds.index("stop") < kinds.index("speech_stopped")
    messages = await stored_messages(session.session_id)
    first_reply = messages[1]
    assert first_reply.role == "assistant" and first_reply.interrupted is True
    assert first_reply.text == "Hi, this is Alex from Vantum."
    assert words(messages[2].text) == words("Sorry, stop, how much is it?")


@pytest.mark.parametrize(
    ("sound", "heard_as_speech"),
    [
        pytest.param(lambda: cough() + silence(700) + cough(seed=5) + silence(700), False, id="coughs"),
        pytest.param(lambda: noise(5000, level=0.05), False, id="fan-noise"),
        # Voiced bursts the VAD does hear as speech (so the barge-in minimum, not the VAD,
        # is what keeps them from cutting): 180 ms of "mm-hm", 150 ms of "yeah".
        pytest.param(lambda: speech("Mm-hm.")[: 16 * 2 * 180] + silence(800), True, id="short-mm-hm"),
        pytest.param(lambda: speech("Yeah.")[: 16 * 2 * 150] + silence(800), True, id="150-ms-yeah"),
    ],
)
async def test_coughs_noise_and_a_short_mm_hm_do_not_interrupt_the_agent(
    use_engines, whisper, sound, heard_as_speech
):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    await session.text_input("Hello", request=Request("voicechat.text.input", "t1"))
    await until(lambda: "complete" in port.kinds())
    port.playing = True  # the caller still hears the reply
    await feed(session, sound())
    await settle(session)
    port.playing = False  # the reply played to its end
    await session.hangup()

    assert "stop" not in port.kinds()
    assert [c for c in port.calls if c[0] == "user"] == [("user", "Hello")]
    assert (await stored_messages(session.session_id))[-1].interrupted is False
    assert ("speech_started" in port.kinds()) is heard_as_speech
    assert ("speech_stopped" in port.kinds()) is heard_as_speech


async def test_pure_noise_and_muted_audio_make_no_turn(use_engines, whisper):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    await feed(session, noise(8000, level=0.08, seed=7))
    for chunk in chunks(speech(QUESTION), 8192):
        session.audio_chunk(chunk, muted=True)  # muted: heard as silence, never as words
    await settle(session)
    await session.hangup()
    assert port.calls == []


async def test_muting_mid_sentence_ends_the_turn_by_silence(use_engines, whisper):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    await feed(session, speech(QUESTION))
    for chunk in chunks(silence(300) + speech(SECOND), 8192):
        session.audio_chunk(chunk, muted=True)
    await until(lambda: "user" in port.kinds())
    await settle(session)
    await session.hangup()
    assert words(next(c for c in port.calls if c[0] == "user")[1]) == words(QUESTION)


async def test_audio_end_ends_the_turn_at_once_without_waiting_for_silence(use_engines, whisper):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    await feed(session, silence(200) + speech(QUESTION))
    await asyncio.sleep(0.05)
    assert "speech_stopped" not in port.kinds()
    await session.audio_end(request=Request("voicechat.audio.end", "e1"))
    await until(lambda: "user" in port.kinds())
    await settle(session)
    await session.audio_end(request=Request("voicechat.audio.end", "e2"))  # nothing heard: nothing
    await settle(session)
    await session.hangup()
    assert port.kinds()[:3] == ["speech_started", "speech_stopped", "user"]
    assert words(port.calls[2][1]) == words(QUESTION)
    assert port.kinds().count("user") == 1


async def test_a_pause_then_more_words_before_the_answer_makes_one_turn(use_engines, whisper):
    """The caller pauses long enough to end the turn, then goes on while it is still being
    transcribed: the two halves become one turn, answered once."""
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    session.engines.transcriber = SlowTranscriber(whisper, delay=1.5)
    session.listener.transcriber = session.engines.transcriber
    await feed(session, speech("I want to know") + silence(700))
    await until(lambda: "speech_stopped" in port.kinds())
    await feed(session, speech("the price for our team.") + silence(1000))
    await until(lambda: "user" in port.kinds(), timeout=60)
    await settle(session)
    await session.hangup()
    users = [c[1] for c in port.calls if c[0] == "user"]
    assert len(users) == 1, port.calls
    assert words(users[0]) == words("I want to know the price for our team.")


class SlowTranscriber:
    """The real transcriber, answering ``delay`` seconds late (a loaded server)."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay, self.name = inner, delay, inner.name

    async def transcribe(self, pcm: bytes, **options) -> str:
        await asyncio.sleep(self.delay)
        return await self.inner.transcribe(pcm, **options)


async def test_switching_modes_mid_call_keeps_both_ways_of_talking_working(use_engines, whisper):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    await feed(session, speech(QUESTION)[:16000])  # half a sentence, then the client switches
    await session.update(request=UPDATE, turn_detection="client")
    assert session.listener is None
    start = Request("voicechat.audio.start")
    await session.audio_start(request=start, sample_rate=16000, voice_id=None, language=None)
    session.audio_chunk(speech(SECOND))
    await session.audio_end(request=Request("voicechat.audio.end", "e1"))
    await until(lambda: "complete" in port.kinds())
    await session.update(request=UPDATE, turn_detection="server")
    await feed(session, speech(QUESTION) + silence(800))
    await until(lambda: port.kinds().count("complete") == 2)
    await settle(session)
    await session.hangup()
    users = [c[1] for c in port.calls if c[0] == "user"]
    assert [words(u) for u in users] == [words(SECOND), words(QUESTION)]
    assert port.kinds().count("speech_stopped") == 1  # the half sentence before the switch was dropped


async def test_ten_minutes_of_speech_without_a_pause_are_cut_into_bounded_turns_with_a_message(use_engines):
    transcriber = CannedTranscriber("and so on")
    use_engines(
        chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=transcriber
    )
    port = RecordingPort()
    session = await hands_free(port)
    sentence = speech("Our team has been comparing several vendors and we keep talking without a break")
    total = 0
    while total < 600 * 32000:
        await feed(session, sentence, chunk_bytes=32000)
        total += len(sentence)
    await settle(session)
    await session.hangup()
    forced = [c for c in port.calls if c == ("speech_error", "turn_too_long")]
    assert len(forced) >= 600 // 28 - 1
    assert "28 seconds without a pause" in port.messages[0]
    # Each turn the recogniser got is at most the maximum length (+ padding), at 16 kHz.
    assert transcriber.heard and max(n for n, _ in transcriber.heard) <= 2 * 16 * (28000 + 256 + 32)
    assert {rate for _, rate in transcriber.heard} == {16000}


async def test_hands_free_without_speech_to_text_is_refused_and_the_call_stays_typed(use_engines):
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    session.engines.transcriber = None
    await session.start()
    await session.update(request=UPDATE, turn_detection="server")
    await session.hangup()
    assert session.turn_detection == "client"
    assert port.calls == [
        (
            "error",
            "voicechat.session.update",
            "Hands-free needs speech-to-text, which is not configured on this server. "
            "Please type your message instead.",
        )
    ]


async def test_client_voices_map_to_local_voices_and_an_unknown_voice_is_reported_once(use_engines, settings):
    settings.VOICE_ALIASES = "kyle=beep-b,tessa=missing|beep-a"
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine())
    port = RecordingPort()
    session = CallSession(port=port, transport="test")
    await session.start()
    await session.update(request=UPDATE, voice_id="Kyle")
    assert session.voice_id == "beep-b"
    await session.update(request=UPDATE, voice_id="tessa")
    assert session.voice_id == "beep-a"
    for _ in range(3):
        await session.audio_start(
            request=Request("voicechat.audio.start"),
            sample_rate=16000,
            voice_id="a0e99841-438c",
            language=None,
        )
    await session.hangup()
    assert port.calls == [("speech_error", "voice")]
    assert port.messages == [
        "The voice 'a0e99841-438c' is not available on this server; the agent speaks with 'beep-a'. "
        "Map it with VOICE_ALIASES."
    ]


async def test_a_streaming_engine_gets_the_audio_while_the_caller_speaks_and_partials_reach_the_caller(
    use_engines,
):
    from stt.deepgram import DeepgramTranscriber
    from stt.fake_deepgram import FakeDeepgram

    said = "Do you work with small companies?"
    async with FakeDeepgram(transcripts=[said], words_every_ms=300) as fake:
        deepgram = DeepgramTranscriber(api_key=fake.api_key, url=fake.url, timeout=5.0)
        use_engines(
            chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=deepgram
        )
        port = RecordingPort()
        session = await hands_free(port, rate=24000)
        audio = silence(1000, 24000) + speech(said, 24000) + silence(1000, 24000)
        for chunk in chunks(audio, 8192):
            session.audio_chunk(chunk)
            await asyncio.sleep(0.03)  # a little under real time: interim words have time to come back
        await until(lambda: "complete" in port.kinds())
        await settle(session)
        await session.hangup()

    kinds = port.kinds()
    partials = [c[1] for c in port.calls if c[0] == "partial"]
    assert partials and all(said.startswith(p) for p in partials)
    assert kinds.index("speech_started") < kinds.index("partial") < kinds.index("speech_stopped")
    assert next(c for c in port.calls if c[0] == "user") == ("user", said)
    (stream,) = fake.sessions  # one stream for the one turn
    assert stream.params["sample_rate"] == "24000"
    # The turn's audio went to the engine as it came: from ~0.5 s before the onset to the end.
    assert 2 * 24000 * 1.0 < stream.audio_bytes < len(audio) - 2 * 24000 * 0.4
    assert stream.controls[:1] == ["Finalize"]


async def test_the_model_is_asked_at_the_callers_pause_and_the_turn_takes_that_answer(use_engines, whisper):
    provider = ScriptedProvider([Script(tokens_of(REPLY))])
    use_engines(chat=provider, speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    await feed(session, silence(300) + speech(QUESTION) + silence(200))  # a pause, not yet the end
    await until(lambda: len(provider.requests) == 1)  # asked before the end of the turn
    assert "speech_stopped" not in port.kinds()
    await feed(session, silence(800))
    await until(lambda: "complete" in port.kinds())
    await settle(session)
    await session.hangup()

    assert len(provider.requests) == 1  # the turn took the preemptive request
    assert words(provider.requests[0][-1]["content"]) == words(QUESTION)
    counts = session.conversation.provider.counts
    assert (counts.started, counts.used, counts.discarded) == (1, 1, 0)
    assert [c[2] for c in port.calls if c[0] == "text"] == [
        "Hi, this is Alex from Vantum.",
        "How is your week going?",
    ]


async def test_a_caller_who_goes_on_after_a_pause_gets_an_answer_to_all_they_said(use_engines, whisper):
    provider = ScriptedProvider([Script(tokens_of(REPLY))])
    use_engines(chat=provider, speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    await feed(session, silence(300) + speech("I run a bakery.") + silence(200))
    await until(lambda: len(provider.requests) == 1)
    await feed(session, speech(QUESTION) + silence(1000))  # they went on: that request is dropped
    await until(lambda: "complete" in port.kinds())
    await settle(session)
    await session.hangup()

    assert len(provider.requests) == 2
    assert words(provider.requests[1][-1]["content"]) == words("I run a bakery. " + QUESTION)
    counts = session.conversation.provider.counts
    assert (counts.started, counts.used, counts.discarded) == (1, 0, 1)
    users = [m.text for m in await stored_messages(session.session_id) if m.role == "user"]
    assert [words(text) for text in users] == [words("I run a bakery. " + QUESTION)]


async def test_client_mode_streams_the_utterance_to_deepgram_while_the_caller_speaks(use_engines):
    """The product's browser client (audio.start ... audio.end): a streaming engine hears the
    audio as it comes, so its final words are ready at audio.end, not transcribed after it."""
    from stt.deepgram import DeepgramTranscriber
    from stt.fake_deepgram import FakeDeepgram

    said = "Do you work with small companies?"
    async with FakeDeepgram(transcripts=[said], words_every_ms=300) as fake:
        deepgram = DeepgramTranscriber(api_key=fake.api_key, url=fake.url, timeout=5.0)
        use_engines(
            chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=deepgram
        )
        port = RecordingPort()
        _ports.append(port)
        session = CallSession(port=port, transport="test")
        await session.start()
        start = Request("voicechat.audio.start", "a1")
        await session.audio_start(request=start, sample_rate=24000, voice_id=None, language=None)
        audio = speech(said, 24000)
        for chunk in chunks(audio, 8192):
            session.audio_chunk(chunk)
            await asyncio.sleep(0)
        # The engine has every byte and has shown words before the caller lets go of the button.
        await until(lambda: len(fake.sessions) == 1 and fake.sessions[0].audio_bytes == len(audio))
        await until(lambda: "partial" in port.kinds())
        assert "user" not in port.kinds()
        await session.audio_end(request=Request("voicechat.audio.end", "e1"))
        await until(lambda: "complete" in port.kinds())
        await settle(session)
        await session.hangup()

    partials = [c[1] for c in port.calls if c[0] == "partial"]
    assert partials and all(said.startswith(p) for p in partials)
    assert next(c for c in port.calls if c[0] == "user") == ("user", said)
    (stream,) = fake.sessions  # one stream for the one utterance, opened at audio.start
    assert stream.params["sample_rate"] == "24000"
    assert stream.audio_bytes == len(audio)
    assert stream.controls[:1] == ["Finalize"]
    messages = await stored_messages(session.session_id)
    assert [(m.role, m.text if m.role == "user" else "") for m in messages] == [
        ("user", said),
        ("assistant", ""),
    ]


async def test_live_partial_words_arrive_while_the_caller_is_still_speaking(use_engines, whisper):
    """The local engine has no stream: the growing turn is transcribed about once a second
    while the pool is idle, so the caller sees their words before they stop talking."""
    said = "Could you tell me how much your service costs for a small team every month?"
    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    audio = silence(300) + speech(said)
    assert len(audio) > 2 * 16000 * 3  # over 3 s: a partial is due after the first second
    head = 2 * 16000 * 2  # the first two seconds
    await feed(session, audio[:head])
    # The caller is mid-sentence (audio time stands still): the partial comes from that alone.
    await until(lambda: "partial" in port.kinds())
    await feed(session, audio[head:] + silence(1000))
    await until(lambda: "complete" in port.kinds())
    await settle(session)
    await session.hangup()

    kinds = port.kinds()
    assert kinds.index("speech_started") < kinds.index("partial") < kinds.index("speech_stopped")
    final = words(next(c for c in port.calls if c[0] == "user")[1])
    assert final == words(said)
    partial = words(next(c for c in port.calls if c[0] == "partial")[1])
    # Tolerant: the last word of a partial may be cut in the middle, and Whisper may hear a
    # word of a half sentence differently ("you're" for "your"); the rest matches the start.
    assert len(partial) >= 3, partial
    same = [a == b for a, b in zip(partial[:-1], final, strict=False)]
    assert same[0] and sum(same) >= 2 * len(same) / 3, (partial, final)


class ThreadsOf:
    """The real end-of-turn model, noting the thread each question ran on."""

    def __init__(self, model) -> None:
        self.model, self.threads = model, []

    def turn_complete_probability(self, pcm16k: bytes) -> float:
        self.threads.append(threading.current_thread())
        return self.model.turn_complete_probability(pcm16k)


async def test_smart_turn_runs_off_the_event_loop_and_decides_as_it_did_on_it(use_engines, whisper, settings):
    from calls.engines import build_turn_config
    from calls.listening import vad_factory
    from stt.smart_turn import shared_smart_turn
    from stt.turn_detection import SpeechStarted, TurnDetector, TurnEnded

    settings.TURN_SMART = True
    audio = (
        silence(300) + speech("So what I was thinking is that") + silence(900) + speech("we start in May.")
    )
    audio += silence(2500)
    # The decisions of the detector fed on this thread, chunk by chunk, as before.
    reference = TurnDetector(vad=vad_factory()(), config=build_turn_config(), end_of_turn=shared_smart_turn())
    expected = []
    for chunk in chunks(audio, 8192):
        expected += [
            ("speech_started" if isinstance(e, SpeechStarted) else "speech_stopped", e.at_ms)
            for e in reference.feed(chunk, 16000)
            if isinstance(e, SpeechStarted | TurnEnded)
        ]
    assert reference.smart_holds >= 1  # the model really changed the decision here

    use_engines(chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=whisper)
    port = RecordingPort()
    session = await hands_free(port)
    model = ThreadsOf(shared_smart_turn())
    session.listener.detector.end_of_turn = model
    await feed(session, audio)
    await until(lambda: "complete" in port.kinds())
    await settle(session)
    heard = [c for c in port.calls if c[0] in ("speech_started", "speech_stopped")]
    holds = session.listener.detector.smart_holds
    await session.hangup()

    assert heard == expected
    assert holds == reference.smart_holds
    assert model.threads and threading.current_thread() not in model.threads  # never on the loop


async def test_client_mode_with_deepgram_failing_mid_utterance_reports_it_and_the_call_goes_on(use_engines):
    from stt.deepgram import MESSAGES, DeepgramTranscriber
    from stt.fake_deepgram import FakeDeepgram

    async with FakeDeepgram(fault="drop") as fake:
        deepgram = DeepgramTranscriber(api_key=fake.api_key, url=fake.url, timeout=5.0)
        use_engines(
            chat=ScriptedProvider([Script(tokens_of(REPLY))]), speech=BeepEngine(), transcriber=deepgram
        )
        port = RecordingPort()
        _ports.append(port)
        session = CallSession(port=port, transport="test")
        await session.start()
        start = Request("voicechat.audio.start", "a1")
        await session.audio_start(request=start, sample_rate=16000, voice_id=None, language=None)
        for chunk in chunks(speech(QUESTION), 8192):
            session.audio_chunk(chunk)
            await asyncio.sleep(0)
        await until(lambda: len(fake.sessions) == 1 and fake.sessions[0].audio_bytes > 0)
        await session.audio_end(request=Request("voicechat.audio.end", "e1"))
        await until(lambda: "error" in port.kinds())
        await session.text_input("Hello", request=Request("voicechat.text.input", "t1"))
        await until(lambda: "complete" in port.kinds())
        await settle(session)
        await session.hangup()

    assert port.calls[0] == ("error", "voicechat.audio.end", MESSAGES["failed"])
    assert [c for c in port.calls if c[0] == "user"] == [("user", "Hello")]
