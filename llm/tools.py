"""Tools the model may call during a reply (OpenAI-style function calling). Pure asyncio.

The call layer registers tools (async callables with a JSON schema) in a ``ToolRegistry``;
the streaming turn (``llm.turn``) offers their schemas with the request, assembles the
tool calls the model streams (``ToolCallAssembler``), runs them here and sends the results
back to the model. Whatever the model sends (an unknown tool, broken JSON, arguments that
do not fit the schema) and whatever a tool does (refuse with ``ToolError``, raise, hang),
``ToolRegistry.run`` returns a ``ToolResult`` the model can read and speak from: the caller
never hears a stack trace, and the reply goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# Spoken when a reply ends the call without a word of goodbye from the model.
DEFAULT_GOODBYE = "Thank you for your time today. Goodbye!"


class ToolError(Exception):
    """A tool refusing its input (a past time, a taken slot). The message goes to the model,
    so it must say what was wrong in words the model can repeat to the caller; ``data``
    (optional) adds fields it can act on, e.g. ``{"next_free_start": "..."}``."""

    def __init__(self, message: str, *, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool knows about the call it acts for."""

    call_id: str


@dataclass(slots=True)
class ToolResult:
    """What a tool call produced. ``content`` is the JSON text the model reads.

    ``ends_call`` asks the call layer to end the call once this reply has been spoken.
    """

    ok: bool
    content: str
    ends_call: bool = False

    @classmethod
    def success(cls, data: dict[str, Any], *, ends_call: bool = False) -> ToolResult:
        return cls(ok=True, content=json.dumps({"ok": True, **data}), ends_call=ends_call)

    @classmethod
    def failure(cls, message: str, data: dict[str, Any] | None = None) -> ToolResult:
        return cls(ok=False, content=json.dumps({"ok": False, "error": message, **(data or {})}))


# A tool's handler: ``await handler(context, **arguments)``; it returns the data for the
# model (a dict) or a ready ``ToolResult`` (to end the call), and raises ``ToolError`` to refuse.
ToolHandler = Callable[..., Awaitable[dict[str, Any] | ToolResult]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema of type "object"
    handler: ToolHandler

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolRegistry:
    """The tools one conversation offers. ``timeout`` (seconds) bounds every tool run."""

    def __init__(self, tools: Iterable[Tool] = (), *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.parameters.get("type") != "object":
            raise ValueError(f"tool {tool.name!r}: parameters must be a JSON schema of type 'object'")
        self._tools[tool.name] = tool

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self._tools.values()]

    async def run(self, *, name: str, arguments: str, context: ToolContext) -> ToolResult:
        """Run one tool call as the model wrote it. Never raises, except ``CancelledError``."""
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return ToolResult.failure(f"There is no tool named {name!r}. Available tools: {known}.")
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError as error:
            return ToolResult.failure(f"The arguments are not valid JSON ({error}). Send a JSON object.")
        if not isinstance(parsed, dict):
            return ToolResult.failure("The arguments must be a JSON object.")
        problems = schema_errors(tool.parameters, parsed)
        if problems:
            return ToolResult.failure("Invalid arguments: " + "; ".join(problems) + ".")
        try:
            async with asyncio.timeout(self.timeout):
                outcome = await tool.handler(context, **parsed)
        except ToolError as error:
            logger.info("call=%s tool %s refused: %s", context.call_id, name, error)
            return ToolResult.failure(str(error), error.data)
        except TimeoutError:
            logger.warning("call=%s tool %s took longer than %gs", context.call_id, name, self.timeout)
            return ToolResult.failure(f"{name} did not finish in time; it may not have been done.")
        except Exception:
            logger.exception("call=%s tool %s failed", context.call_id, name)
            return ToolResult.failure(f"{name} failed because of a technical problem. It was not done.")
        if isinstance(outcome, ToolResult):
            return outcome
        return ToolResult.success(outcome or {})


# ---------------------------------------------------------------------- JSON schema subset

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Problems of ``value`` against the subset of JSON Schema that tool schemas use:
    ``type`` (one or a list), ``properties``, ``required``, ``additionalProperties: false``,
    ``enum``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``items``.

    Messages name the argument (``'start' is required``) so the model can correct itself.
    """
    where = f"{path!r}" if path else "the arguments"
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in allowed):
            return [f"{where} must be {' or '.join(allowed)}, got {type(value).__name__}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where} must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where} must be at most {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(
                f"{where} must not be empty" if schema["minLength"] == 1 else f"{where} is too short"
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{where} must be at most {schema['maxLength']} characters")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                problems.append(f"{_join(path, name)!r} is required")
        for name, item in value.items():
            if name in properties:
                problems.extend(schema_errors(properties[name], item, _join(path, name)))
            elif schema.get("additionalProperties") is False:
                problems.append(f"{_join(path, name)!r} is not an argument of this tool")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems.extend(schema_errors(schema["items"], item, f"{path}[{index}]"))
    return problems


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# ---------------------------------------------------------------------- streamed tool calls


@dataclass(slots=True)
class ToolCall:
    """One tool call as the model wrote it (``arguments`` is its raw JSON text), and what
    running it gave (``result`` stays None while it runs or when it never ran)."""

    id: str
    name: str
    arguments: str
    result: ToolResult | None = None

    def request_entry(self) -> dict[str, Any]:
        """The entry of an assistant message's ``tool_calls``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def result_message(self) -> dict[str, Any]:
        """The ``tool`` message answering this call (a placeholder if it never finished)."""
        content = self.result.content if self.result is not None else _UNFINISHED
        return {"role": "tool", "tool_call_id": self.id, "content": content}

    def record(self) -> dict[str, Any]:
        """What the transcript stores."""
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "ok": self.result.ok if self.result is not None else False,
            "result": self.result.content if self.result is not None else _UNFINISHED,
        }


_UNFINISHED = json.dumps({"ok": False, "error": "interrupted before it finished; the outcome is unknown"})


@dataclass(slots=True)
class ToolCallAssembler:
    """Builds whole tool calls from streamed ``delta.tool_calls`` pieces.

    Pieces are matched by ``index`` (the id comes only with the first piece, and the
    arguments arrive in many fragments). A call without an id gets one, since the follow-up
    request must pair each result with its call.
    """

    _calls: dict[int, dict[str, str]] = field(default_factory=dict)

    def reset(self) -> None:
        self._calls.clear()

    def feed(self, pieces: Iterable[dict[str, Any]]) -> None:
        for piece in pieces:
            index = piece.get("index")
            if not isinstance(index, int):
                index = max(self._calls, default=-1) + (0 if piece.get("id") is None and self._calls else 1)
            entry = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if piece.get("id"):
                entry["id"] = str(piece["id"])
            function = piece.get("function") or {}
            name = function.get("name")
            if name and name != entry["name"]:  # some servers repeat the whole name in every piece
                entry["name"] += str(name)
            if function.get("arguments"):
                entry["arguments"] += str(function["arguments"])

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self, *, id_prefix: str = "call") -> list[ToolCall]:
        """The calls in index order."""
        return [
            ToolCall(
                id=entry["id"] or f"{id_prefix}_{index}", name=entry["name"], arguments=entry["arguments"]
            )
            for index, entry in sorted(self._calls.items())
        ]
