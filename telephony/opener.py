"""The agent's first words on an outbound call, spoken through the call's own ``CallSession``.

``CallSession`` has no "the agent speaks first" entry point yet (a browser caller always
speaks first). This drives the same pieces a reply uses — the semantic chunker, a
``ReplySpeaker`` on the session's port, the session's reply recording and barge-in state —
so the opener is chunked, streamed, interruptible, stored and kept in the model's context
like any reply. It belongs in ``CallSession`` (as ``say``) once the session's API settles.
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings

from calls import protocol
from calls.session import CallSession
from calls.speech_out import ReplySpeaker
from llm.chunking import SemanticChunker
from llm.turn import Reply, ReplyChunk

logger = logging.getLogger(__name__)


def speak_opener(session: CallSession, text: str) -> asyncio.Task[None]:
    """Start speaking ``text`` as the agent's reply; returns the task (cancelled by barge-in)."""
    task = asyncio.get_running_loop().create_task(_run_opener(session, text))
    session.turn_tasks.add(task)
    task.add_done_callback(session.turn_tasks.discard)
    return task


async def _run_opener(session: CallSession, text: str) -> None:
    reply = Reply(started_at=time.monotonic())
    session.seq += 1
    seq = session.seq
    utterance_id = protocol.new_id()
    speaker = ReplySpeaker(
        call_id=session.session_id,
        utterance_id=utterance_id,
        engine=session.engines.speech,
        voice_id=session.voice_id,
        port=session.port,
        frame_ms=settings.VANTUM_AUDIO_FRAME_MS,
        max_frame_bytes=settings.VANTUM_MAX_FRAME_BYTES // 2,
        on_chunk=lambda chunk: session._publish_chunk(utterance_id, chunk),
    )
    current = asyncio.current_task()
    session.replying = (current, speaker, seq)
    chunker = SemanticChunker()
    texts = chunker.feed(text) + chunker.flush()
    reply.raw_parts.append(text)
    reply.first_token_at = time.monotonic()
    try:
        for chunk_text in texts:
            chunk = ReplyChunk(index=len(reply.chunks), text=chunk_text)
            reply.chunks.append(chunk)
            if reply.first_chunk_at is None:
                reply.first_chunk_at = time.monotonic()
            await speaker.speak(chunk)
        reply.stream_ended_at = reply.finished_at = time.monotonic()
        if speaker.started:
            await session.port.response_complete(utterance_id, session._turn_metrics(reply, speaker))
    except asyncio.CancelledError:
        reply.interrupted = True
        if speaker.started and session.end_reason != "hangup":
            await session.port.response_stop(utterance_id)
        raise
    finally:
        reply.finished_at = reply.finished_at or time.monotonic()
        if session.replying is not None and session.replying[0] is current:
            session.replying = None
        session.last_speaker = (speaker, seq)
        if session.conversation is not None:
            session.conversation.context.add_assistant(reply.said_text, timestamp=time.time())
        session._record_reply(reply, speaker, seq, utterance_id)
        logger.info("call=%s opener spoken (%d chunks)", session.session_id, len(reply.chunks))
