"""The conversation context sent to the model: system prompt plus bounded history."""

from __future__ import annotations

from dataclasses import dataclass

# A rough token estimate (4 characters a token for English) is enough to keep a context
# under a budget; an exact tokenizer per model is not worth a dependency here.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(slots=True)
class ContextMessage:
    role: str  # "user" or "assistant"
    content: str
    timestamp: float


class ConversationContext:
    """History of one call. ``max_messages`` / ``max_context_tokens`` of 0 mean unlimited.

    Limits drop the oldest whole turns (a user message and the replies after it), never
    the system prompt and never the newest user message, so the model always sees what it
    is answering and the history never starts with an orphan assistant message.
    """

    def __init__(self, *, max_messages: int = 0, max_context_tokens: int = 0) -> None:
        self.max_messages = max_messages
        self.max_context_tokens = max_context_tokens
        self.messages: list[ContextMessage] = []
        self._tokens = 0

    def add_user(self, text: str, *, timestamp: float) -> None:
        self._append(ContextMessage("user", text, timestamp))

    def add_assistant(self, text: str, *, timestamp: float) -> None:
        """Record what the assistant said. Empty text (nothing reached the caller) is skipped."""
        if text.strip():
            self._append(ContextMessage("assistant", text, timestamp))

    def request_messages(self, system_prompt: str) -> list[dict[str, str]]:
        """The ``messages`` array for a chat completion, trimmed to the token budget."""
        history = self.messages
        if self.max_context_tokens:
            budget = self.max_context_tokens - estimate_tokens(system_prompt)
            history = self._newest_within(budget)
        return [{"role": "system", "content": system_prompt}] + [
            {"role": m.role, "content": m.content} for m in history
        ]

    @property
    def last_message_at(self) -> float | None:
        return self.messages[-1].timestamp if self.messages else None

    def _append(self, message: ContextMessage) -> None:
        self.messages.append(message)
        self._tokens += estimate_tokens(message.content)
        if self.max_messages:
            while len(self.messages) > self.max_messages and self._drop_oldest_turn():
                pass

    def _drop_oldest_turn(self) -> bool:
        """Remove the oldest turn; False when only the newest user turn is left."""
        last_user = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=0)
        end = 1
        while end < len(self.messages) and self.messages[end].role != "user":
            end += 1
        if end > last_user:
            return False
        for message in self.messages[:end]:
            self._tokens -= estimate_tokens(message.content)
        del self.messages[:end]
        return True

    def _newest_within(self, budget: int) -> list[ContextMessage]:
        kept: list[ContextMessage] = []
        used = 0
        for message in reversed(self.messages):
            cost = estimate_tokens(message.content)
            if kept and used + cost > budget:
                break
            kept.append(message)
            used += cost
        kept.reverse()
        # Start at a user message so the model never sees a reply to nothing.
        while len(kept) > 1 and kept[0].role != "user":
            kept.pop(0)
        return kept
