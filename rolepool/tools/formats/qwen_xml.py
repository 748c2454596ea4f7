"""Qwen3-Coder XML:
`<tool_call><function=NAME><parameter=KEY>VALUE</parameter>...</function></tool_call>`.

A value is read as JSON when all of it is one strict JSON value (numbers, booleans, objects, lists,
quoted strings), else as the raw text: the template writes strings unquoted and everything else as
JSON, and without the tool's schema at hand that is the reading that keeps both (a value that
strict JSON refuses, such as NaN or a duplicate key, stays text). One newline right after
`<parameter=KEY>` and one right before `</parameter>` belong to the layout, not the value.
"""

from __future__ import annotations

import re
from typing import Any

from rolepool.tools._strict_json import JsonError, StrictDecoder, find_problem
from rolepool.tools.call_objects import skip_space
from rolepool.tools.formats.base import Broken, Found, named_call

NAME = "qwen_xml"
MARKER = r"(?:<tool_call>\s*)?<function="
_FUNCTION = re.compile(r"<function=(?P<name>[^>\n]{1,200})>")
_PARAMETER = re.compile(r"<parameter=(?P<key>[^>\n]{1,200})>")
_CLOSE_PARAMETER, _CLOSE_FUNCTION, _CLOSE_BLOCK = "</parameter>", "</function>", "</tool_call>"


def read(text: str, start: int, decoder: StrictDecoder) -> Found | Broken:
    wrapped = text.startswith("<tool_call>", start)
    at = text.find("<function=", start)
    head = _FUNCTION.match(text, at)
    if head is None or not head["name"].strip():
        return Broken(at, "expected <function=NAME>")
    name = head["name"].strip()
    arguments: dict[str, Any] = {}
    pos = head.end()
    while True:
        pos = skip_space(text, pos)
        parameter = _PARAMETER.match(text, pos)
        if parameter is None:
            break
        key = parameter["key"].strip()
        close = text.find(_CLOSE_PARAMETER, parameter.end())
        if close < 0:
            return Broken(parameter.end(), f"<parameter={key}> of {name!r} is not closed")
        if key in arguments:
            return Broken(pos, f"parameter {key!r} given twice in {name!r}")
        arguments[key] = _value(text[parameter.end() : close], decoder)
        pos = close + len(_CLOSE_PARAMETER)
    if not text.startswith(_CLOSE_FUNCTION, pos):
        if text[pos:].strip():
            return Broken(pos, f"expected <parameter=...> or {_CLOSE_FUNCTION} in {name!r}")
        return Found([named_call(name, arguments)], pos)
    pos += len(_CLOSE_FUNCTION)
    if wrapped:
        after = skip_space(text, pos)
        if text.startswith(_CLOSE_BLOCK, after):
            pos = after + len(_CLOSE_BLOCK)
    return Found([named_call(name, arguments)], pos)


def _value(raw: str, decoder: StrictDecoder) -> Any:
    raw = raw.removeprefix("\n").removesuffix("\n")
    start = skip_space(raw, 0)
    if start == len(raw):
        return raw
    try:
        decoded = decoder.decode_at(raw, start)
    except JsonError:
        return raw
    if skip_space(raw, decoded.end) != len(raw):
        return raw
    # A value JSON would read ambiguously (NaN, a duplicate key) stays the text it was.
    return raw if find_problem(raw, decoded) is not None else decoded.value
