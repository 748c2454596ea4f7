"""What `OpenAIWorker` sends: the chat-completions body for a rolepool `Request`, shaped by the
worker's per-server options (`RequestOptions`, set in pool.toml) and its tool mode.

Tool modes (`ToolMode`), because servers differ in what they do with `tools`:

* `native`: send `tools` and read `message.tool_calls`. vLLM needs `--enable-auto-tool-choice
  --tool-call-parser ...` for this; without them it answers 400 to `tool_choice: "auto"`.
* `text`: the model writes calls in its own format and rolepool parses the text. `tools` are
  still sent, with `tool_choice: "none"`, which vLLM and transformers serve still render into the
  prompt through the chat template.
* `auto`: native, and on that 400 switch to text once (`OpenAIWorker` says so in its log and
  `stats`).

A request's `Decoding` is passed on as the OpenAI fields servers constrain with: `named` and
`required` as `tool_choice` (vLLM honours both without a tool parser, through guided decoding),
`json_schema` and `json_object` as `response_format`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rolepool.core import Request

ToolMode = Literal["native", "text", "auto"]
TOOL_MODES: tuple[str, ...] = ("native", "text", "auto")
RESERVED_BODY_KEYS = frozenset({"model", "messages", "tools", "stream", "stream_options"})
"""Keys `extra_body` may not set: rolepool owns them."""


@dataclass(frozen=True)
class RequestOptions:
    """Per-worker request options (pool.toml `[workers.NAME]` keys of the same names)."""

    tool_choice: str | None = "auto"
    """Sent with tools in native mode (None: not sent)."""
    role_tool_choice: Mapping[str, str] = field(default_factory=dict)
    """`tool_choice` by the asking agent's role, over `tool_choice`."""
    parallel_tool_calls: bool | None = None
    structured_output: bool = False
    """Constrain a reply with tools to one call or `{"answer": ...}` (`response_format`)."""
    chat_template_kwargs: Mapping[str, Any] | None = None
    """Passed to the server's chat template (Qwen3's `enable_thinking`, say)."""
    max_completion_tokens: int | None = None
    """Cap on every request's tokens, sent as OpenAI's newer `max_completion_tokens` field
    (which some APIs require) instead of `max_tokens`."""
    extra_body: Mapping[str, Any] | None = None
    """More body fields, as the server documents them (vLLM's `top_k`, `structured_outputs`)."""


def request_body(
    request: Request, model: str, options: RequestOptions, *, text_mode: bool
) -> dict[str, Any]:
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.to_openai() for m in request.messages],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if options.max_completion_tokens is not None:
        body["max_completion_tokens"] = min(sampling.max_tokens, options.max_completion_tokens)
    else:
        body["max_tokens"] = sampling.max_tokens
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if request.tools:
        body["tools"] = [t.to_openai() for t in request.tools]
        choice = tool_choice(request, options, text_mode=text_mode)
        if choice is not None:
            body["tool_choice"] = choice
        if options.parallel_tool_calls is not None and choice != "none":
            body["parallel_tool_calls"] = options.parallel_tool_calls
        if options.structured_output and request.decoding.mode in ("free", "auto"):
            body["response_format"] = call_or_answer_format(request)
    decoding = request.decoding
    if decoding.mode == "json_schema":
        schema = decoding.json_schema
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema},
        }
    elif decoding.mode == "json_object":
        body["response_format"] = {"type": "json_object"}
    if options.chat_template_kwargs:
        body["chat_template_kwargs"] = dict(options.chat_template_kwargs)
    if options.extra_body:
        body.update({k: v for k, v in options.extra_body.items() if k not in RESERVED_BODY_KEYS})
    return body


def tool_choice(request: Request, options: RequestOptions, *, text_mode: bool) -> Any:
    """The `tool_choice` to send: the request's own constraint first, then text mode's `none`,
    then the role's and the worker's setting."""
    decoding = request.decoding
    if decoding.mode == "named":
        return {"type": "function", "function": {"name": decoding.tool}}
    if decoding.mode == "required":
        return "required"
    if text_mode:
        return "none"
    if request.role is not None and request.role in options.role_tool_choice:
        return options.role_tool_choice[request.role]
    return options.tool_choice


def call_or_answer_format(request: Request) -> dict[str, Any]:
    """The OpenAI `response_format` (honoured by vLLM's guided decoding) for 'a call or an
    answer'. A plain JSON object keeps the loop's parser in charge of what it means."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in request.tools
    ]
    options.append(
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    )
    schema = {"anyOf": options}
    return {"type": "json_schema", "json_schema": {"name": "call_or_answer", "schema": schema}}


def needs_text_mode(message: str) -> bool:
    """Whether a server's 400 is vLLM's refusal of tool calling without a tool parser."""
    lowered = message.lower()
    return "enable-auto-tool-choice" in lowered or "tool-call-parser" in lowered
