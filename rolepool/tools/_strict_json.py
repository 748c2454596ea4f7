"""Strict JSON decoding from an offset inside model output, for tool-call parsing.

Python's `json` accepts things that other parsers read differently or reject: duplicate keys (which
one wins?), NaN and Infinity, lone surrogates that cannot be encoded as UTF-8, nesting deep enough
to exhaust the stack. A tool call carrying one of those could mean something else to the next
component, so we refuse it. The decoder only *notes* such problems while decoding instead of raising
mid-value: the caller still learns where the value ends and can skip it cheaply when it turns out
not to be a tool call at all (JSON in a final answer is none of our business).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting a tool call may have; real arguments stay far below it."""

MAX_INT_DIGITS = 4300
"""Python's default int-parsing limit; past it `int()` raises and conversion is quadratic."""

# A decode error's constructor counts newlines from the start of the string it was given, so
# decoding inside a 1 MB text from many offsets would be quadratic. We decode a window and widen
# it only when the value may run past the window's end.
_FIRST_WINDOW = 2048
_WINDOW_GROWTH = 8
# A value cut off by the window end fails at most this close to the cut (`-Infinit`, `\ud800\u12`),
# except for an unterminated string, which reports where the string started.
_CUT_MARGIN = 16

_MAX_WALK_TOKENS = 200_000
_SURROGATE = re.compile("[\ud800-\udfff]")
_TOKEN = re.compile(
    r"""[ \t\n\r]*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<open>[\[{])
    | (?P<close>[\]}])
    | (?P<punct>[:,])
    | (?P<constant>-?Infinity|NaN)
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<literal>true|false|null)
    )""",
    re.VERBOSE | re.DOTALL,
)


class JsonError(Exception):
    """A value could not be decoded. `position` is where the problem is; `scanned` is how far the
    decoder read to find it (past `position` for an unterminated string)."""

    def __init__(
        self, message: str, position: int, *, scanned: int | None = None, too_deep: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.scanned = position if scanned is None else scanned
        self.too_deep = too_deep


@dataclass(frozen=True)
class Decoded:
    """A decoded value, the span `[start, end)` it came from, and the first strictness problem."""

    value: Any
    start: int
    end: int
    problem: str | None


def duplicate_key_message(key: str) -> str:
    return f"duplicate key {key!r} in JSON object (ambiguous: parsers disagree on which wins)"


def depth_message() -> str:
    return f"JSON nested deeper than {MAX_DEPTH} levels"


def surrogate_message() -> str:
    return "JSON string contains an unpaired surrogate (invalid unicode)"


def constant_message(name: str) -> str:
    return f"{name} is not valid JSON"


def integer_message(digits: int) -> str:
    return f"integer with {digits} digits is too large (at most {MAX_INT_DIGITS})"


def float_message() -> str:
    return "number is out of range for a float"


class StrictDecoder:
    """Decodes one JSON value at an offset, noting strictness problems without aborting."""

    def __init__(self) -> None:
        self._problem: str | None = None
        self._decoder = json.JSONDecoder(
            object_pairs_hook=self._object,
            parse_constant=self._constant,
            parse_int=self._int,
            parse_float=self._float,
            strict=False,  # raw newlines and tabs inside strings are common and unambiguous
        )

    def decode_at(self, text: str, start: int, closers: tuple[str, ...] = ()) -> Decoded:
        """Decode the value starting exactly at `start`. `closers` are texts that, met where a
        value should continue, mean it was left unterminated (a `</tool_call>` tag, say)."""
        size = _FIRST_WINDOW
        while True:
            window = text[start : start + size]
            cut = start + size < len(text)
            self._problem = None
            try:
                value, end = self._decoder.raw_decode(window)
            except json.JSONDecodeError as err:
                unterminated = err.msg.startswith("Unterminated string")
                if cut and (unterminated or err.pos >= size - _CUT_MARGIN):
                    size *= _WINDOW_GROWTH
                    continue
                raise _describe(text, start, start + err.pos, err.msg, closers) from None
            except RecursionError:
                located = locate_problem(text, start)
                raise JsonError(
                    depth_message(), located[0] if located else start, too_deep=True
                ) from None
            if cut and end == len(window):
                size *= _WINDOW_GROWTH
                continue
            return Decoded(value, start, start + end, self._problem)

    def _note(self, message: str) -> None:
        if self._problem is None:
            self._problem = message

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self._note(duplicate_key_message(key))
                    break
                seen.add(key)
        return out

    def _constant(self, name: str) -> float:
        self._note(constant_message(name))
        return 0.0

    def _int(self, digits: str) -> int:
        count = len(digits.lstrip("-"))
        if count > MAX_INT_DIGITS:
            self._note(integer_message(count))
            return 0
        try:
            return int(digits)
        except ValueError:  # a lower interpreter-wide limit (sys.set_int_max_str_digits)
            self._note(integer_message(count))
            return 0

    def _float(self, literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            self._note(float_message())
        return value


def _describe(text: str, start: int, pos: int, msg: str, closers: tuple[str, ...]) -> JsonError:
    """Turn `json`'s terse message into one a model can act on."""
    if msg.startswith("Unterminated string"):
        return JsonError("unterminated string in JSON", pos, scanned=len(text))
    if pos >= len(text) or (closers and text.startswith(closers, pos)):
        kind = "object" if text[start] == "{" else "array"
        return JsonError(f"unterminated JSON {kind} (a closing bracket is missing)", pos)
    return JsonError(f"invalid JSON: {msg[:1].lower()}{msg[1:]}", pos)


def value_problem(value: Any) -> str | None:
    """Problems `json` lets through in decoded data: excessive depth and lone surrogates."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                return depth_message()
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return surrogate_message()
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                return depth_message()
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and _SURROGATE.search(item):
            return surrogate_message()
    return None


def argument_problem(value: Any) -> str | None:
    """What makes already-decoded call arguments something the text parser would have refused:
    nesting past MAX_DEPTH, a non-finite number, a lone surrogate, or a value JSON cannot hold.
    Walks with its own stack, so no depth of nesting can exhaust Python's."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return depth_message()
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    return "object keys must be strings"
                if any(_SURROGATE.search(key) for key in item):
                    return surrogate_message()
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                return surrogate_message()
        elif isinstance(item, float) and not math.isfinite(item):
            return float_message()
        elif item is not None and not isinstance(item, bool | int | float):
            return f"a {type(item).__name__} is not a JSON value"
    return None


def too_deep(value: Any) -> bool:
    """Whether `value` nests lists and objects past MAX_DEPTH (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def find_problem(text: str, decoded: Decoded) -> tuple[int, str] | None:
    """The first strictness problem in a decoded value, with its offset when we can find it."""
    message = decoded.problem or value_problem(decoded.value)
    if message is None:
        return None
    return locate_problem(text, decoded.start) or (decoded.start, message)


def locate_problem(text: str, start: int) -> tuple[int, str] | None:
    """Walk the JSON tokens from `start` and report the first problem in text order.

    Only called once a problem is known to exist, so its Python-level speed does not matter; the
    token budget keeps a pathological input from making it slow anyway."""
    stack: list[set[str] | None] = []  # the keys seen so far for objects, None for arrays
    expect_key = False
    pos = start
    for _ in range(_MAX_WALK_TOKENS):
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            return None
        kind, at = match.lastgroup, match.start(match.lastgroup)
        token, pos = match.group(kind), match.end()
        if kind == "open":
            if len(stack) >= MAX_DEPTH:
                return at, depth_message()
            stack.append(set() if token == "{" else None)
            expect_key = token == "{"
        elif kind == "close":
            if not stack:
                return None
            stack.pop()
            expect_key = False
        elif kind == "punct":
            expect_key = token == "," and bool(stack) and stack[-1] is not None
        elif kind == "string":
            problem = _string_problem(text, at, stack[-1] if expect_key and stack else None)
            if problem:
                return at, problem
            expect_key = False
        elif kind == "constant":
            return at, constant_message(token)
        elif kind == "number":
            problem = _number_problem(token)
            if problem:
                return at, problem
        if not stack:
            return None
    return None


def _string_problem(text: str, at: int, keys: set[str] | None) -> str | None:
    try:
        value, _ = json.decoder.scanstring(text, at + 1, False)
    except ValueError:
        return None
    if _SURROGATE.search(value):
        return surrogate_message()
    if keys is not None:
        if value in keys:
            return duplicate_key_message(value)
        keys.add(value)
    return None


def _number_problem(token: str) -> str | None:
    if any(c in token for c in ".eE"):
        return None if math.isfinite(float(token)) else float_message()
    digits = len(token.lstrip("-"))
    return integer_message(digits) if digits > MAX_INT_DIGITS else None
