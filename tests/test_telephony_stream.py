"""Phone calls end to end in-process: the Twilio simulator against the real ASGI app
(voice webhook, signed stream, CallSession, TwilioPort), with the scripted model, the beep
voice and a recogniser double at the edges."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from calls.models import Call, Message
from telephony.models import DoNotCall, PhoneCall, Prospect
from telephony.testing import SILENCE_FRAME, TwilioSimulator, caller_speech, sign
from tests.support import BeepEngine, CannedTranscriber, Script, ScriptedProvider, tokens_of

pytestmark = [pytest.mark.django_db(transaction=True)]

TOKEN = "test-auth-token"
BASE = "https://voice.example.com"
REPLY = "Hi, this is Alex from Vantum. ||BREAK|| How is your week going?"


@pytest.fixture
def twilio(settings):
    settings.TWILIO_ACCOUNT_SID = "ACtest"
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_PUBLIC_BASE_URL = BASE
    settings.TWILIO_API_BASE_URL = ""
    settings.TWILIO_STREAM_START_TIMEOUT = 1.0
    # The caller's "speech" is a square wave: the level VAD hears it (Silero wants a voice).
    settings.VAD_ENGINE = "energy"
    return TwilioSimulator(auth_token=TOKEN, public_base=BASE)


def _engines(use_engines, *replies: str, heard: str = "Tell me more.", block_delay: float = 0.0):
    provider = ScriptedProvider([Script(tokens_of(r)) for r in (replies or (REPLY,))])
    use_engines(
        chat=provider, speech=BeepEngine(block_delay=block_delay), transcriber=CannedTranscriber(heard)
    )
    return provider


@database_sync_to_async
def _phone_call(call_sid: str) -> PhoneCall:
    return PhoneCall.objects.get(call_sid=call_sid)


@database_sync_to_async
def _messages(session_id) -> list[tuple[str, str, bool]]:
    return [
        (m.role, m.text, m.interrupted)
        for m in Message.objects.filter(call__session_id=session_id).order_by("seq")
    ]


async def _connect(twilio, call_sid: str, **answer):
    response, stream = await twilio.answer(call_sid=call_sid, **answer)
    assert response.status_code == 200
    connected, leg = await twilio.open_stream(stream, call_sid=call_sid, speed=20.0)
    assert connected
    await leg.start(stream.parameters)
    return stream, leg


async def test_voice_webhook_answers_twiml_that_connects_a_signed_stream(twilio):
    response, stream = await twilio.answer(call_sid="CA0001", from_="+14155550123")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert stream.url == "wss://voice.example.com/telephony/twilio/stream"
    assert set(stream.parameters) == {"token", "direction", "prospect", "profile"}
    assert stream.parameters["direction"] == "inbound"
    phone_call = await _phone_call("CA0001")
    assert (phone_call.direction, phone_call.from_number) == ("inbound", "+14155550123")


async def test_webhooks_with_a_bad_or_missing_signature_get_403(twilio):
    params = {"CallSid": "CA0002", "From": "+14155550123"}
    assert (await twilio.webhook("/telephony/twilio/voice", params, signature="forged")).status_code == 403
    assert (await twilio.webhook("/telephony/twilio/voice", params, signature="")).status_code == 403
    # Signed for another URL (not what Twilio would have requested through the proxy).
    wrong = sign(TOKEN, "http://testserver/telephony/twilio/voice", params)
    assert (await twilio.webhook("/telephony/twilio/voice", params, signature=wrong)).status_code == 403
    assert (await twilio.status(call_sid="CA0002", status="ringing")).status_code == 204
    assert await database_sync_to_async(PhoneCall.objects.filter(call_sid="CA0002").exists)() is False


async def test_inbound_call_holds_a_two_turn_conversation(twilio, use_engines):
    _engines(use_engines, REPLY, "Great. ||BREAK|| Shall we book a demo?")
    _, leg = await _connect(twilio, "CA0003")
    await leg.silence(0.3)
    assert leg.events("media") == []  # inbound: the agent waits for the caller
    for turn in range(2):
        await leg.say(caller_speech(0.8))
        await leg.silence(0.8)
        await leg.until_replies_played(turn + 1)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()

    phone_call = await _phone_call("CA0003")
    assert phone_call.end_reason == "hangup"
    assert phone_call.stream_sid == "MZ0003"
    messages = await _messages(phone_call.session_id)
    assert messages == [
        ("user", "Tell me more.", False),
        ("assistant", "Hi, this is Alex from Vantum. How is your week going?", False),
        ("user", "Tell me more.", False),
        ("assistant", "Great. Shall we book a demo?", False),
    ]
    call = await database_sync_to_async(Call.objects.get)(session_id=phone_call.session_id)
    assert (call.end_reason, call.tts_engine) == ("hangup", "beep")
    # Every 20 ms frame is 160 bytes of μ-law; the beep voice speaks 20 ms a character.
    assert {len(m["media"]["payload"]) for m in leg.events("media")} == {216}  # base64 of 160 bytes
    spoken = len("Hi, this is Alex from Vantum.How is your week going?Great.Shall we book a demo?")
    assert abs(leg.media_seconds() - spoken * 0.02) <= 0.1
    assert set(leg.marks_acked) == {m["mark"]["name"] for m in leg.events("mark")}


@database_sync_to_async
def _set_active_opener(opener: str) -> None:
    from agents.models import PromptVersion
    from agents.services import prompt_version_ensure_initial
    from calls.instances import llm_config_for_new_call

    version = prompt_version_ensure_initial(config=llm_config_for_new_call(None))
    PromptVersion.objects.filter(pk=version.pk).update(opener=opener)


@pytest.mark.parametrize(
    ("version_opener", "spoken"),
    [
        ("", ["Hi Dana, this is Alex.", "Is now a good time?"]),  # blank: TELEPHONY_OPENER
        ("Hello {name} at {company}! ||BREAK|| Alex here.", ["Hello Dana at Acme!", "Alex here."]),
    ],
    ids=["setting", "prompt-version"],
)
async def test_outbound_call_the_agent_opens_with_the_prospects_name(
    twilio, use_engines, settings, version_opener, spoken
):
    settings.TELEPHONY_OPENER = "Hi {name}, this is Alex. ||BREAK|| Is now a good time?"
    await _set_active_opener(version_opener)
    _engines(use_engines)
    prospect = await database_sync_to_async(Prospect.objects.create)(
        name="Dana", company="Acme", phone="+14155550111", timezone="America/New_York"
    )
    placed = await database_sync_to_async(PhoneCall.objects.create)(
        direction="outbound", to_number=prospect.phone, prospect=prospect
    )
    _response, stream = await twilio.answer(
        call_sid="CA0004", direction="outbound-api", to=prospect.phone, attempt=str(placed.public_id)
    )
    assert stream.parameters["direction"] == "outbound"
    assert stream.parameters["prospect"] == str(prospect.pk)
    _connected, leg = await twilio.open_stream(stream, call_sid="CA0004", speed=20.0)
    await leg.start(stream.parameters)
    await leg.until_replies_played(1)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()
    phone_call = await _phone_call("CA0004")
    assert phone_call.pk == placed.pk
    assert await _messages(phone_call.session_id) == [("assistant", " ".join(spoken), False)]
    call = await database_sync_to_async(Call.objects.get)(session_id=phone_call.session_id)
    assert call.prospect == {"name": "Dana", "company": "Acme"}
    assert abs(leg.media_seconds() - len("".join(spoken)) * 0.02) <= 0.1


@pytest.mark.parametrize("block_delay", [0.0, 0.3], ids=["reply-already-sent", "reply-still-produced"])
async def test_barge_in_clears_twilio_and_keeps_what_the_marks_say_was_heard(
    twilio, use_engines, block_delay
):
    sentences = [f"This is sentence number {n} of a long answer." for n in range(6)]
    provider = _engines(use_engines, " ||BREAK|| ".join(sentences), "Sure.", block_delay=block_delay)
    _, leg = await _connect(twilio, "CA0005")
    leg.speed = 1.0  # play in real time, so the caller can cut in
    await leg.say(caller_speech(0.6))
    await leg.silence(0.7)
    # Once the phone has played about two sentences, the caller talks over the agent.
    reported = await leg.talk_over_the_agent(caller_speech(0.3), after_played=1.9)
    assert leg.clears == 1
    await leg.silence(0.8)  # the caller's turn ends: it goes to the model
    for _ in range(200):
        if len(provider.requests) == 2:
            break
        await asyncio.sleep(0.02)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()
    assert len(leg.played) / 8000 < leg.media_seconds()  # audio was sent ahead and dropped

    # The beep voice speaks 20 ms a character: sentence i starts at the sum of those before it.
    starts = [sum(len(s) for s in sentences[:i]) * 0.02 for i in range(len(sentences))]
    heard = [s for s, start in zip(sentences, starts, strict=True) if start < reported]
    assert 1 <= len(heard) < len(sentences)
    phone_call = await _phone_call("CA0005")
    for _ in range(50):  # the correction is written after the reply, off the audio path
        messages = await _messages(phone_call.session_id)
        if messages[1][1] == " ".join(heard):
            break
        await asyncio.sleep(0.05)
    assert messages[1] == ("assistant", " ".join(heard), True)
    # The model, too, is told only what the caller heard.
    assert provider.requests[1][-2:] == [
        {"role": "assistant", "content": " ".join(heard)},
        {"role": "user", "content": "Tell me more."},
    ]


async def test_dtmf_digits_are_recorded(twilio, use_engines):
    _engines(use_engines)
    _, leg = await _connect(twilio, "CA0006")
    for digit in "12#":
        await leg.press(digit)
    await leg.silence(0.1)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()
    assert (await _phone_call("CA0006")).dtmf == "12#"


async def test_caller_hanging_up_mid_reply_ends_the_call_cleanly(twilio, use_engines):
    _engines(use_engines, " ||BREAK|| ".join(["A fairly long sentence to speak."] * 8), block_delay=0.05)
    _, leg = await _connect(twilio, "CA0007")
    await leg.say(caller_speech(0.6))
    await leg.silence(0.7)
    while not leg.events("media"):
        await asyncio.sleep(0.02)
    await leg.stop()
    assert await leg.until_closed() == 1000
    await leg.hang_up()
    phone_call = await _phone_call("CA0007")
    assert phone_call.end_reason == "hangup"
    call = await database_sync_to_async(Call.objects.get)(session_id=phone_call.session_id)
    assert call.end_reason == "hangup"
    messages = await _messages(phone_call.session_id)
    assert messages[1][0] == "assistant" and messages[1][2] is True


async def test_stream_upgrade_with_a_bad_signature_is_refused(twilio):
    _, stream = await twilio.answer(call_sid="CA0008")
    connected, _ = await twilio.open_stream(stream, call_sid="CA0008", signature="forged")
    assert connected is False


async def test_replayed_forged_and_foreign_stream_tokens_close_the_stream(twilio, use_engines):
    _engines(use_engines)
    stream, first = await _connect(twilio, "CA0009")  # the token is used once here
    # Replayed: the same token again.
    _connected, replay = await twilio.open_stream(stream, call_sid="CA0009")
    await replay.start(stream.parameters)
    assert await replay.until_closed() == 4001
    # Forged: altered signature.
    _connected, forged = await twilio.open_stream(stream, call_sid="CA0009")
    await forged.start({**stream.parameters, "token": stream.parameters["token"][:-2] + "xx"})
    assert await forged.until_closed() == 4001
    # Another call's token.
    _, other = await twilio.answer(call_sid="CA0010")
    _connected, foreign = await twilio.open_stream(other, call_sid="CA0009")
    await foreign.start(other.parameters)
    assert await foreign.until_closed() == 4001
    for leg in (first, replay, forged, foreign):
        await leg.hang_up()


async def test_expired_stream_token_is_refused(twilio, settings, use_engines):
    _engines(use_engines)
    settings.TWILIO_STREAM_TOKEN_MAX_AGE = 5
    _, stream = await twilio.answer(call_sid="CA0011")
    from django.core import signing

    payload = signing.loads(stream.parameters["token"], salt="telephony.twilio.stream")
    # A token signed 10 s in the past.
    import time as time_module

    real_time = time_module.time
    try:
        time_module.time = lambda: real_time() - 10
        token = signing.dumps(payload, salt="telephony.twilio.stream")
    finally:
        time_module.time = real_time
    _connected, leg = await twilio.open_stream(stream, call_sid="CA0011")
    await leg.start({**stream.parameters, "token": token})
    assert await leg.until_closed() == 4001
    await leg.hang_up()


async def test_malformed_unknown_and_garbage_frames_are_ignored_and_the_call_goes_on(twilio, use_engines):
    _engines(use_engines)
    _, leg = await _connect(twilio, "CA0012")
    for junk in [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"event": "hello"}),
        json.dumps({"event": "media", "streamSid": "MZ0012", "media": {"payload": "@@@ not base64 @@@"}}),
        json.dumps({"event": "mark"}),
    ]:
        await leg.send_raw(junk)
    await leg.say(caller_speech(0.6))
    await leg.silence(0.8)
    await leg.until_replies_played(1)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()
    assert leg.media_seconds() > 1.0  # the agent still answered


async def test_a_stream_that_never_sends_start_is_closed(twilio):
    _, stream = await twilio.answer(call_sid="CA0013")
    connected, leg = await twilio.open_stream(stream, call_sid="CA0013")
    assert connected
    await leg.say([SILENCE_FRAME] * 3)  # media before start is ignored
    assert await leg.until_closed(timeout=5) == 4008
    await leg.hang_up()


async def test_do_not_call_outcome_puts_the_number_on_the_list(twilio, use_engines):
    _engines(use_engines)
    _, leg = await _connect(twilio, "CA0014", from_="+14155550177")
    phone_call = await _phone_call("CA0014")
    for _ in range(100):
        phone_call = await _phone_call("CA0014")
        if phone_call.session_id:
            break
        await asyncio.sleep(0.02)
    for _ in range(200):  # the call's row is written by its write queue, just after start
        if await database_sync_to_async(Call.objects.filter(session_id=phone_call.session_id).update)(
            outcome="do_not_call"
        ):
            break
        await asyncio.sleep(0.02)
    await leg.stop()
    await leg.until_closed()
    await leg.hang_up()
    assert await database_sync_to_async(DoNotCall.objects.filter(phone="+14155550177").exists)()
    assert (await _phone_call("CA0014")).outcome == "do_not_call"


async def test_without_a_public_base_url_signatures_are_checked_against_the_request_itself(twilio, settings):
    settings.TWILIO_PUBLIC_BASE_URL = ""
    params = {"CallSid": "CA0015", "From": "+14155550123"}
    signed_for_host = sign(TOKEN, "http://testserver/telephony/twilio/voice", params)
    response = await twilio.client.post(
        "/telephony/twilio/voice", params, headers={"X-Twilio-Signature": signed_for_host}
    )
    assert response.status_code == 200
    assert b'url="ws://testserver/telephony/twilio/stream"' in response.content
    from telephony.consumers import stream_signature_valid

    scope = {
        "scheme": "wss",
        "path": "/telephony/twilio/stream",
        "query_string": b"",
        "headers": [
            (b"host", b"voice.internal:8443"),
            (
                b"x-twilio-signature",
                sign(TOKEN, "wss://voice.internal:8443/telephony/twilio/stream").encode(),
            ),
        ],
    }
    assert stream_signature_valid(scope) is True
    scope["headers"][1] = (
        b"x-twilio-signature",
        sign(TOKEN, "wss://elsewhere/telephony/twilio/stream").encode(),
    )
    assert stream_signature_valid(scope) is False


async def test_phone_endpoints_answer_503_when_telephony_is_not_configured(twilio, settings):
    settings.TWILIO_AUTH_TOKEN = ""
    response = await twilio.webhook("/telephony/twilio/voice", {"CallSid": "CA0016"})
    assert response.status_code == 503
    assert b"TWILIO_AUTH_TOKEN" in response.content


async def test_without_speech_to_text_the_opener_plays_and_caller_audio_is_dropped(twilio, use_engines):
    provider = ScriptedProvider([Script(tokens_of("Should never be asked."))])
    use_engines(chat=provider, speech=BeepEngine(), transcriber=None)
    prospect = await database_sync_to_async(Prospect.objects.create)(name="Noor", phone="+14155550121")
    placed = await database_sync_to_async(PhoneCall.objects.create)(
        direction="outbound", to_number=prospect.phone, prospect=prospect
    )
    _response, stream = await twilio.answer(
        call_sid="CA0031", direction="outbound-api", to=prospect.phone, attempt=str(placed.public_id)
    )
    _connected, leg = await twilio.open_stream(stream, call_sid="CA0031", speed=20.0)
    await leg.start(stream.parameters)
    await leg.until_replies_played(1)  # the opener needs no speech-to-text
    await leg.say(caller_speech(0.6))
    await leg.silence(1.0)
    await leg.stop()
    assert await leg.until_closed() == 1000
    await leg.hang_up()
    phone_call = await _phone_call("CA0031")
    messages = await _messages(phone_call.session_id)
    assert [role for role, _text, _cut in messages] == ["assistant"]  # no caller turn, no reply
    assert provider.requests == []
    assert phone_call.end_reason == "hangup"
