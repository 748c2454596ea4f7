"""gpt-oss harmony:
`<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`.

The recipient (`to=functions.NAME`) may also come before the channel, in the role header
(`<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>...`). The arguments are
one JSON object; `<|call|>` ends the message (an `<|end|>`, or the end of the text, is taken too).
The `analysis` channel is reasoning (`reasoning.py` splits it off before parsing).
"""

from __future__ import annotations

import re

from rolepool.tools._strict_json import StrictDecoder
from rolepool.tools.formats.base import Broken, Found, json_object_at, named_call

NAME = "harmony"
MARKER = r"(?:<\|start\|>assistant\s*)?(?:<\|channel\|>\s*commentary\s*)?to=functions\."
_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_HEADER = re.compile(
    r"\s*(?:<\|channel\|>\s*commentary\s*)?(?:<\|constrain\|>\s*)?(?:json\s*)?<\|message\|>"
)
_ENDS = ("<|call|>", "<|end|>")


def read(text: str, start: int, decoder: StrictDecoder) -> Found | Broken:
    at = text.find("to=functions.", start) + len("to=functions.")
    name = _NAME.match(text, at)
    if name is None:
        return Broken(at, "expected a function name after to=functions.")
    header = _HEADER.match(text, name.end())
    if header is None:
        return Broken(name.end(), f"expected <|message|> after to=functions.{name.group()}")
    where = f"in the message to functions.{name.group()}"
    parsed = json_object_at(text, header.end(), decoder, where, _ENDS)
    if isinstance(parsed, Broken):
        return parsed
    arguments, end = parsed
    rest = end + len(text[end:]) - len(text[end:].lstrip())
    for closer in _ENDS:
        if text.startswith(closer, rest):
            return Found([named_call(name.group(), arguments)], rest + len(closer))
    if text[rest:].strip():
        return Broken(rest, f"expected <|call|> after the arguments {where}")
    return Found([named_call(name.group(), arguments)], end)
