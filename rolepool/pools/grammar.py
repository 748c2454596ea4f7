"""Schema-constrained decoding, the grammar side: a request's `Decoding` and tools become a
compiled grammar (llguidance) that the decode engine's rows copy.

Why llguidance and not xgrammar is in docs/design-notes.md ("Constrained decoding"): both mask a
token in microseconds here, llguidance installs without dependencies and bounds every grammar
(`LLParserLimits`: grammar size, lexer states, work per token), so a huge or deeply recursive
schema is an error, not a hang.

What each mode's grammar is, for a worker whose model writes calls as `open call close` (Hermes
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; `CallFormat` says which):
- `required`: one or more calls, nothing else; `named`: exactly one call to that tool;
- `auto`: lazy. The row decodes freely until the model writes the format's opening token; then
  one call and its closing token are held to the grammar, and the row is free again (so a reply
  may hold several calls). The opening must be one token: a format without one (bare JSON)
  cannot trigger, and `auto` is refused there rather than silently left free;
- `json_schema` / `json_object`: the whole reply is one JSON value of that schema / an object.
A call is `{"name": <one of the tools>, "arguments": <that tool's schema>}` with the separators
the shipped models were trained on (`", "`, `": "`), keys in that order.

Grammars are compiled once per (tokenizer, mode, tools) and kept (`GrammarCompiler`); a row gets
a copy of the compiled matcher (`Grammar.matcher`, microseconds). A schema the engine cannot
compile is a `GrammarError` naming the tool and the engine's reason (the construct).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.hf
import torch

from rolepool.core import Decoding, ToolSpec, UserError

__all__ = [
    "BARE_JSON",
    "CALL_FORMATS",
    "HERMES",
    "CallFormat",
    "Grammar",
    "GrammarCompiler",
    "GrammarError",
    "call_format_of",
]

MAX_SCHEMA_CHARS = 200_000
"""A tool schema longer than this (as JSON) is refused before compiling."""
MAX_SCHEMA_DEPTH = 64
"""Nesting deeper than this (objects and lists in the schema itself) is refused before compiling;
recursion through `$ref` is bounded by the engine's limits instead."""
CACHE_SIZE = 256
"""Compiled grammars kept per compiler (least recently used leave first)."""
SEPARATORS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How the shipped models (and `json.dumps`) write JSON: no free whitespace, so a constrained
reply reads like a free one."""


class GrammarError(UserError):
    """A request's schema or mode cannot be turned into a grammar (names the tool and why).
    A `UserError`: the request is at fault, not the worker."""


@dataclass(frozen=True)
class CallFormat:
    """How a model writes a tool call: the text before and after the call's JSON (empty for
    bare JSON)."""

    name: str
    open: str = ""
    close: str = ""


HERMES = CallFormat("hermes", "<tool_call>", "</tool_call>")
BARE_JSON = CallFormat("json")
CALL_FORMATS = {"hermes": HERMES, "json": BARE_JSON}
"""The tool-call formats (`rolepool.tools.formats` names) a grammar is built for: JSON calls,
bare or in Hermes tags. The others (pythonic, XML, harmony, ...) have none yet."""


def call_format_of(tokenizer: Any) -> CallFormat:
    """The format a chat model writes calls in, from its chat template and vocabulary: Hermes
    when `<tool_call>` is one of its tokens and its template uses it, else bare JSON."""
    template = str(getattr(tokenizer, "chat_template", "") or "")
    vocab = tokenizer.get_vocab()
    if HERMES.open in template and HERMES.open in vocab and HERMES.close in vocab:
        return HERMES
    return BARE_JSON


@dataclass(frozen=True)
class Grammar:
    """A compiled grammar: a matcher in its start state that rows copy. `trigger` is the token
    that starts it in a lazy (`auto`) grammar, None when it holds the reply from its start."""

    key: str
    template: llguidance.LLMatcher
    vocab: int
    """The tokenizer's vocabulary size: a mask has a bit for each token."""
    closers: torch.Tensor
    """(2, vocab): tokens that start with a quote, and tokens that start with a closing bracket
    or are the call's closing tag or end of sequence. A row about to run out of tokens prefers
    these among those its mask allows, so its call is closed before max_tokens cuts it
    (`rolepool.pools.constrained`)."""
    trigger: int | None = None

    def matcher(self) -> llguidance.LLMatcher:
        return self.template.deep_copy()


class GrammarCompiler:
    """Compiles and keeps the grammars of one tokenizer. Thread-safe; compiling is CPU work of
    milliseconds to a second, so callers run it off the event loop."""

    def __init__(self, tokenizer: Any, eos: list[int], call_format: CallFormat) -> None:
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=eos)
        self.call_format = call_format
        self._token_ids = tokenizer.get_vocab()
        self._fingerprint = _fingerprint(tokenizer, eos, call_format)
        self._closers = _closers(tokenizer, eos, call_format)
        self._cache: OrderedDict[str, Grammar] = OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0
        """How many grammars were compiled (cache misses), for tests and benchmarks."""

    def key(self, decoding: Decoding, tools: list[ToolSpec]) -> str:
        """The cache key: a hash of the tokenizer, the call format, the mode and the schemas."""
        asked = {
            "mode": decoding.mode,
            "tool": decoding.tool,
            "schema": decoding.json_schema,
            "tools": [[t.name, t.parameters] for t in tools],
        }
        text = self._fingerprint + json.dumps(asked, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def grammar(self, decoding: Decoding, tools: list[ToolSpec]) -> Grammar | None:
        """The grammar for `decoding` over `tools`, compiled once; None for free decoding."""
        if decoding.mode == "free":
            return None
        key = self.key(decoding, tools)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        grammar = self._compile(key, decoding, tools)
        with self._lock:
            self._cache[key] = grammar
            self.compiled += 1
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return grammar

    # -- building -----------------------------------------------------------------------------

    def _compile(self, key: str, decoding: Decoding, tools: list[ToolSpec]) -> Grammar:
        mode = decoding.mode
        if mode in ("json_schema", "json_object"):
            schema = decoding.json_schema if mode == "json_schema" else {"type": "object"}
            _check_size("response_format", schema)
            lark = f"start: %json {_json_directive(schema)}\n"
            matcher = self._matcher(lark, "response_format's schema")
            return Grammar(key, matcher, self.tokenizer.vocab_size, self._closers)
        offered = [t for t in tools if mode != "named" or t.name == decoding.tool]
        if not offered:
            wanted = f"the tool {decoding.tool!r}" if mode == "named" else "tools"
            raise GrammarError(f"cannot constrain decoding: mode {mode!r} needs {wanted}")
        for tool in offered:
            _check_size(f"tool {tool.name!r}", tool.parameters)
        call = f"call: %json {_json_directive(_calls_schema(offered))}\n"
        fmt = self.call_format
        if mode == "auto":
            trigger = self._token_id(fmt.open)
            if trigger is None:
                raise GrammarError(
                    f"cannot constrain decoding: mode 'auto' needs a call format with a one-token "
                    f"opening, and this model's ({fmt.name}) has none; use 'required' or 'named'"
                )
            lark = f"start: call {self._literal(fmt.close)}\n{call}"
            matcher = self._compile_calls(lark, offered)
            return Grammar(key, matcher, self.tokenizer.vocab_size, self._closers, trigger)
        block = f"{self._literal(fmt.open)} call {self._literal(fmt.close)}".strip()
        repeat = "+" if mode == "required" and fmt.open else ""
        lark = f"start: block{repeat}\nblock: {block}\n{call}"
        matcher = self._compile_calls(lark, offered)
        return Grammar(key, matcher, self.tokenizer.vocab_size, self._closers)

    def _compile_calls(self, lark: str, offered: list[ToolSpec]) -> llguidance.LLMatcher:
        """A matcher for a grammar over `offered`; when it fails, the tool whose schema failed
        is found by compiling each alone, so the error can name it."""
        try:
            return self._matcher(lark, "the tools' schemas")
        except GrammarError:
            for tool in offered:
                self._matcher(f"start: %json {_json_directive(tool.parameters)}\n", tool.name)
            raise

    def _matcher(self, lark: str, what: str) -> llguidance.LLMatcher:
        try:
            matcher = llguidance.LLMatcher(self.tokenizer, lark)
        except (ValueError, TypeError) as exc:  # the engine raises for some grammars
            error = str(exc)
        else:
            if not matcher.is_error():
                return matcher
            error = matcher.get_error()
        subject = what if " " in what else f"tool {what!r}"
        reason = error.strip().splitlines()[0][:300] if error.strip() else "unknown reason"
        raise GrammarError(f"cannot constrain decoding: {subject}: {reason}")

    def _token_id(self, text: str) -> int | None:
        return self._token_ids.get(text) if text else None

    def _literal(self, text: str) -> str:
        """`text` in Lark: its token when the vocabulary has it as one, else a quoted string."""
        if not text:
            return ""
        token = self._token_id(text)
        return f"<[{token}]>" if token is not None else json.dumps(text)


def _calls_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    """One call to one of `tools`: `{"name": ..., "arguments": ...}`, in that order."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _json_directive(schema: dict[str, Any]) -> str:
    """The schema as Lark's `%json` argument, with the shipped models' separators."""
    return json.dumps({**schema, "x-guidance": SEPARATORS})


def _check_size(subject: str, schema: Any) -> None:
    """Refuse a schema too long or too deeply nested to compile in bounded time."""
    if not isinstance(schema, dict):
        raise GrammarError(f"cannot constrain decoding: {subject}: the schema is not an object")
    if len(json.dumps(schema, default=str)) > MAX_SCHEMA_CHARS:
        raise GrammarError(
            f"cannot constrain decoding: {subject}: the schema is longer than "
            f"{MAX_SCHEMA_CHARS} characters"
        )
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise GrammarError(
            f"cannot constrain decoding: {subject}: the schema nests deeper than "
            f"{MAX_SCHEMA_DEPTH} levels"
        )


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion (a hostile schema cannot overflow)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_SCHEMA_DEPTH:
            return deepest
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _fingerprint(tokenizer: Any, eos: list[int], call_format: CallFormat) -> str:
    """A hash of what the grammar depends on besides the request: the vocabulary, the
    end-of-sequence ids and the call format."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    text = json.dumps([vocab, eos, call_format.name, call_format.open, call_format.close])
    return hashlib.sha256(text.encode()).hexdigest()


def _closers(tokenizer: Any, eos: list[int], call_format: CallFormat) -> torch.Tensor:
    """Tokens that close a JSON string (row 0) or a container, the call or the reply (row 1),
    by the text they start with (see `Grammar.closers`)."""
    vocab = tokenizer.get_vocab()
    closers = torch.zeros((2, max(len(tokenizer), max(vocab.values()) + 1)), dtype=torch.bool)
    for token in range(closers.shape[1]):
        text = tokenizer.decode([token])
        closers[0, token] = text.startswith('"')
        closers[1, token] = text.startswith(("}", "]"))
    for token in [*eos, vocab.get(call_format.close)]:
        if token is not None:
            closers[1, token] = True
    return closers
