"""Chat messages and tool calls, in the OpenAI chat shape so HTTP workers and chat templates need
no translation."""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD. JSON may carry `\\ud800` escapes, and a
    model's byte-level decoding can cut an emoji in half: code points UTF-8 cannot encode, which
    would fail the event store or an HTTP answer far from where they came in."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:16]


class ToolCall(BaseModel):
    """A call the model asked for. `arguments` is already decoded from JSON."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    """What a tool returned (`content`) or why it failed (`error`), for one call."""

    call_id: str
    name: str
    content: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Message(BaseModel):
    """One chat message: `tool_calls` only on assistant messages, `tool_call_id` only on tool
    messages."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The dict an OpenAI-compatible server or an HF chat template expects."""
        import json

        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


def system(content: str) -> Message:
    return Message(role="system", content=content)


def user(content: str) -> Message:
    return Message(role="user", content=content)


def assistant(content: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
    return Message(role="assistant", content=content, tool_calls=tool_calls or [])


def tool_message(result: ToolResult) -> Message:
    body = result.content if result.error is None else f"ERROR: {result.error}"
    return Message(role="tool", content=body, tool_call_id=result.call_id, name=result.name)
