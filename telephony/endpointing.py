"""Interim end-of-turn detection for phone audio, used only while ``CallSession`` has no
server-side turn detection (the listening work adds VAD + end of turn to the session; the
stream consumer switches to it when present). Pure: no Django.

An energy gate on 20 ms frames, in audio time (frames received, not wall-clock): speech
starts after ``start_ms`` of loud frames and ends after ``end_ms`` of quiet ones. Phone
audio carries only the caller's side (Twilio's inbound track), so the agent's own voice
cannot trigger it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPEECH_STARTED = "started"
SPEECH_STOPPED = "stopped"


@dataclass
class EnergyEndpointer:
    threshold_rms: float = 500.0
    start_ms: int = 60
    end_ms: int = 600
    frame_ms: int = 20
    speaking: bool = False
    _loud_ms: int = 0
    _quiet_ms: int = 0

    def feed(self, pcm: bytes) -> str | None:
        """One frame of 16-bit PCM; returns ``SPEECH_STARTED`` / ``SPEECH_STOPPED`` on a change."""
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
        loud = samples.size > 0 and float(np.sqrt(np.mean(samples * samples))) >= self.threshold_rms
        if not self.speaking:
            self._loud_ms = self._loud_ms + self.frame_ms if loud else 0
            if self._loud_ms >= self.start_ms:
                self.speaking, self._quiet_ms = True, 0
                return SPEECH_STARTED
            return None
        self._quiet_ms = 0 if loud else self._quiet_ms + self.frame_ms
        if self._quiet_ms >= self.end_ms:
            self.speaking, self._loud_ms = False, 0
            return SPEECH_STOPPED
        return None
