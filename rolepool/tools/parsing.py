"""Turn a model's completion text into tool calls, a final answer, or a precise parse failure.

Open-weight models do not agree on a tool-call syntax, so we accept the ones they actually emit:
bare JSON (and OpenAI-style `function` wrappers, arguments as a JSON string), Hermes/Qwen
`<tool_call>` blocks, Llama 3 JSON (`parameters`, `<|python_tag|>`, `;` between calls) and Mistral
`[TOOL_CALLS]` in both its list and `name[ARGS]{...}` forms, and the formats in
`rolepool.tools.formats` (one module each): pythonic lists (Llama 3.2/4), Qwen3-Coder XML, gpt-oss
harmony, Granite `<|tool_call|>` and DeepSeek-V3's tool-call tokens. `<think>` reasoning is split
off first and kept apart (`ParseResult.reasoning`). A broken attempt becomes a
`ParseFailure` the run loop can show the model; `parse_tool_calls` never raises, because a parser
that crashes on odd model output would take the whole run down with it.

The text is read left to right. The next *event* is either a format marker or something that may
open JSON. JSON is decoded with `raw_decode` from that exact offset, so braces inside JSON strings
never confuse the scan, and a decoded value's whole span is skipped: a call-shaped object nested in
other JSON (a plan, an example) is data, not a call. What makes a decoded value a call, and the
`ToolCall` it becomes, is `call_objects.py`: the rules every format shares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from rolepool.core.messages import ToolCall, new_call_id
from rolepool.tools._strict_json import (
    Decoded,
    JsonError,
    StrictDecoder,
    argument_problem,
    find_problem,
    too_deep,
)
from rolepool.tools.call_objects import call_shaped, skip_space, to_call
from rolepool.tools.formats import MARKED, pythonic, split_reasoning
from rolepool.tools.formats.base import Broken, Found

__all__ = ["ParseFailure", "ParseResult", "argument_problem", "parse_tool_calls", "too_deep"]

_SNIPPET_RADIUS = 40
# Decoding attempts per text for JSON-looking fragments. Code in a final answer has thousands of
# brackets; past this budget only format markers are looked for, which keeps scanning linear.
_MAX_FRAGMENTS = 10_000
# After a fragment fails to decode we rescan from the next character (the fragment may have been
# prose that swallowed a real call as "string"), unless its valid prefix was long: then we jump past
# it, so adversarial nesting cannot make the scan quadratic.
_RESCAN_LIMIT = 4096

_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_MISTRAL, _PYTHON_TAG = "[TOOL_CALLS]", "<|python_tag|>"
# A marker format's own marker comes first: Qwen3-Coder's `<tool_call><function=` is not Hermes.
_MARKED = {module.NAME: module for module in MARKED}
_MARKERS = re.compile(
    "|".join(f"(?P<{m.NAME}>{m.MARKER})" for m in MARKED)
    + r"|<tool_call>|\[TOOL_CALLS\]|<\|python_tag\|>"
)
_EVENTS = re.compile(_MARKERS.pattern + r'|\{\s*["}]|\[\s*[-\d"\[\]{tfn]')
# How a bare call attempt opens, and the key that makes broken JSON a call attempt, not prose.
_CALL_OPENING = re.compile(r'(?:\[\s*)?\{\s*"(?:name|function|arguments|parameters|type)"\s*:')
_CALL_BODY_KEY = re.compile(r'"(arguments|parameters|function)"\s*:')
_MISTRAL_NAMED = re.compile(r"(?P<name>[\w.:-]+)\s*(?:\[CALL_ID\]\s*(?P<id>[\w-]+)\s*)?\[ARGS\]")
_NOISE_ONLY = re.compile(
    r"(?:\s|[;,]|```[\w+-]*|<\|eom_id\|>|<\|eot_id\|>|<\|im_end\|>|</s>|<\|python_(?:start|end)\|>"
    r"|<\|start\|>assistant|<\|channel\|>\s*commentary|<\|end\|>|<\|return\|>|<\|eot\|>)*"
)
_FENCE_AT_END = re.compile(r"```[\w+-]*\s*$")
_FENCE_AT_START = re.compile(r"^```[ \t]*(?:\n|$)")

_Found = tuple[list[ToolCall], int, str]
"""What a handler found: the calls, where they end in the text, and their format."""


@dataclass(frozen=True)
class ParseFailure:
    """Why a call attempt could not be parsed, phrased for the model that has to fix it."""

    message: str
    position: int | None = None
    """Character offset in the parsed text where the problem is."""
    line: int | None = None
    """1-based, derived from `position`."""
    column: int | None = None
    format: str | None = None
    """The format being parsed: one of `rolepool.tools.formats.FORMATS`."""
    snippet: str = ""
    """Up to ~80 characters of the text around `position`."""

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}" if self.line is not None else ""
        if self.format:
            where = f"{where} ({self.format})" if where else f"({self.format})"
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} near {self.snippet!r}" if self.snippet else text


@dataclass(frozen=True)
class ParseResult:
    """What a completion amounts to: calls to run, a final answer, or a failure to report."""

    calls: list[ToolCall] = field(default_factory=list)
    text: str = ""
    """Prose outside the calls; the final answer when there are none; the whole output on
    failure."""
    failure: ParseFailure | None = None
    format: str = "none"
    """Format of the first call, or of the failed attempt; "none" for a final answer."""
    reasoning: str = ""
    """`<think>` (or harmony `analysis`) reasoning split off before parsing; positions in a
    failure count in the reply without it."""

    @property
    def is_final(self) -> bool:
        return not self.calls and self.failure is None


def parse_tool_calls(
    text: str, *, max_chars: int = 1_000_000, tool_format: str = "auto"
) -> ParseResult:
    """Parse one completion. Never raises; see the module docstring for the accepted formats.

    Every format is read whatever `tool_format` says; a declared format (one of
    `rolepool.tools.formats.FORMATS`) only widens what is read where auto mode is careful: a
    pythonic list is read after prose, not only as the whole reply."""
    if not isinstance(text, str):
        message = f"model output must be text, got {type(text).__name__}"
        return ParseResult(text="", failure=ParseFailure(message))
    if len(text) > max_chars:
        message = f"output is {len(text)} characters long, over the limit of {max_chars}"
        return ParseResult(text=text, failure=ParseFailure(message, snippet=text[:80]))
    try:
        reasoning, reply = split_reasoning(text)
        result = _Scanner(reply).run(declared=tool_format)
        if not reasoning:
            return result
        # A think tag inside a call's arguments is text, not reasoning. split_reasoning skips
        # tags inside JSON; for the other formats (pythonic, XML), when the whole reply parses
        # into calls whose arguments hold the tag, the split cut into a call. Not when the reply
        # opens with a think block: a call written inside reasoning is never run.
        if text.lstrip().startswith("<think>"):
            return replace(result, reasoning=reasoning)
        whole = _Scanner(text).run(declared=tool_format)
        if whole.failure is None and any(_holds_think_tag(c.arguments) for c in whole.calls):
            return whole
        return replace(result, reasoning=reasoning)
    except Exception as exc:  # noqa: BLE001 - last resort: the contract is "never raises"
        failure = ParseFailure(f"internal parser error ({type(exc).__name__}: {exc})")
        return ParseResult(text=text.strip(), failure=failure)


def _holds_think_tag(value: object) -> bool:
    """Whether a decoded argument value (keys too, at any depth) contains a think tag."""
    if isinstance(value, str):
        return "<think>" in value or "</think>" in value
    if isinstance(value, dict):
        return any(_holds_think_tag(k) or _holds_think_tag(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_think_tag(v) for v in value)
    return False


def _failure(text: str, position: int, message: str, fmt: str) -> ParseFailure:
    position = max(0, min(position, len(text)))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    snippet = text[max(0, position - _SNIPPET_RADIUS) : position + _SNIPPET_RADIUS]
    return ParseFailure(message, position, line, column, fmt, snippet)


class _Scanner:
    """One left-to-right pass over a completion. Handlers return what they found, a failure, or
    None when the text there is not a call after all."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.decoder = StrictDecoder()
        self.pos = 0  # where to look for the next event
        self.prose_from = 0  # start of the prose since the last call
        self.prose: list[str] = []
        self.calls: list[ToolCall] = []
        self.format = "none"  # of the first call found
        self.ids: set[str] = set()
        self.budget = _MAX_FRAGMENTS

    def run(self, declared: str = "auto") -> ParseResult:
        text = self.text
        span = pythonic.find(text, declared == pythonic.NAME)
        if span is not None:
            return self._pythonic(*span)
        while True:
            events = _EVENTS if self.budget > 0 else _MARKERS
            match = events.search(text, self.pos)
            if match is None:
                break
            token, start = match.group(), match.start()
            if match.lastgroup in _MARKED:
                outcome = self._marked(match.lastgroup, start)
            elif token == _HERMES_OPEN:
                outcome = self._hermes(match.end())
            elif token == _MISTRAL:
                outcome = self._mistral(match.end())
            elif token == _PYTHON_TAG:
                outcome = self._python_tag(match.end())
            else:
                outcome = self._fragment(start)
            if isinstance(outcome, ParseFailure):
                fmt = outcome.format or "none"
                return ParseResult(text=text.strip(), failure=outcome, format=fmt)
            if outcome is not None:
                calls, end, fmt = outcome
                self._accept(start, end, calls, fmt)
        return self._finish()

    def _accept(self, start: int, end: int, calls: list[ToolCall], fmt: str) -> None:
        self.prose.append(self.text[self.prose_from : start])
        self.prose_from = self.pos = end
        if not self.calls:
            self.format = fmt
        for call in calls:
            if call.id in self.ids:  # the run loop matches results to calls by id
                call = call.model_copy(update={"id": new_call_id()})
            self.ids.add(call.id)
            self.calls.append(call)

    def _finish(self) -> ParseResult:
        if not self.calls:
            return ParseResult(text=self.text.strip())
        self.prose.append(self.text[self.prose_from :])
        prose = "\n".join(piece for piece in map(_clean_prose, self.prose) if piece)
        return ParseResult(calls=self.calls, text=prose, format=self.format)

    def _marked(self, fmt: str, start: int) -> _Found | ParseFailure:
        """A block of one of `rolepool.tools.formats`' marker formats, read by its module."""
        outcome = _MARKED[fmt].read(self.text, start, self.decoder)
        if isinstance(outcome, Broken):
            return _failure(self.text, outcome.position, outcome.message, fmt)
        return outcome.calls, max(outcome.end, start + 1), fmt

    def _pythonic(self, start: int, end: int) -> ParseResult:
        """A reply that is (or, declared, ends in) a pythonic call list."""
        outcome = pythonic.read(self.text, start, end)
        if isinstance(outcome, Broken):
            failure = _failure(self.text, outcome.position, outcome.message, pythonic.NAME)
            return ParseResult(text=self.text.strip(), failure=failure, format=pythonic.NAME)
        assert isinstance(outcome, Found)
        self._accept(start, outcome.end, outcome.calls, pythonic.NAME)
        return self._finish()

    def _fragment(self, start: int) -> _Found | ParseFailure | None:
        """Something that may open JSON outside any marker: a call only if it has a call's shape."""
        text = self.text
        try:
            decoded = self.decoder.decode_at(text, start)
        except JsonError as err:
            fmt = _attempt_format(text, start, err.position)
            if fmt is not None:
                return _failure(text, err.position, f"{err.message} in tool call", fmt)
            self.budget = 0 if err.too_deep else self.budget - 1  # deep junk: stop looking
            near = err.scanned - start <= _RESCAN_LIMIT
            self.pos = start + 1 if near or err.too_deep else max(err.position, start + 1)
            return None
        objects = call_shaped(decoded.value)
        if objects is None:
            self.budget -= 1
            self.pos = decoded.end
            return None
        fmt = "llama3" if "parameters" in objects[0] else "json"
        calls = self._build(decoded, objects, fmt, "in tool call")
        return calls if isinstance(calls, ParseFailure) else (calls, decoded.end, fmt)

    def _build(
        self, decoded: Decoded, objects: list[Any], fmt: str, where: str
    ) -> list[ToolCall] | ParseFailure:
        """Calls from decoded call objects, refusing strictness problems and wrong field types."""
        problem = find_problem(self.text, decoded)
        if problem is not None:
            return _failure(self.text, problem[0], f"{problem[1]} {where}", fmt)
        calls = []
        for obj in objects:
            call = to_call(obj, self.decoder)
            if isinstance(call, str):
                return _failure(self.text, decoded.start, f"{call} {where}", fmt)
            calls.append(call)
        return calls

    def _explicit(
        self, start: int, fmt: str, where: str, closers: tuple[str, ...]
    ) -> _Found | ParseFailure:
        """A JSON call or list of calls after a marker, where anything else is a broken attempt."""
        text = self.text
        if start >= len(text) or text[start] not in "{[":
            return _failure(text, start, f"expected a JSON tool call object {where}", fmt)
        try:
            decoded = self.decoder.decode_at(text, start, closers)
        except JsonError as err:
            return _failure(text, err.position, f"{err.message} {where}", fmt)
        objects = decoded.value if isinstance(decoded.value, list) else [decoded.value]
        if not objects:
            return _failure(text, start, f"empty list of tool calls {where}", fmt)
        calls = self._build(decoded, objects, fmt, where)
        return calls if isinstance(calls, ParseFailure) else (calls, decoded.end, fmt)

    def _hermes(self, tag_end: int) -> _Found | ParseFailure:
        """`<tool_call>{...}</tool_call>`; a missing closing tag is forgiven at the end of the text
        or right before the next block, where its intent is unambiguous."""
        text, where = self.text, "in <tool_call> block"
        parsed = self._explicit(skip_space(text, tag_end), "hermes", where, (_HERMES_CLOSE,))
        if isinstance(parsed, ParseFailure):
            return parsed
        calls, end, _ = parsed
        after = skip_space(text, end)
        if text.startswith(_HERMES_CLOSE, after):
            after += len(_HERMES_CLOSE)
        elif not (text.startswith(_HERMES_OPEN, after) or _NOISE_ONLY.fullmatch(text, after)):
            message = f"unexpected text after the JSON {where} (expected {_HERMES_CLOSE})"
            return _failure(text, after, message, "hermes")
        return calls, after, "hermes"

    def _mistral(self, tag_end: int) -> _Found | ParseFailure:
        """`[TOOL_CALLS][{...}, ...]` or `[TOOL_CALLS]name[ARGS]{...}` (one call per marker)."""
        text, where = self.text, f"after {_MISTRAL}"
        start = skip_space(text, tag_end)
        if start < len(text) and text[start] in "[{":
            return self._explicit(start, "mistral", where, (_MISTRAL,))
        named = _MISTRAL_NAMED.match(text, start)
        if named is None:
            message = f"expected a JSON list of calls or name[ARGS]{{...}} {where}"
            return _failure(text, start, message, "mistral")
        args_start = skip_space(text, named.end())
        where = f"in the [ARGS] of {named['name']!r}"
        if args_start >= len(text) or text[args_start] != "{":
            return _failure(text, args_start, f"expected a JSON object {where}", "mistral")
        try:
            decoded = self.decoder.decode_at(text, args_start, (_MISTRAL,))
        except JsonError as err:
            return _failure(text, err.position, f"{err.message} {where}", "mistral")
        problem = find_problem(text, decoded)
        if problem is not None:
            return _failure(text, problem[0], f"{problem[1]} {where}", "mistral")
        call_id = named["id"] or new_call_id()
        call = ToolCall(id=call_id, name=named["name"], arguments=decoded.value)
        return [call], decoded.end, "mistral"

    def _python_tag(self, tag_end: int) -> _Found | ParseFailure:
        """Llama 3 `<|python_tag|>` followed by one or more JSON calls separated by `;`."""
        text, where = self.text, f"after {_PYTHON_TAG}"
        calls: list[ToolCall] = []
        pos = skip_space(text, tag_end)
        while True:
            parsed = self._explicit(pos, "llama3", where, (";",))
            if isinstance(parsed, ParseFailure):
                return parsed
            calls.extend(parsed[0])
            pos = skip_space(text, parsed[1])
            if not text.startswith(";", pos):
                return calls, pos, "llama3"
            following = skip_space(text, pos + 1)
            if not text.startswith("{", following):
                return calls, pos + 1, "llama3"
            pos = following


def _attempt_format(text: str, start: int, error_at: int) -> str | None:
    """The format of broken JSON that was meant as a call, or None when it reads as prose.

    It is an attempt when it opens like a call and a call body key (`arguments`, `parameters`,
    `function`) appears before or just after the error: `{"name": "Alice", "age":` is prose."""
    if not _CALL_OPENING.match(text, start):
        return None
    body = _CALL_BODY_KEY.search(text, start, min(len(text), error_at + 64))
    if body is None:
        return None
    return "llama3" if body.group(1) == "parameters" else "json"


def _clean_prose(piece: str) -> str:
    """Prose around calls without the code fences, separators and end tokens that framed them."""
    piece = piece.strip()
    if _NOISE_ONLY.fullmatch(piece):
        return ""
    piece = _FENCE_AT_START.sub("", _FENCE_AT_END.sub("", piece))
    return piece.strip()
