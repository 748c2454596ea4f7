"""The OpenAI request fields beyond messages and sampling, as `rolepool serve` honours them:
`tool_choice`, `response_format` and `parallel_tool_calls` become the request's `Decoding` and
what the answer may hold; every other field is either honoured elsewhere, accepted only at the
value that asks for nothing (`logprobs: false`, penalties of 0), or refused with a 400 naming it.

Why refuse rather than ignore: a client that sends `logit_bias` or `presence_penalty: 1` expects
an effect; a 200 without it is a silent wrong answer, which is worse than an error it can read.
The lists below are the documentation's list too (docs/models.md, "Request fields").
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from rolepool.core import Decoding, ToolSpec

HONOURED = (
    "model",
    "messages",
    "tools",
    "tool_choice",
    "response_format",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "metadata",
    "user",
)
"""Fields `rolepool serve` reads and acts on (`n` only as 1; `user` is an end-user id that, as
in OpenAI's API, changes nothing in the answer)."""

NEUTRAL = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "store": (False,),
    "parallel_tool_calls": (True, False),
}
"""Fields accepted only at the values listed (or null): values that ask for nothing rolepool
does not do."""


DECODING_REFUSAL = "cannot constrain decoding"
"""The words a worker's `RequestRefused` carries when it cannot honour a request's `Decoding`;
serve then names the field that asked for it (`decoding_param`)."""


class FieldRefused(Exception):
    """A request field rolepool cannot honour: `param` is its path, `message` says why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def check_fields(body: dict[str, Any]) -> None:
    """Refuse the first field that is neither honoured nor at a neutral value."""
    for key, value in body.items():
        if value is None or key in HONOURED and key not in NEUTRAL:
            continue
        if key in NEUTRAL:
            allowed = NEUTRAL[key]
            if any(value == ok and type(value) is type(ok) for ok in allowed):
                continue
            shown = ", ".join(repr(ok) for ok in allowed)
            raise FieldRefused(key, f"{key}: only {shown} is supported here")
        raise FieldRefused(key, f"{key}: this field is not supported by rolepool serve")


def decoding_for(
    tool_choice: str | dict[str, Any] | None,
    response_format: dict[str, Any] | None,
    tools: list[ToolSpec],
) -> Decoding:
    """The `Decoding` that honours `tool_choice` and `response_format` (tools already dropped
    for `tool_choice: "none"`). `auto` or unset is free decoding: the model chooses, and calls
    it writes are parsed; a worker configured for `auto` constrained decoding may still hold
    the calls to their schemas."""
    from_tools = _tool_choice(tool_choice, tools)
    from_format = _response_format(response_format)
    if from_tools.mode != "free" and from_format.mode != "free":
        raise FieldRefused(
            "response_format",
            "response_format: cannot be combined with tool_choice 'required' or a named tool",
        )
    return from_tools if from_tools.mode != "free" else from_format


def _tool_choice(choice: str | dict[str, Any] | None, tools: list[ToolSpec]) -> Decoding:
    if choice is None or choice in ("auto", "none"):
        return Decoding()
    if choice == "required":
        if not tools:
            raise FieldRefused("tool_choice", "tool_choice: 'required' needs tools")
        return Decoding(mode="required")
    if isinstance(choice, str):
        message = f"tool_choice: must be 'none', 'auto', 'required' or a function, got {choice!r}"
        raise FieldRefused("tool_choice", message)
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        message = 'tool_choice: expected {"type": "function", "function": {"name": ...}}'
        raise FieldRefused("tool_choice", message)
    if name not in {t.name for t in tools}:
        raise FieldRefused("tool_choice.function.name", f"tool_choice: no tool named {name!r}")
    return Decoding(mode="named", tool=name)


def _response_format(response_format: dict[str, Any] | None) -> Decoding:
    if response_format is None:
        return Decoding()
    kind = response_format.get("type")
    if kind == "text":
        return Decoding()
    if kind == "json_object":
        return Decoding(mode="json_object")
    if kind != "json_schema":
        message = f"response_format.type: must be text, json_object or json_schema, got {kind!r}"
        raise FieldRefused("response_format.type", message)
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        message = "response_format.json_schema.schema: a JSON Schema object is required"
        raise FieldRefused("response_format.json_schema.schema", message)
    try:
        return Decoding(mode="json_schema", json_schema=schema)
    except ValidationError as exc:  # pragma: no cover - the checks above cover Decoding's
        raise FieldRefused("response_format", f"response_format: {exc}") from None


def decoding_param(decoding: Decoding) -> str:
    """The request field a decoding mode came from, for a worker's refusal (400 naming it)."""
    return "response_format" if decoding.mode in ("json_schema", "json_object") else "tool_choice"
