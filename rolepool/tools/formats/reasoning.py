"""Reasoning split off a reply before its tool calls are parsed: `<think>...</think>` blocks
(Qwen3, DeepSeek-R1 and their kin) and gpt-oss harmony's `analysis` channel.

A reply that starts inside reasoning (the chat template opened `<think>` in the prompt) has a
`</think>` with no opening tag: everything before it is reasoning. A `<think>` never closed runs to
the end of the text: the model was still thinking when it stopped, so there is no answer and no
call in it. A tag inside a complete JSON value of the reply (`{"note": "<think>"}`, a key or a
string that happens to hold the tag) is text, not reasoning.
"""

from __future__ import annotations

import json
import re

__all__ = ["split_reasoning"]

_OPEN, _CLOSE = "<think>", "</think>"
_MAX_JSON_STARTS = 256  # JSON values tried per reply; past that, tags count wherever they are
_DECODER = json.JSONDecoder()
_ANALYSIS = re.compile(
    r"(?:<\|start\|>assistant\s*)?<\|channel\|>\s*analysis\s*<\|message\|>(.*?)(?:<\|end\|>|\Z)",
    re.DOTALL,
)


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, the reply without it); reasoning pieces are joined by blank lines."""
    pieces: list[str] = []
    if _OPEN in text or _CLOSE in text:
        spans = _json_spans(text)
        close = _find_tag(text, _CLOSE, 0, spans)
        opened = _find_tag(text, _OPEN, 0, spans)
        start = 0
        if close >= 0 and (opened < 0 or close < opened):
            pieces.append(text[:close])
            start = close + len(_CLOSE)
        kept: list[str] = []
        while True:
            opened = _find_tag(text, _OPEN, start, spans)
            if opened < 0:
                kept.append(text[start:])
                break
            kept.append(text[start:opened])
            body = opened + len(_OPEN)
            end = _find_tag(text, _CLOSE, body, spans)
            if end < 0:  # never closed: thinking to the end
                pieces.append(text[body:])
                break
            pieces.append(text[body:end])
            start = end + len(_CLOSE)
        text = "".join(kept)
    if "<|channel|>" in text:

        def keep(match: re.Match[str]) -> str:
            pieces.append(match.group(1))
            return ""

        text = _ANALYSIS.sub(keep, text)
    reasoning = "\n\n".join(piece.strip() for piece in pieces if piece.strip())
    return reasoning, text


def _find_tag(text: str, tag: str, start: int, spans: list[tuple[int, int]]) -> int:
    """The first `tag` at or after `start` outside every JSON span, or -1."""
    at = text.find(tag, start)
    while at >= 0:
        inside = next((end for begin, end in spans if begin < at < end), None)
        if inside is None:
            return at
        at = text.find(tag, inside)
    return -1


def _json_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each complete JSON object or array in `text`, outermost only, scanning left
    to right (at most `_MAX_JSON_STARTS` attempts: a pathological reply loses only this nicety)."""
    spans: list[tuple[int, int]] = []
    at, tries = 0, 0
    while tries < _MAX_JSON_STARTS:
        starts = [i for i in (text.find("{", at), text.find("[", at)) if i >= 0]
        if not starts:
            break
        begin = min(starts)
        tries += 1
        try:
            _, end = _DECODER.raw_decode(text, begin)
        except (ValueError, RecursionError):
            at = begin + 1
            continue
        spans.append((begin, end))
        at = end
    return spans
