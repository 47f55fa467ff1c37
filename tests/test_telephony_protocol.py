"""Twilio Media Streams codec: the messages Twilio documents, and every kind of bad frame."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.twilio_protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    Start,
    Stop,
    TwilioProtocolError,
    build_clear,
    build_mark,
    build_media,
    parse_message,
)

START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC123",
        "streamSid": "MZ123",
        "callSid": "CA123",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"direction": "outbound", "token": "abc"},
    },
    "streamSid": "MZ123",
}


def test_connected_start_media_mark_dtmf_stop_as_twilio_sends_them():
    assert parse_message('{"event": "connected", "protocol": "Call", "version": "1.0.0"}') == Connected(
        "Call", "1.0.0"
    )
    assert parse_message(json.dumps(START)) == Start(
        stream_sid="MZ123",
        call_sid="CA123",
        account_sid="AC123",
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        tracks=("inbound",),
        custom_parameters={"direction": "outbound", "token": "abc"},
    )
    payload = base64.b64encode(b"\xff" * 160).decode()
    media = {
        "event": "media",
        "sequenceNumber": "3",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": payload},
        "streamSid": "MZ123",
    }
    assert parse_message(json.dumps(media)) == Media("MZ123", b"\xff" * 160, "inbound", 1, 5)
    assert parse_message(
        '{"event": "mark", "sequenceNumber": "4", "streamSid": "MZ123", "mark": {"name": "u1:3"}}'
    ) == Mark("MZ123", "u1:3")
    assert parse_message(
        '{"event": "dtmf", "streamSid": "MZ123", "sequenceNumber": "5", '
        '"dtmf": {"track": "inbound_track", "digit": "1"}}'
    ) == Dtmf("MZ123", "1", "inbound_track")
    assert parse_message(
        '{"event": "stop", "sequenceNumber": "6", "stop": {"accountSid": "AC123", "callSid": "CA123"}, '
        '"streamSid": "MZ123"}'
    ) == Stop("MZ123", "CA123")


def test_binary_frames_holding_utf8_json_are_read():
    assert parse_message(b'{"event": "mark", "mark": {"name": "x"}}') == Mark("", "x")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"event": "hello"}', "unknown event 'hello'"),
        ('{"no_event": 1}', "unknown event None"),
        ('{"event": 5}', "unknown event 5"),
        ('{"event": "media", "media": {"payload": "@@not base64@@"}}', "not valid base64"),
        ('{"event": "media", "media": {"payload": 12}}', "must be a base64 string"),
        ('{"event": "media"}', "'media' must be an object"),
        ('{"event": "start", "start": {"streamSid": "MZ1"}}', "'callSid' must be a non-empty string"),
        ('{"event": "start", "start": []}', "'start' must be an object"),
        ('{"event": "start", "start": {"callSid": "CA1"}}', "'streamSid' must be a non-empty string"),
        ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "is not a DTMF digit"),
        ('{"event": "mark", "mark": {}}', "'name' must be a non-empty string"),
        (b"\xff\xfe", "not UTF-8"),
        (None, "empty frame"),
        ("[" * 100_000, "characters is over"),
    ],
)
def test_bad_frames_get_a_clear_error(frame, message):
    with pytest.raises(TwilioProtocolError) as error:
        parse_message(frame)
    assert message in str(error.value)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
            ),
            max_leaves=12,
        ).map(json.dumps),
    )
)
def test_no_input_raises_anything_but_a_protocol_error(frame):
    with contextlib.suppress(TwilioProtocolError):
        parse_message(frame)


@settings(max_examples=200, deadline=None)
@given(
    event=st.sampled_from(["start", "media", "mark", "dtmf", "stop"]),
    body=st.dictionaries(
        st.sampled_from(["start", "media", "mark", "dtmf", "stop", "streamSid", "payload", "callSid"]),
        st.none()
        | st.integers()
        | st.text(max_size=6)
        | st.dictionaries(
            st.sampled_from(
                [
                    "streamSid",
                    "callSid",
                    "payload",
                    "name",
                    "digit",
                    "mediaFormat",
                    "customParameters",
                    "tracks",
                ]
            ),
            st.none() | st.integers() | st.text(max_size=6) | st.lists(st.integers(), max_size=2),
            max_size=5,
        ),
        max_size=4,
    ),
)
def test_known_events_with_wrong_shapes_raise_only_protocol_errors(event, body):
    with contextlib.suppress(TwilioProtocolError):
        parse_message(json.dumps({"event": event, **body}))


def test_messages_we_send_are_what_twilio_expects():
    assert json.loads(build_media("MZ1", b"\x00\xff")) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": "AP8="},
    }
    assert json.loads(build_mark("MZ1", "u:1")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "u:1"},
    }
    assert json.loads(build_clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
