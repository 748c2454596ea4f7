"""The messages the corpus writes, in the OpenAI chat shape the chat template renders: an
assistant turn of tool calls, a tool result, and the fixed replies the models learn for a greeting,
a request no tool fits, and a tool that belongs to another role."""

from __future__ import annotations

from typing import Any

Turns = list[dict[str, Any]]
Call = tuple[str, dict[str, Any]]

GREETING_REPLY = "Hello! I am the {role} agent. What should I do?"
NO_TOOL_REPLY = "Sorry, none of my tools can do that."
REFUSAL_REPLY = "I am the {role} agent and can't do that; ask the {target} agent."


def _call(name: str, arguments: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "id": f"call_{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def assistant_calls(calls: list[Call], start: int = 0) -> dict[str, Any]:
    """An assistant turn calling `calls`, their ids numbered from `start` (`call_0`, ...)."""
    tool_calls = [_call(name, args, start + i) for i, (name, args) in enumerate(calls)]
    return {"role": "assistant", "content": "", "tool_calls": tool_calls}


def tool_result(index: int, name: str, content: str) -> dict[str, Any]:
    """The result of call number `index` (id `call_{index}`)."""
    return {"role": "tool", "tool_call_id": f"call_{index}", "name": name, "content": content}
