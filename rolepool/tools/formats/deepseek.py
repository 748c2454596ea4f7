"""DeepSeek-V3 tool-call tokens, in both the V3 and the V3.1 shapes.

V3: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{...}\\n```
<｜tool▁call▁end｜><｜tool▁calls▁end｜>`; V3.1 drops the type and the fence:
`<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`. Several calls follow each other
inside one `tool▁calls` block.
"""

from __future__ import annotations

import re

from rolepool.tools._strict_json import StrictDecoder
from rolepool.tools.call_objects import skip_space
from rolepool.tools.formats.base import Broken, Found, json_object_at, named_call

NAME = "deepseek"
CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
MARKER = "|".join(re.escape(m) for m in (CALLS_BEGIN, CALL_BEGIN))
_HEAD = re.compile(
    rf"(?:function{re.escape(SEP)}(?P<v3>[A-Za-z_][\w.-]*)|(?P<v31>[A-Za-z_][\w.-]*){re.escape(SEP)})"
)
_FENCE_OPEN = re.compile(r"\s*```(?:json)?\s*")
_FENCE_CLOSE = re.compile(r"\s*```")


def read(text: str, start: int, decoder: StrictDecoder) -> Found | Broken:
    pos = start + len(CALLS_BEGIN) if text.startswith(CALLS_BEGIN, start) else start
    calls = []
    while True:
        pos = skip_space(text, pos)
        if not text.startswith(CALL_BEGIN, pos):
            break
        one = _one_call(text, pos + len(CALL_BEGIN), decoder)
        if isinstance(one, Broken):
            return one
        calls.extend(one.calls)
        pos = one.end
    if not calls:
        return Broken(pos, f"expected {CALL_BEGIN} after {CALLS_BEGIN}")
    if text.startswith(CALLS_END, pos):
        pos += len(CALLS_END)
    return Found(calls, pos)


def _one_call(text: str, pos: int, decoder: StrictDecoder) -> Found | Broken:
    head = _HEAD.match(text, pos)
    if head is None:
        return Broken(pos, f"expected NAME{SEP} or function{SEP}NAME after {CALL_BEGIN}")
    name = head["v3"] or head["v31"]
    where = f"in the arguments of {name!r}"
    pos = head.end()
    fence = _FENCE_OPEN.match(text, pos) if head["v3"] else None
    if fence is not None and "```" in fence.group():
        pos = fence.end()
    parsed = json_object_at(text, pos, decoder, where, (CALL_END,))
    if isinstance(parsed, Broken):
        return parsed
    arguments, pos = parsed
    if fence is not None and "```" in fence.group():
        closing = _FENCE_CLOSE.match(text, pos)
        pos = closing.end() if closing else pos
    pos = skip_space(text, pos)
    if not text.startswith(CALL_END, pos):
        if text[pos:].strip():
            return Broken(pos, f"expected {CALL_END} {where}")
        return Found([named_call(name, arguments)], pos)
    return Found([named_call(name, arguments)], pos + len(CALL_END))
