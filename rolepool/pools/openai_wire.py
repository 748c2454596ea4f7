"""The OpenAI chat-completions wire format as `rolepool serve` speaks it: the request and its
translation to a rolepool `Request`, and the answer built from a `Completion`.

Kept apart from the server so the wire rules (what is accepted, what each bad field is called in
the 400 answer, what an answer looks like) read in one place. Every field is honoured or
refused with a 400 naming it, never ignored (`openai_options` lists them); `tool_choice` and
`response_format` become the request's `Decoding`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rolepool.core import Completion, Message, Request, Sampling, ToolCall, ToolSpec
from rolepool.core.messages import utf8_safe
from rolepool.pools.openai_options import FieldRefused, check_fields, decoding_for
from rolepool.tools.parsing import parse_tool_calls

_ROLE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MIN_SECRET = 8
_SCALAR_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def dumps_utf8(value: Any, **options: Any) -> str:
    """`json.dumps` whose text always encodes as UTF-8 (see `utf8_safe`), for answers."""
    return utf8_safe(json.dumps(value, ensure_ascii=False, **options))


def redact(text: str, secret: str | None) -> str:
    """`text` with `secret` blanked out. Secrets shorter than 8 characters are left alone: they
    would blank ordinary words (a key "k" in "worker"), and are no secret worth the name."""
    if secret and len(secret) >= _MIN_SECRET:
        return text.replace(secret, "[redacted]")
    return text


class ApiError(Exception):
    """An error answer: HTTP status, OpenAI error `type` and the offending `param`."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        *,
        worker: str | None = None,
        worker_failure: bool = False,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or {}
        """Extra response headers (a 429's `Retry-After`)."""
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.worker = worker
        self.worker_failure = worker_failure

    @property
    def status_label(self) -> str:
        """The `status` label on the request counter."""
        labels = {400: "bad_request", 404: "not_found", 413: "too_large", 499: "client_closed"}
        labels[429] = "quota_exceeded"
        return (labels | {504: "timeout"}).get(self.status, self.type)


class _Wire(BaseModel):
    """Strict, as the OpenAI API is: `"n": "1"`, `"stream": "yes"` or `"max_tokens": true` are
    refused with a 400 naming the field, not coerced."""

    model_config = ConfigDict(extra="ignore", strict=True)


class FunctionCall(_Wire):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"


class WireToolCall(_Wire):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ContentPart(_Wire):
    type: str
    text: str | None = None


class WireMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionDef(_Wire):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class WireTool(_Wire):
    type: Literal["function"] = "function"
    function: FunctionDef


class ChatRequest(_Wire):
    model: str | None = None
    messages: list[WireMessage] = Field(min_length=1)
    tools: list[WireTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    metadata: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: Any) -> ChatRequest:
        """Validate a decoded body; the first problem becomes a 400 naming the field."""
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        try:
            check_fields(body)
        except FieldRefused as exc:
            raise ApiError(400, exc.message, param=exc.param) from None
        try:
            chat = cls.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = _param(first["loc"])
            raise ApiError(400, f"{param or 'body'}: {first['msg']}", param=param) from None
        if chat.n != 1:
            raise ApiError(400, "only n=1 is supported", param="n")
        return chat

    @property
    def wants_stream_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    @property
    def parse_calls(self) -> bool:
        """Whether calls written as text become `tool_calls`: tools offered, not refused with
        `tool_choice: "none"`, and no JSON reply asked for (that JSON is the content)."""
        json_reply = (self.response_format or {}).get("type") in ("json_object", "json_schema")
        return bool(self.tools) and self.tool_choice != "none" and not json_reply

    @property
    def max_calls(self) -> int | None:
        return 1 if self.parallel_tool_calls is False else None


def _param(loc: tuple[Any, ...]) -> str | None:
    """pydantic's error location as the dotted/indexed path OpenAI clients show, without the
    union-member tags pydantic inserts (`str`, `list[ContentPart]`, `function-...`)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not _is_union_tag(part):
            out += f".{part}" if out else part
    return out or None


def _is_union_tag(part: str) -> bool:
    return part in _SCALAR_TAGS or "[" in part or part.startswith("function-")


def to_request(chat: ChatRequest, header_role: str | None) -> Request:
    """The rolepool `Request`: role from `metadata.role`, else the `X-Rolepool-Role` header."""
    metadata = chat.metadata or {}
    role = metadata.get("role") or header_role
    if role is not None and (not isinstance(role, str) or not _ROLE.match(role)):
        raise ApiError(400, "role must be 1-64 letters, digits, '_', '.' or '-'", param="role")
    tools: list[ToolSpec] = []
    if chat.tools and chat.tool_choice != "none":
        tools = [
            ToolSpec(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters,
            )
            for t in chat.tools
        ]
    try:
        decoding = decoding_for(chat.tool_choice, chat.response_format, tools)
    except FieldRefused as exc:
        raise ApiError(400, exc.message, param=exc.param) from None
    return Request(
        messages=[_message(m, i) for i, m in enumerate(chat.messages)],
        tools=tools,
        sampling=_sampling(chat),
        decoding=decoding,
        role=role,
        run_id=_text_or_none(metadata.get("run_id")),
        agent=_text_or_none(metadata.get("agent")),
    )


def _message(wire: WireMessage, index: int) -> Message:
    where = f"messages[{index}]"
    role = "system" if wire.role == "developer" else wire.role
    calls = [_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(wire.tool_calls or [])]
    return Message(
        role=role,
        content=_content(wire.content, where),
        tool_calls=calls,
        tool_call_id=wire.tool_call_id,
        name=wire.name,
    )


def _content(content: str | list[ContentPart] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return utf8_safe(content or "")
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            message = f"only text content parts are supported, got {part.type!r}"
            raise ApiError(400, message, param=f"{where}.content[{j}]")
        texts.append(part.text)
    return utf8_safe("".join(texts))


def _call(wire: WireToolCall, where: str) -> ToolCall:
    arguments: Any = wire.function.arguments
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise ApiError(400, "arguments is not valid JSON", param=f"{where}.function") from None
    if not isinstance(arguments, dict):
        raise ApiError(400, "arguments must be a JSON object", param=f"{where}.function")
    fields: dict[str, Any] = {"name": wire.function.name, "arguments": arguments}
    if wire.id:
        fields["id"] = wire.id
    return ToolCall(**fields)


def _sampling(chat: ChatRequest) -> Sampling:
    """Omitted fields take rolepool's defaults (greedy, 256 tokens), not OpenAI's."""
    fields: dict[str, Any] = {}
    if chat.temperature is not None:
        fields["temperature"] = chat.temperature
    if chat.top_p is not None:
        fields["top_p"] = chat.top_p
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    if chat.seed is not None:
        fields["seed"] = chat.seed
    if chat.stop is not None:
        fields["stop"] = [chat.stop] if isinstance(chat.stop, str) else chat.stop
    try:
        return Sampling(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param(first["loc"])
        raise ApiError(400, f"{param}: {first['msg']}", param=param) from None


def _text_or_none(value: Any) -> str | None:
    return value[:128] if isinstance(value, str) and value else None


# -- answers -------------------------------------------------------------------------------------


def answer_calls(
    completion: Completion, *, parse_calls: bool, max_calls: int | None = None
) -> tuple[list[ToolCall], str]:
    """The calls an answer carries and its remaining text. With `parse_calls` (the request
    offered tools and asked for no JSON reply), calls the model wrote as text become
    `tool_calls`, as vLLM's tool parsers do; text that fails to parse stays content for the
    client's own feedback loop. `max_calls=1` is `parallel_tool_calls: false`."""
    calls, text = completion.tool_calls or [], utf8_safe(completion.text)
    if not calls and parse_calls:
        parsed = parse_tool_calls(text)
        if parsed.calls and parsed.failure is None:
            calls, text = parsed.calls, parsed.text
    return calls[:max_calls], text


def chat_completion(
    completion: Completion, served_by: str, *, parse_calls: bool, max_calls: int | None = None
) -> dict:
    """The OpenAI `chat.completion` object for a worker's answer; its `model` is `served_by`,
    the name of the worker that served (never just what the client asked for). Calls as in
    `answer_calls`."""
    calls, text = answer_calls(completion, parse_calls=parse_calls, max_calls=max_calls)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = completion.finish_reason or "stop"
    if calls:
        message["content"] = text or None
        message["tool_calls"] = [wire_call(c) for c in calls]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_by,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": wire_usage(completion),
        "rolepool": audit_trail(completion),
    }


def wire_usage(completion: Completion) -> dict[str, Any]:
    """OpenAI's `usage`, with `prompt_tokens_details.cached_tokens` where the worker said how
    many prompt tokens it read from its prefix cache."""
    usage = completion.usage
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if completion.cached_prompt_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": completion.cached_prompt_tokens}
    return out


def audit_trail(completion: Completion) -> dict[str, Any]:
    """The `rolepool` object on an answer: which worker served, under which policy."""
    return {
        "worker": completion.worker,
        "model": completion.model,
        "architecture": completion.architecture,
        "latency": completion.latency,
        "policy_version": completion.policy_version,
        "expert_load": completion.expert_load,
    }


def wire_call(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.dumps(call.arguments, allow_nan=False)
    except (TypeError, ValueError):
        message = f"the worker returned arguments for {call.name!r} that are not JSON"
        raise ApiError(502, message, "worker_error", worker_failure=True) from None
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }
