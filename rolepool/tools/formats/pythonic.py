"""Pythonic call lists: `[get_weather(city="Paris", days=3), get_time()]` (Llama 3.2, Llama 4).

Read with Python's own parser (`ast`) and literal values only: a call's arguments must be keyword
arguments whose values are literals (strings, numbers, True/False/None and the JSON spellings
true/false/null, lists and dicts of those). Nothing is evaluated. Llama 4 may wrap the list in
`<|python_start|>...<|python_end|>`.

Because a bracketed list is ordinary prose too, the list is read in auto mode only when it is the
whole reply; with the format declared (`tool_format = "pythonic"`), a list after prose is read too.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from rolepool.tools._strict_json import argument_problem
from rolepool.tools.formats.base import Broken, Found, named_call

NAME = "pythonic"
_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_WRAPPERS = re.compile(r"<\|python_start\|>|<\|python_end\|>|<\|eot_id\|>|<\|eom_id\|>|<\|eot\|>")
_NAMED_CONSTANTS = {"true": True, "false": False, "null": None}
_MAX_CHARS = 200_000  # Python's parser is not for megabytes of model output


def find(text: str, declared: bool) -> tuple[int, int] | None:
    """Where a pythonic list sits in `text` (`start`, `end`), or None: the whole reply (spaces
    and Llama end tokens aside), or, declared, from the first `[name(` to the last `]`."""
    cleaned = _WRAPPERS.sub(lambda m: " " * len(m.group()), text)
    body = cleaned.strip()
    if not body.endswith("]"):
        return None
    start = cleaned.find(body)
    if _START.match(cleaned, start):
        return start, start + len(body)
    match = _START.search(cleaned) if declared else None
    if match is None:
        return None
    return match.start(), cleaned.rfind("]") + 1


def read(text: str, start: int, end: int) -> Found | Broken:
    source = text[start:end]
    if len(source) > _MAX_CHARS:
        return Broken(start, f"pythonic call list over {_MAX_CHARS} characters")
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        offset = getattr(exc, "offset", None) or 1
        return Broken(start + offset - 1, f"not a Python call list ({type(exc).__name__})")
    if not isinstance(tree.body, ast.List) or not tree.body.elts:
        return Broken(start, "expected a non-empty list of calls: [name(arg=value, ...)]")
    calls = []
    for node in tree.body.elts:
        call = _call(node)
        if isinstance(call, str):
            return Broken(start + _column(node), call)
        calls.append(call)
    return Found(calls, end)


def _call(node: ast.expr) -> Any:
    if not isinstance(node, ast.Call):
        return "each item of the list must be a call: name(arg=value, ...)"
    name = _dotted(node.func)
    if name is None:
        return "a call's name must be a plain or dotted name"
    if node.args:
        return f"{name}(): arguments must be given by keyword (name=value)"
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            return f"{name}(): **kwargs is not a literal argument"
        if keyword.arg in arguments:
            return f"{name}(): argument {keyword.arg!r} given twice"
        try:
            value = _literal(keyword.value)
        except (ValueError, TypeError, RecursionError) as exc:
            return f"{name}(): argument {keyword.arg!r} is not a literal ({exc})"
        arguments[keyword.arg] = value
    problem = argument_problem(arguments)
    if problem is not None:
        return f"{name}(): {problem}"
    return named_call(name, arguments)


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("** in a dict")
        keys = [_literal(key) for key in node.keys if key is not None]
        if not all(isinstance(key, str) for key in keys):
            raise ValueError("dict keys must be strings")
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key")
        return dict(zip(keys, [_literal(v) for v in node.values], strict=True))
    value = ast.literal_eval(node)
    if isinstance(value, complex | bytes | set | frozenset | tuple | dict | list):
        raise ValueError(f"{type(value).__name__} is not a JSON value")
    return value


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted(node.value)
        return f"{owner}.{node.attr}" if owner else None
    return None


def _column(node: ast.expr) -> int:
    return max(int(getattr(node, "col_offset", 0)), 0)
