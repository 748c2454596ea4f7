"""Which JSON values are tool calls, and the `ToolCall` each one makes (or what is wrong with it).

The rules every call format shares once its JSON is decoded (`parsing.py` finds and decodes it): a
call object has only call keys, a name, and arguments as an object or as a JSON string (OpenAI's
`function` wrapper included). `call_shaped` is deliberately strict, so JSON in a final answer is
not mistaken for a call; `to_call` then explains, in words for the model, what a call-shaped
object got wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rolepool.core.messages import ToolCall, new_call_id
from rolepool.tools._strict_json import JsonError, StrictDecoder, find_problem

CALL_KEYS = frozenset({"name", "arguments", "parameters", "id", "type", "function"})
_WRAPPER_KEYS = frozenset({"id", "type", "function"})
_FUNCTION_KEYS = frozenset({"name", "arguments", "parameters"})
_WHITESPACE = re.compile(r"\s*")


def skip_space(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def call_shaped(value: Any) -> list[dict[str, Any]] | None:
    """The call objects in a bare JSON value, or None when it is ordinary data."""
    if isinstance(value, dict):
        return [value] if _is_call_shaped(value) else None
    if isinstance(value, list) and value and all(_is_call_shaped(item) for item in value):
        return value
    return None


def _is_call_shaped(value: Any) -> bool:
    """Only call keys, and a name with arguments (or an OpenAI `function` wrapper with a name):
    anything looser would mistake JSON in a final answer for a call."""
    if not isinstance(value, dict) or not value.keys() <= CALL_KEYS:
        return False
    if "function" in value:
        function = value["function"]
        return isinstance(function, dict) and "name" in function
    return "name" in value and ("arguments" in value or "parameters" in value)


def to_call(obj: Any, decoder: StrictDecoder) -> ToolCall | str:
    """A `ToolCall` from one call object, or what is wrong with it."""
    if not isinstance(obj, dict):
        return f"expected a JSON object for the call, got {_kind(obj)}"
    unknown = sorted(obj.keys() - CALL_KEYS)
    if unknown:
        allowed = ", ".join(sorted(CALL_KEYS))
        return f"unexpected key {unknown[0]!r} in tool call (allowed: {allowed})"
    if obj.get("type", "function") != "function":
        return f'"type" must be "function", got {_show(obj["type"])}'
    body = obj
    if "function" in obj:
        body = obj["function"]
        if not isinstance(body, dict):
            return f'"function" must be an object with "name" and "arguments", got {_kind(body)}'
        extra = sorted(obj.keys() - _WRAPPER_KEYS) or sorted(body.keys() - _FUNCTION_KEYS)
        if extra:
            return f'unexpected key {extra[0]!r} beside or inside "function"'
    if "name" not in body:
        return 'tool call has no "name"'
    name = body["name"]
    if not isinstance(name, str) or not name.strip():
        return f'"name" must be a non-empty string, got {_show(name)}'
    if "arguments" in body and "parameters" in body:
        return 'tool call has both "arguments" and "parameters"'
    arguments = body.get("arguments", body.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = _arguments_from_string(arguments, decoder)
        if isinstance(arguments, str):
            return arguments
    if not isinstance(arguments, dict):
        return f'"arguments" must be a JSON object, got {_kind(arguments)}'
    call_id = obj.get("id")
    if not (isinstance(call_id, str) and call_id):
        call_id = new_call_id()
    return ToolCall(id=call_id, name=name, arguments=arguments)


def _arguments_from_string(encoded: str, decoder: StrictDecoder) -> dict[str, Any] | str:
    """OpenAI-style `"arguments": "{\\"city\\": \\"Paris\\"}"`: decode it, with the same rules."""
    start = skip_space(encoded, 0)
    if not encoded.startswith("{", start):
        return '"arguments" is a string but not a JSON object'
    try:
        decoded = decoder.decode_at(encoded, start)
    except JsonError as err:
        return f'"arguments" string is not valid JSON ({err.message})'
    if skip_space(encoded, decoded.end) != len(encoded):
        return '"arguments" string has text after its JSON object'
    problem = find_problem(encoded, decoded)
    if problem is not None:
        return f'"arguments" string: {problem[1]}'
    return decoded.value


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return "null" if value is None else kinds.get(type(value), "a number")


def _show(value: Any) -> str:
    """A value as the model wrote it (JSON), shortened."""
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 40 else shown[:37] + "..."
