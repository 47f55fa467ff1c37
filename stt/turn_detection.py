"""Server-side turn detection: when the caller starts, pauses, resumes and stops talking.

Pure logic over a ``VadStream``: no Django, no asyncio, no clock. Every timestamp is audio
time (milliseconds of 16 kHz samples received since the detector started or was reset), so
a client that sends faster or slower than real time, or in 20 ms or 500 ms chunks, gets
exactly the same decisions.

Input at any rate (8..48 kHz) is resampled to 16 kHz with soxr's streaming resampler in
float (bit-exact whatever the chunking; its int16 mode dithers), then cut into 32 ms
frames that the VAD scores. Per frame, with hysteresis as Silero recommends: a frame is
*speech* at ``p >= speech_threshold`` and *silence* below ``speech_threshold - 0.15``;
frames in between continue whatever was going on.

    idle --speech for min_speech_ms--> turn (SpeechStarted at the onset)
    turn: voiced >= barge_in_min_speech_ms  -> SpeechConfirmed (once per turn)
          silence for pause_ms              -> PauseStarted(audio)   (speculative STT)
          speech again after PauseStarted   -> SpeechResumed         (drop that work)
          silence for end_silence_ms        -> TurnEnded(reason="silence")
          turn length reaches max_turn_ms   -> TurnEnded(forced=True, reason="max_length")
    end_now() (client said audio.end)       -> TurnEnded(reason="client_end") or None

``audio`` holds only what the VAD marked as speech, plus ``padding_ms`` before the onset
and ``pause_ms`` after the last speech: silence and noise alone never reach a recogniser.
``TurnEnded.audio`` is byte-for-byte the ``PauseStarted.audio`` before it when no
``SpeechResumed`` came between, so a speculative transcript of the pause is the turn's
(``calls.listening.Listener`` reuses it).

The detector hears whatever the microphone hears: it cannot tell the agent's own voice
played back through a loudspeaker from the caller's. Clients must cancel echo (browsers:
``getUserMedia({audio: {echoCancellation: true}})``, or headphones); telephone networks
cancel it on the line. Otherwise the agent's reply confirms a barge-in against itself.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stt.vad import VadStream

RATE = 16000
HYSTERESIS = 0.15
MIN_INPUT_RATE = 8000
MAX_INPUT_RATE = 48000


@dataclass(frozen=True)
class TurnConfig:
    """Timings in milliseconds of audio. Defaults and why: docs/BENCHMARKS.md, "Listening".

    ``end_silence_ms`` (``TURN_END_SILENCE_MS``): silence that ends a turn. 400 ms: in our
    end-of-speech measurements 300 ms already found every end with no false cut on fluent
    synthetic speech, but people pause longer than a synthesiser between phrases; 400 ms
    keeps a margin while the pause-started speculative transcription hides most of it.
    ``barge_in_min_speech_ms`` (``BARGE_IN_MIN_SPEECH_MS``): voiced speech before the caller
    may interrupt the agent; a cough or a short "mm" stays below it.
    ``min_speech_ms``: shorter bursts are not speech at all (clicks, knocks).
    ``pause_ms``: silence after speech that announces a pause (and the trailing padding
    kept in the audio). ``padding_ms``: audio kept before the onset (Silero reacts a frame
    or two late, and soft onsets like "f" or "h" score low). ``max_turn_ms``: a turn is
    forced to end at this length (Whisper reads at most 30 s at once).
    """

    end_silence_ms: int = 400
    barge_in_min_speech_ms: int = 250
    min_speech_ms: int = 96
    speech_threshold: float = 0.5
    padding_ms: int = 256
    max_turn_ms: int = 28000
    pause_ms: int = 128
    smart_wait_ms: int = 1500  # extra silence when the end-of-turn model says "unfinished"

    def __post_init__(self) -> None:
        if not 0.0 < self.speech_threshold < 1.0:
            raise ValueError(f"speech_threshold must be in (0, 1), got {self.speech_threshold}")
        for name in ("end_silence_ms", "min_speech_ms", "max_turn_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("barge_in_min_speech_ms", "padding_ms", "pause_ms", "smart_wait_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.pause_ms > self.end_silence_ms:
            raise ValueError("pause_ms must not exceed end_silence_ms")


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: int  # onset of the speech (the first speech frame), not when it was recognised


@dataclass(frozen=True)
class SpeechConfirmed:
    at_ms: int  # when the voiced speech of the turn reached barge_in_min_speech_ms


@dataclass(frozen=True)
class PauseStarted:
    at_ms: int  # when the silence after the last speech began
    audio: bytes  # 16 kHz PCM s16le of the turn so far (speech + padding)


@dataclass(frozen=True)
class SpeechResumed:
    at_ms: int


@dataclass(frozen=True)
class TurnEnded:
    at_ms: int  # when the decision was made
    audio: bytes  # 16 kHz PCM s16le: the turn's speech with its padding
    forced: bool  # True when cut at max_turn_ms
    reason: str  # "silence", "max_length" or "client_end"
    speech_end_ms: int = 0  # end of the last speech frame (caller's last speech sample)
    speech_ms: int = 0  # voiced milliseconds in the turn


TurnEvent = SpeechStarted | SpeechConfirmed | PauseStarted | SpeechResumed | TurnEnded


class _Resampler:
    """Streaming resampler to 16 kHz s16le; soxr in float so the output is exact whatever
    the chunking (its int16 mode dithers at random)."""

    def __init__(self, rate: int) -> None:
        import soxr

        self.rate = rate
        self._stream = soxr.ResampleStream(rate, RATE, 1, dtype="float32", quality="HQ")

    def process(self, samples: np.ndarray, last: bool = False) -> bytes:
        out = self._stream.resample_chunk(samples.astype(np.float32) / 32768.0, last=last)
        return np.clip(np.rint(out * 32768.0), -32768, 32767).astype("<i2").tobytes()


class EndOfTurnModel(Protocol):
    """A second opinion at the end of silence (Smart Turn): does the turn sound finished?"""

    def turn_complete_probability(self, pcm16k: bytes) -> float: ...


class TurnDetector:
    """Turn events from a caller's audio (see the module docstring). One per call.

    ``end_of_turn`` (optional, off by default): when silence reaches ``end_silence_ms`` the
    model reads the turn; below 0.5 ("unfinished") the turn waits ``smart_wait_ms`` more
    silence. It runs inside ``feed`` (~10-100 ms of CPU, once per pause that long): a caller
    that enables it should feed from a worker thread (``calls.listening.Listener`` does).
    """

    def __init__(
        self, *, vad: VadStream, config: TurnConfig, end_of_turn: EndOfTurnModel | None = None
    ) -> None:
        self.vad = vad
        self.config = config
        self.end_of_turn = end_of_turn
        self.smart_checks = 0  # times the end-of-turn model was asked
        self.smart_holds = 0  # times it said "unfinished" and the turn waited
        self.frame_samples = vad.frame_samples
        self.frame_bytes = 2 * self.frame_samples
        self.frame_ms = self.frame_samples * 1000 // RATE
        self._frames = lambda ms: -(-ms // self.frame_ms)  # ms -> frames, rounded up
        self._negative = max(0.01, config.speech_threshold - HYSTERESIS)
        self.reset()

    # --- public -----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: audio time restarts at 0 (a new stream, or a mode switch)."""
        self.vad.reset()
        self._resampler: _Resampler | None = None
        self._odd = b""
        self._pending = bytearray()
        self._frame_index = 0  # frames scored so far (audio time = index * frame_ms)
        self._preroll: collections.deque[bytes] = collections.deque(
            maxlen=self._frames(self.config.padding_ms)
        )
        self._candidate: list[bytes] = []
        self._candidate_onset = 0
        self._candidate_voiced = 0
        self._in_turn = False

    @property
    def in_turn(self) -> bool:
        return self._in_turn

    @property
    def audio_ms(self) -> int:
        """Audio time of the frames scored so far."""
        return self._frame_index * self.frame_ms

    def take_new_turn_audio(self) -> bytes:
        """16 kHz audio of the current turn not taken before (from the pre-roll on), for a
        streaming recogniser fed while the caller speaks; b"" outside a turn. What a turn's
        pieces add up to starts with its ``TurnEnded.audio`` (which drops the trailing
        silence beyond ``pause_ms``), or, when a large chunk ended the turn, is a prefix of
        it: feed ``ended.audio[taken:]`` before finishing the stream."""
        if not self._in_turn:
            return b""
        new = self._turn_audio[self._taken :]
        self._taken = len(self._turn_audio)
        return b"".join(new)

    def feed(self, pcm: bytes, sample_rate: int) -> list[TurnEvent]:
        """Events caused by ``pcm`` (mono s16le at ``sample_rate`` Hz, any length; an odd
        trailing byte is kept for the next chunk). A new rate restarts the resampler."""
        if not MIN_INPUT_RATE <= sample_rate <= MAX_INPUT_RATE:
            raise ValueError(f"sample rate must be {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz, got {sample_rate}")
        data = self._odd + pcm
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        if sample_rate == RATE:
            self._resampler = None
            self._pending += data[:whole]
        else:
            if self._resampler is None or self._resampler.rate != sample_rate:
                self._resampler = _Resampler(sample_rate)
            self._pending += self._resampler.process(np.frombuffer(data[:whole], dtype="<i2"))
        events: list[TurnEvent] = []
        while len(self._pending) >= self.frame_bytes:
            frame = bytes(self._pending[: self.frame_bytes])
            del self._pending[: self.frame_bytes]
            self._score(frame, events)
        return events

    def end_now(self) -> TurnEnded | None:
        """End the current turn at once with what there is (the client said ``audio.end``).

        None when no speech was heard (nothing worth transcribing). A speech onset still
        shorter than ``min_speech_ms`` counts when it is cut by the client: a quick "no".
        """
        partial = bytes(self._pending[: len(self._pending) - len(self._pending) % 2])
        self._pending.clear()
        if not self._in_turn:
            if not self._candidate:
                return None
            self._start_turn(self._candidate_onset)
            self._turn_audio.extend(self._candidate)
            self._voiced = self._candidate_voiced
            self._last_voiced_end = len(self._turn_audio)
            self._clear_candidate()
        if self._silent_frames == 0:
            self._turn_audio.append(partial)  # still speaking: the tail is speech
            self._last_voiced_end = len(self._turn_audio)
        return self._end_turn(reason="client_end", forced=False)

    # --- internals ----------------------------------------------------------------------

    def _clear_candidate(self) -> None:
        self._candidate = []
        self._candidate_voiced = 0

    def _start_turn(self, onset_index: int) -> None:
        self._in_turn = True
        self._onset_index = onset_index
        self._turn_audio: list[bytes] = list(self._preroll)
        self._taken = 0  # frames handed out by take_new_turn_audio
        self._preroll.clear()
        self._voiced = 0
        self._confirmed = False
        self._silent_frames = 0
        self._pause_announced = False
        self._last_voiced_end = 0  # len(_turn_audio) just after the last speech frame
        self._end_after_ms = self.config.end_silence_ms  # this pause's silence limit

    def _kept_audio(self) -> bytes:
        """The turn's audio: up to the last speech frame plus ``pause_ms`` of what followed."""
        keep = self._last_voiced_end + min(self._silent_frames, self._frames(self.config.pause_ms))
        return b"".join(self._turn_audio[:keep])

    def _end_turn(self, *, reason: str, forced: bool) -> TurnEnded:
        speech_end_frame = self._frame_index - self._silent_frames
        event = TurnEnded(
            at_ms=self.audio_ms,
            audio=self._kept_audio(),
            forced=forced,
            reason=reason,
            speech_end_ms=speech_end_frame * self.frame_ms,
            speech_ms=self._voiced * self.frame_ms,
        )
        self._in_turn = False
        self._turn_audio = []
        self._silent_frames = 0
        return event

    def _score(self, frame: bytes, events: list[TurnEvent]) -> None:
        probability = self.vad.speech_probability(frame)
        index = self._frame_index
        self._frame_index += 1
        speech = probability >= self.config.speech_threshold
        silence = probability < self._negative
        if self._in_turn:
            self._turn_frame(frame, index, speech, silence, events)
        else:
            self._idle_frame(frame, index, speech, silence, events)

    def _idle_frame(
        self, frame: bytes, index: int, speech: bool, silence: bool, events: list[TurnEvent]
    ) -> None:
        if not self._candidate:
            if not speech:
                self._preroll.append(frame)
                return
            self._candidate_onset = index
        elif silence:
            # A burst shorter than min_speech_ms: not speech. It becomes pre-roll, so a
            # real onset right after it still has its padding.
            self._preroll.extend(self._candidate)
            self._preroll.append(frame)
            self._clear_candidate()
            return
        self._candidate.append(frame)
        if not silence:
            self._candidate_voiced += 1
        if self._candidate_voiced * self.frame_ms >= self.config.min_speech_ms:
            self._start_turn(self._candidate_onset)
            self._turn_audio.extend(self._candidate)
            self._voiced = self._candidate_voiced
            self._last_voiced_end = len(self._turn_audio)
            self._clear_candidate()
            events.append(SpeechStarted(at_ms=self._onset_index * self.frame_ms))
            self._check_confirmed(events)
            self._check_max_length(events)

    def _turn_frame(
        self, frame: bytes, index: int, speech: bool, silence: bool, events: list[TurnEvent]
    ) -> None:
        self._turn_audio.append(frame)
        if not silence:
            if self._silent_frames and self._pause_announced and speech:
                events.append(SpeechResumed(at_ms=index * self.frame_ms))
                self._pause_announced = False
            if speech or not self._silent_frames:
                self._silent_frames = 0
                self._end_after_ms = self.config.end_silence_ms
                self._voiced += 1
                self._last_voiced_end = len(self._turn_audio)
                self._check_confirmed(events)
            else:
                self._silent_frames += 1  # an in-between frame does not end a pause
        else:
            self._silent_frames += 1
        silent_ms = self._silent_frames * self.frame_ms
        if self._silent_frames and not self._pause_announced and silent_ms >= self.config.pause_ms:
            self._pause_announced = True
            pause_at = (self._frame_index - self._silent_frames) * self.frame_ms
            events.append(PauseStarted(at_ms=pause_at, audio=self._kept_audio()))
        if silent_ms >= self._end_after_ms:
            if self._sounds_unfinished(silent_ms):
                self._end_after_ms = self.config.end_silence_ms + self.config.smart_wait_ms
            else:
                events.append(self._end_turn(reason="silence", forced=False))
                return
        self._check_max_length(events)

    def _sounds_unfinished(self, silent_ms: int) -> bool:
        """Ask the end-of-turn model once per pause, when the silence first reaches the limit."""
        if self.end_of_turn is None or self.config.smart_wait_ms == 0:
            return False
        if silent_ms != self._frames(self.config.end_silence_ms) * self.frame_ms:
            return False  # already asked for this pause: the extended limit is final
        self.smart_checks += 1
        if self.end_of_turn.turn_complete_probability(self._kept_audio()) >= 0.5:
            return False
        self.smart_holds += 1
        return True

    def _check_confirmed(self, events: list[TurnEvent]) -> None:
        if not self._confirmed and self._voiced * self.frame_ms >= self.config.barge_in_min_speech_ms:
            self._confirmed = True
            events.append(SpeechConfirmed(at_ms=self._frame_index * self.frame_ms))

    def _check_max_length(self, events: list[TurnEvent]) -> None:
        if (
            self._in_turn
            and (self._frame_index - self._onset_index) * self.frame_ms >= self.config.max_turn_ms
        ):
            events.append(self._end_turn(reason="max_length", forced=True))
