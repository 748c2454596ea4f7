"""Reading what an OpenAI-compatible server answers, beyond content and calls: reasoning text,
cached prompt tokens, vLLM's routed experts, and a streamed answer put back together.

Servers name reasoning differently: vLLM returns `message.reasoning` (older releases
`reasoning_content`) when started with a reasoning parser; others leave a `<think>...</think>`
block at the start of the content. Either way it becomes `Completion.reasoning`, and only the
rest of the content is parsed for tool calls: a call the model considered while thinking is not
a call it made.

vLLM started with `--enable-return-routed-experts` adds `routed_experts` to each choice (and
`prompt_routed_experts` to the response): for each token, for each MoE layer, the `top_k` expert
indices the router chose. Counted per layer and expert, that is rolepool's `expert_load`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from rolepool.core import ToolCall, Usage
from rolepool.tools.parsing import parse_tool_calls

_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


def reasoning_of(message: dict[str, Any]) -> str | None:
    for key in ("reasoning", "reasoning_content"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def split_think(text: str) -> tuple[str | None, str]:
    """A leading `<think>` block as reasoning, and the text after it."""
    match = _THINK.match(text)
    if match is None:
        return None, text
    return match.group(1).strip(), text[match.end() :]


def cached_tokens(usage: Any) -> int | None:
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and cached >= 0 else None


def routed_expert_load(
    data: dict[str, Any], choice: dict[str, Any], num_experts: int | None
) -> list[list[int]] | None:
    """`expert_load[layer][expert]` from vLLM's per-token routing of the prompt and the
    completion, or None when the server sent none (or something malformed). Without
    `num_experts` the width is the highest expert index seen plus one."""
    tokens = [
        *_token_routes(data.get("prompt_routed_experts")),
        *_token_routes(choice.get("routed_experts")),
    ]
    if not tokens:
        return None
    layers = len(tokens[0])
    if any(len(token) != layers for token in tokens):
        return None
    seen = max((e for token in tokens for layer in token for e in layer), default=-1)
    width = num_experts if num_experts is not None else seen + 1
    if seen >= width or width <= 0:
        return None
    load = [[0] * width for _ in range(layers)]
    for token in tokens:
        for layer, experts in enumerate(token):
            for expert in experts:
                load[layer][expert] += 1
    return load


def _token_routes(raw: Any) -> list[list[list[int]]]:
    """Validated `[token][layer][k]` indices; anything malformed is dropped whole."""
    if not isinstance(raw, list):
        return []
    for token in raw:
        if not isinstance(token, list):
            return []
        for layer in token:
            if not isinstance(layer, list) or not all(
                isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in layer
            ):
                return []
    return raw


class ThinkFilter:
    """Streamed content with a leading `<think>...</think>` block routed to reasoning, as
    `split_think` does for a whole reply, so a streaming caller never sees it as content."""

    def __init__(self) -> None:
        self.buffer = ""
        self.done = False

    def feed(self, delta: str) -> tuple[str, str]:
        """(content, reasoning) of this delta; both empty while it cannot tell yet."""
        if self.done:
            return delta, ""
        self.buffer += delta
        head = self.buffer.lstrip()
        if "<think>".startswith(head):
            return "", ""  # nothing yet, or the start of the tag
        if not head.startswith("<think>"):
            self.done = True
            return self.buffer, ""
        if "</think>" not in head:
            return "", ""
        self.done = True
        reasoning, rest = split_think(self.buffer)
        return rest, reasoning or ""


class StreamedReply:
    """`chat.completion.chunk`s put back together into the `chat.completion` shape the worker
    reads; notes when the first token arrived."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.routed_experts: list[Any] = []
        self.prompt_routed_experts: Any = None
        self.first_at: float | None = None

    def add(self, chunk: dict[str, Any]) -> tuple[str, str]:
        """Take one chunk; returns its (content, reasoning) deltas."""
        if isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        if chunk.get("prompt_routed_experts") is not None:
            self.prompt_routed_experts = chunk["prompt_routed_experts"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return "", ""
        choice = choices[0]
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        if isinstance(choice.get("routed_experts"), list):
            self.routed_experts.extend(choice["routed_experts"])
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        content = delta.get("content") if isinstance(delta.get("content"), str) else ""
        reasoning = reasoning_of(delta) or ""
        self._add_calls(delta.get("tool_calls"))
        if (content or reasoning or self.calls) and self.first_at is None:
            self.first_at = time.perf_counter()
        self.content.append(content)
        self.reasoning.append(reasoning)
        return content, reasoning

    def _add_calls(self, raw: Any) -> None:
        for item in raw if isinstance(raw, list) else []:
            if not isinstance(item, dict):
                continue
            index = item.get("index", len(self.calls))
            call = self.calls.setdefault(
                index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if isinstance(item.get("id"), str):
                call["id"] = item["id"]
            function = item.get("function") if isinstance(item.get("function"), dict) else {}
            if isinstance(function.get("name"), str):
                call["function"]["name"] += function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] += function["arguments"]

    def response(self) -> dict[str, Any]:
        """The answer as a non-streamed `chat.completion` body."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        reasoning = "".join(self.reasoning)
        if reasoning:
            message["reasoning"] = reasoning
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        choice: dict[str, Any] = {"index": 0, "message": message}
        choice["finish_reason"] = self.finish_reason
        if self.routed_experts:
            choice["routed_experts"] = self.routed_experts
        data: dict[str, Any] = {"id": self.id, "choices": [choice], "usage": self.usage}
        if self.prompt_routed_experts is not None:
            data["prompt_routed_experts"] = self.prompt_routed_experts
        return data


def sse_data(line: str) -> dict[str, Any] | None:
    """The JSON object of one SSE `data:` line, None for anything else (comments, `[DONE]`)."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# -- the message: calls, answers, usage -------------------------------------------------------


def read_tool_calls(raw: Any, text: str) -> tuple[list[ToolCall] | None, str]:
    """Calls the server parsed, or (None, text) so the run loop parses and reports problems.

    The calls go through `parse_tool_calls` in the OpenAI wrapper shape they came in, so the
    arguments string gets the same strict decoding as text calls. When that fails, the calls are
    appended to the text as that JSON: the loop's parser then fails on it the same way and tells
    the model precisely what was wrong, instead of this worker raising.
    """
    if not isinstance(raw, list) or not raw:
        return None, text
    rendered = json.dumps([as_wrapper(item) for item in raw], ensure_ascii=False)
    parsed = parse_tool_calls(rendered)
    if parsed.failure is None and parsed.calls and len(parsed.calls) == len(raw):
        return parsed.calls, text
    return None, f"{text}\n{rendered}".strip()


def as_wrapper(item: Any) -> Any:
    """A server's call in OpenAI's shape with only the keys the parser accepts."""
    if not isinstance(item, dict):
        return item
    out = {key: item[key] for key in ("id", "type", "function") if key in item}
    if isinstance(out.get("function"), dict):
        function = out["function"]
        out["function"] = {k: function[k] for k in ("name", "arguments") if k in function}
    return out


def unwrap_answer(text: str) -> str:
    """`{"answer": "..."}` from guided decoding is a final answer: return its text."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or a reply nested past the parser's stack
        return text
    if isinstance(value, dict) and value.keys() == {"answer"} and isinstance(value["answer"], str):
        return value["answer"]
    return text


def read_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) and prompt >= 0 else 0,
        completion_tokens=completion if isinstance(completion, int) and completion >= 0 else 0,
    )


def passed_expert_load(raw: Any) -> list[list[int]] | None:
    """Expert load a rolepool server passed along; anything malformed is dropped, not fatal."""
    if not isinstance(raw, list):
        return None
    for row in raw:
        if not isinstance(row, list) or not all(isinstance(n, int) for n in row):
            return None
    return raw
