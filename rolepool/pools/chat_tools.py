"""Tools in the prompt, the Hugging Face way: `apply_chat_template(messages, tools=...)`.

Each chat template puts the tools where its model was trained to find them (the system message, a
block of their own). Some templates ignore the `tools` argument altogether, and rendering them
anyway would silently give the model a prompt without its tools. So a worker checks its template
once (`renders_tools`: render a probe tool and look for its name) and, when the template cannot
render tools, uses the documented text fallback (`TOOLS_FALLBACK`): the tools' JSON schemas and
the Hermes `<tool_call>` answer format, in words, at the head of the system message (one is added
when the conversation has none). `rolepool models check` reports which of the two a model gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rolepool.core import ConfigError

__all__ = [
    "TOOLS_FALLBACK",
    "apply_template",
    "declared_tool_format",
    "renders_tools",
    "text_decoder",
    "with_tools_in_text",
]

_PROBE_NAME = "rolepool_probe_tool_7f3a"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "probe",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
    },
}

TOOLS_FALLBACK = (
    "You can call these tools. Their JSON schemas:\n{schemas}\n"
    "To call one, answer with one block per call:\n"
    '<tool_call>{{"name": "<tool name>", "arguments": {{...}}}}</tool_call>'
)
"""The text fallback for templates that cannot render tools (see the module docstring)."""


def renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template puts the tools it is given into the prompt."""
    messages = [{"role": "user", "content": "hi"}]
    try:
        text = tokenizer.apply_chat_template(
            messages, tools=[_PROBE_TOOL], add_generation_prompt=True, tokenize=False
        )
    except Exception:  # noqa: BLE001 - a template that fails on tools does not render them
        return False
    return isinstance(text, str) and _PROBE_NAME in text


def with_tools_in_text(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`messages` with the text fallback for `tools` at the head of the system message."""
    schemas = "\n".join(
        json.dumps(tool.get("function", tool), ensure_ascii=False) for tool in tools
    )
    block = TOOLS_FALLBACK.format(schemas=schemas)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{block}\n\n{first.get('content') or ''}".rstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def apply_template(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    template_renders_tools: bool,
) -> list[int]:
    """The prompt's token ids: tools through the template when it renders them, else in text."""
    if tools and not template_renders_tools:
        messages, tools = with_tools_in_text(messages, tools), None
    ids = tokenizer.apply_chat_template(
        messages, tools=tools or None, add_generation_prompt=True, return_dict=False
    )
    return list(ids)


def declared_tool_format(declared: str | None, tokenizer: Any) -> str:
    """The tool-call format a worker declares: the configured one, else the one its chat template
    and special tokens point at (`rolepool.tools.formats.detect_tool_format`)."""
    from rolepool.tools.formats import FORMATS, detect_tool_format

    if declared not in (None, "auto"):
        if declared not in FORMATS:
            known = ", ".join(FORMATS)
            raise ConfigError(
                f"unknown tool_format {declared!r}; use one of auto, {known}", where="tool_format"
            )
        return declared
    template = getattr(tokenizer, "chat_template", None)
    template = template if isinstance(template, str) else json.dumps(template or "")
    tokens = [str(t) for t in getattr(tokenizer, "all_special_tokens", [])]
    tokens += [str(t) for t in getattr(tokenizer, "added_tokens_encoder", {})]
    return detect_tool_format(template, tokens)


# Tool-call markers that are special tokens in their models' tokenizers: decoding with
# skip_special_tokens would remove them and leave the parser nothing to find.
MARKER_TOKENS: dict[str, tuple[str, ...]] = {
    "harmony": ("<|start|>", "<|channel|>", "<|constrain|>", "<|message|>", "<|call|>", "<|end|>"),
    "deepseek": (
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁calls▁end｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁call▁end｜>",
        "<｜tool▁sep｜>",
    ),
    "granite": ("<|tool_call|>",),
    "pythonic": ("<|python_start|>", "<|python_end|>"),
    "qwen_xml": ("<tool_call>", "</tool_call>"),
    "hermes": ("<tool_call>", "</tool_call>"),
    "mistral": ("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"),
    "llama3": ("<|python_tag|>",),
}


def text_decoder(tokenizer: Any, tool_format: str, eos: Iterable[int] = ()) -> Any:
    """`decode(ids) -> str` for completions: special tokens skipped, except the markers of
    `tool_format` (and `<think>`/`</think>`), which the parser needs to see; an end-of-sequence
    id (`eos`) is always skipped, marker or not (gpt-oss ends a call with `<|call|>`, which the
    harmony parser does not need)."""
    keep_tokens = (*MARKER_TOKENS.get(tool_format, ()), "<think>", "</think>")
    vocab = tokenizer.get_vocab()
    keep = {vocab[t] for t in keep_tokens if t in vocab} - set(eos)
    special = set(getattr(tokenizer, "all_special_ids", []))
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            special.add(token_id)
    drop = (special | set(eos)) - keep
    if not keep & special:  # nothing to keep that decoding would skip: the plain decode

        def plain(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=True)

        return plain

    def keeping_markers(ids: list[int]) -> str:
        return tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False)

    return keeping_markers
