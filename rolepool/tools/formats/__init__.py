"""Tool-call formats beyond JSON: one module per format, and which one a model speaks.

`parsing.py` reads every format it knows in one left-to-right scan: JSON, Hermes `<tool_call>`,
Llama 3 and Mistral are its own; the marker formats here (`MARKED`) are read by their modules at
their markers, and a pythonic list (`pythonic`) is read when it is the whole reply. `<think>` and
harmony `analysis` reasoning is split off first (`reasoning`).

`detect_tool_format` names the format a model's chat template and special tokens point at, for
`rolepool models check` and for a worker's declared `tool_format` (`pool.toml`); the parser reads
every format either way, and a declared format only widens what it reads where auto mode must be
careful (a pythonic list after prose).
"""

from __future__ import annotations

from collections.abc import Iterable

from rolepool.tools.formats import deepseek, granite, harmony, pythonic, qwen_xml
from rolepool.tools.formats.reasoning import split_reasoning

__all__ = ["FORMATS", "MARKED", "detect_tool_format", "split_reasoning"]

MARKED = (qwen_xml, harmony, granite, deepseek)
"""Formats read at a marker, in the order their markers are tried at one position."""

FORMATS = (
    "json",
    "hermes",
    "llama3",
    "mistral",
    pythonic.NAME,
    qwen_xml.NAME,
    harmony.NAME,
    granite.NAME,
    deepseek.NAME,
)
"""Every format name a `ParseResult.format` or a `tool_format` setting may hold ("auto" aside)."""

# (format, any of these in the template or the special tokens), most specific first.
_SIGNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (harmony.NAME, ("to=functions.", "<|constrain|>")),
    (deepseek.NAME, (deepseek.CALLS_BEGIN, deepseek.CALL_BEGIN)),
    (granite.NAME, (granite.OPEN,)),
    (qwen_xml.NAME, ("<function=", "<parameter=")),
    (pythonic.NAME, ("<|python_start|>", "[func_name1(", "func_name1(params_name1")),
    ("mistral", ("[TOOL_CALLS]",)),
    ("hermes", ("<tool_call>",)),
    ("llama3", ("<|python_tag|>", '"parameters": dictionary of argument name')),
)


def detect_tool_format(chat_template: str | None, special_tokens: Iterable[str] = ()) -> str:
    """The tool-call format a model's chat template (and its special tokens) points at, or
    "json" when nothing marks one."""
    template = chat_template or ""
    tokens = set(special_tokens)
    for name, signs in _SIGNS:
        if any(sign in template or sign in tokens for sign in signs):
            return name
    return "json"
