"""Smart Turn v3.2: an optional second stage of end-of-turn detection (off by default).

When the caller has been silent for ``TURN_END_SILENCE_MS``, the model reads the last 8 s
of the turn and says whether it sounds finished (falling intonation, a complete phrase) or
mid-thought; a turn that sounds unfinished gets ``TURN_SMART_WAIT_MS`` more silence before
it ends. The ONNX file (``stt/data/smart-turn-v3.2-cpu.onnx``, BSD-2-Clause, Daily; see
``stt/data/LICENSE.smart-turn``) was taken from the ``pipecat-ai`` 1.14.0 wheel: pipecat is
not a dependency. Its features are Whisper's log-mel (80 x 800) of the waveform normalised
to zero mean and unit variance, left-padded to 8 s: the same front end as our Whisper.

Why off by default: on our synthesized speech it marked many finished sentences as
unfinished (synthetic prosody), adding the wait without need (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from stt.local_whisper import log_mel_spectrogram

MODEL_PATH = Path(__file__).resolve().parent / "data" / "smart-turn-v3.2-cpu.onnx"
WINDOW_SAMPLES = 8 * 16000
FRAMES = 800


def smart_turn_features(audio: np.ndarray) -> np.ndarray:
    """80 x 800 features of the last 8 s of ``audio`` (float32 at 16 kHz)."""
    audio = audio[-WINDOW_SAMPLES:]
    padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    padded[WINDOW_SAMPLES - len(audio) :] = audio  # silence before, speech at the end
    normalised = (padded - padded.mean()) / np.sqrt(padded.var() + 1e-7)
    return log_mel_spectrogram(normalised.astype(np.float32), FRAMES)


class SmartTurnModel:
    """``turn_complete_probability(pcm16k)``: 0..1, >= 0.5 means the turn sounds finished.

    One ONNX session per process, shared (thread-safe); ~8 MB, one thread per inference.
    """

    def __init__(self, path: Path = MODEL_PATH) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def turn_complete_probability(self, pcm16k: bytes) -> float:
        samples = np.frombuffer(pcm16k[: len(pcm16k) - len(pcm16k) % 2], dtype="<i2").astype(np.float32)
        if not len(samples):
            return 1.0
        features = smart_turn_features(samples / 32768.0)[np.newaxis]
        (output,) = self.session.run(None, {"input_features": features})
        return float(np.asarray(output).reshape(-1)[0])


_lock = threading.Lock()
_model: SmartTurnModel | None = None


def shared_smart_turn() -> SmartTurnModel:
    global _model
    with _lock:
        if _model is None:
            _model = SmartTurnModel()
        return _model
