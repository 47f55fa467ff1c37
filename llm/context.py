"""The conversation context sent to the model: system prompt plus bounded history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A rough token estimate (4 characters a token for English) is enough to keep a context
# under a budget; an exact tokenizer per model is not worth a dependency here.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    return MESSAGE_OVERHEAD_TOKENS + (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(slots=True)
class ContextMessage:
    role: str  # "user", "assistant" or "tool"
    content: str
    timestamp: float
    tool_calls: list[dict[str, Any]] | None = None  # an assistant message that called tools
    tool_call_id: str | None = None  # a tool message: the call it answers

    def request_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            entry["content"] = self.content or None
            entry["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            entry["tool_call_id"] = self.tool_call_id
        return entry

    def estimated_tokens(self) -> int:
        extra = json.dumps(self.tool_calls) if self.tool_calls else ""
        return estimate_tokens(self.content + extra)


def _entry(message: dict[str, Any], timestamp: float) -> ContextMessage | None:
    """A chat message as a context entry; None for assistant text nobody heard (empty)."""
    content = message.get("content") or ""
    if message["role"] == "assistant" and not message.get("tool_calls"):
        return ContextMessage("assistant", content, timestamp) if content.strip() else None
    return ContextMessage(
        message["role"],
        content,
        timestamp,
        tool_calls=message.get("tool_calls"),
        tool_call_id=message.get("tool_call_id"),
    )


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

    def add_reply(self, messages: list[dict[str, Any]], *, timestamp: float) -> list[ContextMessage]:
        """Record a reply given as chat messages (``llm.turn.Reply.context_messages``):
        assistant text, assistant tool calls and their ``tool`` results, in order. Returns
        the entries added (``replace_reply`` takes them)."""
        added = [entry for message in messages if (entry := _entry(message, timestamp)) is not None]
        for entry in added:
            self._append(entry)
        return added

    def replace_reply(
        self, old: list[ContextMessage], messages: list[dict[str, Any]], *, timestamp: float
    ) -> list[ContextMessage]:
        """Put ``messages`` where the entries ``old`` (from ``add_reply``) are, e.g. once a
        barge-in showed that less of the reply was heard than was sent. Entries already
        dropped by the limits are not brought back. Returns the new entries."""
        positions = [i for i, message in enumerate(self.messages) if any(message is o for o in old)]
        if not positions:
            return []
        new = [entry for message in messages if (entry := _entry(message, timestamp)) is not None]
        at = positions[0]
        for i in reversed(positions):
            self._tokens -= self.messages[i].estimated_tokens()
            del self.messages[i]
        self.messages[at:at] = new
        self._tokens += sum(entry.estimated_tokens() for entry in new)
        return new

    def request_messages(self, system_prompt: str) -> list[dict[str, Any]]:
        """The ``messages`` array for a chat completion, trimmed to the token budget."""
        history = self.messages
        if self.max_context_tokens:
            budget = self.max_context_tokens - estimate_tokens(system_prompt)
            history = self._newest_within(budget)
        return [{"role": "system", "content": system_prompt}] + [m.request_entry() for m in history]

    def request_messages_after(self, user_text: str, system_prompt: str) -> list[dict[str, Any]]:
        """The ``messages`` a turn ``user_text`` would send next (limits applied as
        ``add_user`` would), leaving this context unchanged."""
        preview = ConversationContext(
            max_messages=self.max_messages, max_context_tokens=self.max_context_tokens
        )
        preview.messages, preview._tokens = list(self.messages), self._tokens
        preview.add_user(user_text, timestamp=0.0)
        return preview.request_messages(system_prompt)

    @property
    def last_message_at(self) -> float | None:
        return self.messages[-1].timestamp if self.messages else None

    def _append(self, message: ContextMessage) -> None:
        self.messages.append(message)
        self._tokens += message.estimated_tokens()
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
            self._tokens -= message.estimated_tokens()
        del self.messages[:end]
        return True

    def _newest_within(self, budget: int) -> list[ContextMessage]:
        kept: list[ContextMessage] = []
        used = 0
        for message in reversed(self.messages):
            cost = message.estimated_tokens()
            if kept and used + cost > budget:
                break
            kept.append(message)
            used += cost
        kept.reverse()
        # Once older messages were cut, start at a user message so the model never sees a
        # reply to nothing. An uncut history may start with the agent (an outbound opener).
        if len(kept) < len(self.messages):
            while len(kept) > 1 and kept[0].role != "user":
                kept.pop(0)
        return kept
