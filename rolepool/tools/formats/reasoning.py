"""Reasoning split off a reply before its tool calls are parsed: `<think>...</think>` blocks
(Qwen3, DeepSeek-R1 and their kin) and gpt-oss harmony's `analysis` channel.

A reply that starts inside reasoning (the chat template opened `<think>` in the prompt) has a
`</think>` with no opening tag: everything before it is reasoning. A `<think>` never closed runs to
the end of the text: the model was still thinking when it stopped, so there is no answer and no
call in it.
"""

from __future__ import annotations

import re

__all__ = ["split_reasoning"]

_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)
_ANALYSIS = re.compile(
    r"(?:<\|start\|>assistant\s*)?<\|channel\|>\s*analysis\s*<\|message\|>(.*?)(?:<\|end\|>|\Z)",
    re.DOTALL,
)


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, the reply without it); reasoning pieces are joined by blank lines."""
    pieces: list[str] = []
    close = text.find("</think>")
    opened = text.find("<think>")
    if close >= 0 and (opened < 0 or close < opened):
        pieces.append(text[:close])
        text = text[close + len("</think>") :]

    def keep(match: re.Match[str]) -> str:
        pieces.append(match.group(1))
        return ""

    if "<think>" in text:
        text = _THINK.sub(keep, text)
    if "<|channel|>" in text:
        text = _ANALYSIS.sub(keep, text)
    reasoning = "\n\n".join(piece.strip() for piece in pieces if piece.strip())
    return reasoning, text
