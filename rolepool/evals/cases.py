"""The value types of an eval: a `Case` (a conversation, the tools offered, the calls expected of
the next assistant turn) and a `Prediction` (what a model did on that turn, attempt by attempt).

Expected arguments list their *accepted values*, the way BFCL's possible answers do, because many
requests have more than one right answer (`"units"` or the default; `5` or `5.0`). The empty
string `""` in an argument's list means the argument may be left out; a list-valued argument is a
list inside the list (`{"xs": [[1, 2]]}` accepts exactly `xs=[1, 2]`). An object-valued argument
is written the same way one level down: `{"opts": [{"k": [1, ""]}]}`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rolepool.core import Message, ToolCall, ToolSpec

OMITTED = ""
"""In an accepted-values list: the argument may be left out."""


class ExpectedCall(BaseModel):
    """One call the next turn should make: its name and, per argument, the accepted values."""

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, list[Any]] = Field(default_factory=dict)


class BfclKey(BaseModel):
    """What BFCL's own checker reads besides the expected calls: the category (it picks the
    checker), the language of the functions (Java and JavaScript values are source text that the
    checker converts) and the function docs as BFCL ships them, before the model-facing schemas
    were made from them (those lose BFCL's own types: `float` vs `integer`, Java's `long`)."""

    category: str
    language: Literal["python", "java", "javascript"] = "python"
    functions: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def kind(self) -> Literal["ast", "irrelevance", "relevance"]:
        """How BFCL decides: by matching calls, by the absence of a call, by the presence of one."""
        if "irrelevance" in self.category:
            return "irrelevance"
        return "relevance" if "relevance" in self.category else "ast"


class MultiTurnKey(BaseModel):
    """A BFCL multi-turn case (`rolepool.evals.bfcl.multi_turn`): the user turns, the backends'
    initial state, the function docs offered from the start and those held out until a turn, and
    the ground truth, per turn, as BFCL writes it (calls in Python syntax)."""

    category: str
    turns: list[list[Message]]
    initial_config: dict[str, Any] = Field(default_factory=dict)
    involved_classes: list[str] = Field(default_factory=list)
    functions: list[dict[str, Any]] = Field(default_factory=list)
    missed_functions: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    ground_truth: list[list[str]] = Field(default_factory=list)

    @property
    def long(self) -> bool:
        """The long-context category loads its backends with BFCL's extra long state."""
        return "long_context" in self.category


class Case(BaseModel):
    """One scored turn. `messages` is the conversation up to it, exactly as the model sees it
    (system prompt included); `tools` are the function schemas offered (name, description, JSON
    Schema of the arguments), in the order they are offered; `expected` is the set
    of calls the next assistant turn must make, in any order; empty means no call is expected."""

    id: str
    suite: str
    role: str | None = None
    category: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    expected: list[ExpectedCall] = Field(default_factory=list)
    string_match: Literal["normalised", "exact"] = "normalised"
    """"normalised" compares strings as BFCL does (case and the characters ` ,./-_*^` ignored,
    `'` equals `"`); "exact" compares them as they are (the zoo's own scoring)."""
    answer_contains: str | None = None
    """For a case that expects no call: text the final answer must contain to be `exact` (a
    refusal names the role that owns the tool). None: any answer without a call is right."""
    bfcl: BfclKey | None = None
    """Set on BFCL cases: `exact` is then BFCL's own checker verdict (`rolepool.evals.bfcl`)."""
    multi_turn: MultiTurnKey | None = None
    """Set on BFCL multi-turn cases, which run turn by turn against BFCL's backends."""

    @property
    def expects_call(self) -> bool:
        """Some call is expected: the expected ones, or (BFCL's relevance cases) any call."""
        return bool(self.expected) or (self.bfcl is not None and self.bfcl.kind == "relevance")

    def tool(self, name: str) -> ToolSpec | None:
        """The offered tool called `name`, or None."""
        return next((t for t in self.tools if t.name == name), None)


class Attempt(BaseModel):
    """One model output for the scored turn, as the run loop saw it."""

    text: str = ""
    """The raw completion text."""
    calls: list[ToolCall] = Field(default_factory=list)
    """The calls parsed from it (or given natively by the worker)."""
    parse_error: str | None = None
    """Why the text could not be parsed; `calls` is empty then."""
    invalid: list[str] = Field(default_factory=list)
    """Validation problems of the calls (unknown tool, arguments breaking the schema); empty when
    every call is valid."""


class Prediction(BaseModel):
    """What a model did on a case's turn: the first attempt, then one more per retry the run loop
    granted after an unparseable or invalid attempt; the last is the final answer for that turn.
    `error` is set when the run ended without an answer (worker failure, retry budget spent)."""

    attempts: list[Attempt] = Field(default_factory=list)
    error: str | None = None

    @property
    def first(self) -> Attempt | None:
        return self.attempts[0] if self.attempts else None

    @property
    def final(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


class Suite(BaseModel):
    """A named list of cases with unique ids."""

    name: str
    cases: list[Case]


def messages_from_openai(messages: list[Any]) -> list[Message]:
    """Chat messages as `Message`s, also in the OpenAI shape where an assistant's tool calls are
    `{"id", "type", "function": {"name", "arguments"}}` with arguments a dict or a JSON string.
    `"content": null` reads as empty. Raises `ValueError` (pydantic's `ValidationError`
    included) on anything else."""
    return [Message.model_validate(_flat_calls(m)) for m in messages]


def _flat_calls(message: Any) -> Any:
    """OpenAI histories write `"content": null` beside tool calls and may carry the call type."""
    if not isinstance(message, dict):
        return message
    if "content" in message and message["content"] is None:
        message = {**message, "content": ""}
    if not isinstance(message.get("tool_calls"), list):
        return message
    return {**message, "tool_calls": [_flat_call(c) for c in message["tool_calls"]]}


def _flat_call(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = call["function"]
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool call arguments are not JSON ({exc.msg})") from None
    flat = {"name": function.get("name"), "arguments": arguments}
    if "id" in call:
        flat["id"] = call["id"]
    return flat
