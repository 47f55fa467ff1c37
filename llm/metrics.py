"""Process-wide LLM metrics: the spec's ``LLMServiceMetrics`` fields."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

# Average response time over a window, not all time, so the figure follows the present.
RESPONSE_TIME_WINDOW = 1000


@dataclass
class LLMServiceMetrics:
    active_sessions: int = 0
    total_requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    tier1_fallbacks: int = 0
    tier2_fallbacks: int = 0
    tier3_fallbacks: int = 0
    peak_concurrent_sessions: int = 0
    failures_by_kind: Counter[str] = field(default_factory=Counter)
    response_times_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RESPONSE_TIME_WINDOW))

    @property
    def average_response_time_ms(self) -> int:
        times = self.response_times_ms
        return round(sum(times) / len(times)) if times else 0

    def session_opened(self) -> None:
        self.active_sessions += 1
        self.peak_concurrent_sessions = max(self.peak_concurrent_sessions, self.active_sessions)

    def session_closed(self) -> None:
        self.active_sessions = max(0, self.active_sessions - 1)

    def record_success(self, response_time_ms: float) -> None:
        self.total_successes += 1
        self.response_times_ms.append(response_time_ms)

    def record_failure(self, *, kind: str, tier: int) -> None:
        self.total_failures += 1
        self.failures_by_kind[kind] += 1
        if tier == 1:
            self.tier1_fallbacks += 1
        elif tier == 2:
            self.tier2_fallbacks += 1
        else:
            self.tier3_fallbacks += 1

    def snapshot(self) -> dict[str, object]:
        """The spec's camelCase ``getMetrics()`` shape."""
        return {
            "activeSessions": self.active_sessions,
            "totalRequests": self.total_requests,
            "totalSuccesses": self.total_successes,
            "totalFailures": self.total_failures,
            "averageResponseTimeMs": self.average_response_time_ms,
            "tier1Fallbacks": self.tier1_fallbacks,
            "tier2Fallbacks": self.tier2_fallbacks,
            "tier3Fallbacks": self.tier3_fallbacks,
            "peakConcurrentSessions": self.peak_concurrent_sessions,
            "failuresByKind": dict(self.failures_by_kind),
        }
