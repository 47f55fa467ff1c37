"""A fake Deepgram live-transcription server at the WebSocket layer, for tests and demos.

A real ``websockets`` server on loopback that speaks Deepgram's message format, so the
real client code (``stt.deepgram``) is what gets tested:

- handshake: ``Authorization: Token <key>`` checked (401 with Deepgram's JSON error body
  otherwise); ``encoding=linear16`` and a ``sample_rate`` required (400 otherwise);
- audio (binary frames) is counted; every ``words_every_ms`` of audio reveals one more word
  of the scripted transcript as an interim ``Results`` (``is_final: false``), and every
  ``final_every_words`` words become a final ``Results`` (``is_final: true``,
  ``speech_final`` on the last one);
- ``Finalize`` flushes the rest as a final ``Results`` with ``from_finalize: true``;
  ``CloseStream`` answers with ``Metadata`` and closes (1000); ``KeepAlive`` is counted;
- faults: ``"auth"`` (every key refused), ``"bad_audio"`` (close 1008 DATA-0000 after the
  first audio), ``"drop"`` (close 1011 after the first audio), ``"silent"`` (never answers
  ``Finalize``), ``"error_message"`` (a JSON ``Error`` then close 1011).
"""

from __future__ import annotations

import contextlib
import http
import json
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


@dataclass
class FakeSession:
    """What one connection sent: for tests to assert on."""

    params: dict[str, str]
    audio_bytes: int = 0
    keepalives: int = 0
    controls: list[str] = field(default_factory=list)
    sent: list[dict] = field(default_factory=list)


class FakeDeepgram:
    """``async with FakeDeepgram(api_key=..., transcripts=[...]) as fake:`` then use ``fake.url``.

    ``transcripts`` are used one per connection, in order (the last one repeats).
    """

    def __init__(
        self,
        *,
        api_key: str = "dg-test-key",
        transcripts: list[str] | None = None,
        words_every_ms: int = 200,
        final_every_words: int = 4,
        fault: str | None = None,
    ) -> None:
        self.api_key = api_key
        self.transcripts = list(transcripts or ["hello there"])
        self.words_every_ms = words_every_ms
        self.final_every_words = final_every_words
        self.fault = fault
        self.sessions: list[FakeSession] = []
        self.refused: list[int] = []
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/listen"

    async def __aenter__(self) -> FakeDeepgram:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check, compression=None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _refuse(self, status: int, code: str, message: str) -> Response:
        self.refused.append(status)
        body = json.dumps({"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}).encode()
        headers = Headers([("Content-Type", "application/json"), ("dg-error", message)])
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.fault == "auth" or request.headers.get("Authorization") != f"Token {self.api_key}":
            return self._refuse(401, "INVALID_AUTH", "Invalid credentials.")
        query = parse_qs(urlparse(request.path).query)
        if query.get("encoding", [""])[0] != "linear16" or not query.get("sample_rate", [""])[0].isdigit():
            return self._refuse(400, "Bad Request", "encoding=linear16 and sample_rate are required")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        query = parse_qs(urlparse(connection.request.path).query)
        session = FakeSession(params={key: values[0] for key, values in query.items()})
        self.sessions.append(session)
        index = len(self.sessions) - 1
        words = self.transcripts[min(index, len(self.transcripts) - 1)].split()
        rate = int(session.params["sample_rate"])
        bytes_per_word = 2 * rate * self.words_every_ms // 1000
        revealed = 0  # words shown so far
        finalized = 0  # words already sent as final
        start = 0.0

        async def send(message: dict) -> None:
            session.sent.append(message)
            await connection.send(json.dumps(message))

        def results(
            text_words: list[str], *, is_final: bool, speech_final=False, from_finalize=False
        ) -> dict:
            nonlocal start
            duration = len(text_words) * self.words_every_ms / 1000
            message = {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": duration,
                "start": start,
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": " ".join(text_words),
                            "confidence": 0.98,
                            "words": [
                                {"word": w.strip(".,?!").lower(), "punctuated_word": w, "confidence": 0.98}
                                for w in text_words
                            ],
                        }
                    ]
                },
                "metadata": {"request_id": str(uuid.uuid4()), "model_info": {"name": "fake"}},
            }
            if is_final:
                start += duration
            return message

        try:
            async for message in connection:
                if isinstance(message, bytes):
                    session.audio_bytes += len(message)
                    if self.fault == "bad_audio":
                        await connection.close(1008, "DATA-0000: The payload cannot be decoded as audio.")
                        return
                    if self.fault == "drop":
                        await connection.close(1011, "NET-0000: internal error")
                        return
                    if self.fault == "error_message":
                        await send({"type": "Error", "err_code": "INTERNAL", "description": "fake failure"})
                        await connection.close(1011, "INTERNAL")
                        return
                    target = min(len(words), session.audio_bytes // max(1, bytes_per_word))
                    if target > revealed:
                        revealed = target
                        if revealed - finalized >= self.final_every_words:
                            await send(
                                results(
                                    words[finalized:revealed],
                                    is_final=True,
                                    speech_final=revealed == len(words),
                                )
                            )
                            finalized = revealed
                        else:
                            await send(results(words[finalized:revealed], is_final=False))
                    continue
                control = json.loads(message).get("type", "")
                session.controls.append(control)
                if control == "KeepAlive":
                    session.keepalives += 1
                elif control == "Finalize":
                    if self.fault == "silent":
                        continue
                    # Flush: Deepgram finalizes what it has heard (here: every word).
                    await send(results(words[finalized:], is_final=True, from_finalize=True))
                    finalized = revealed = len(words)
                elif control == "CloseStream":
                    if finalized < revealed:
                        await send(results(words[finalized:revealed], is_final=True))
                    await send(
                        {
                            "type": "Metadata",
                            "transaction_key": "deprecated",
                            "request_id": str(uuid.uuid4()),
                            "sha256": "0" * 64,
                            "created": "2026-01-01T00:00:00.000Z",
                            "duration": session.audio_bytes / (2 * rate),
                            "channels": 1,
                        }
                    )
                    await connection.close(1000)
                    return
        except Exception:  # a client that vanished mid-stream
            with contextlib.suppress(Exception):
                await connection.close(1011)
