"""Load a suite: a built-in one by name, or a JSON Lines file of our own format.

One case per line, validated with pydantic; a malformed line raises `SuiteError` naming
`FILE:LINE` and the problem. Fields:

- `id` (unique in the file), `category`, optional `role`;
- `messages` (chat messages, OpenAI-shaped tool calls accepted), or `prompt` (one user message)
  with an optional `system`;
- `tools`: each a built-in tool name (`run_python`, `search_docs`, ...; see
  `rolepool.zoo.toolset`) or a raw function schema `{"name", "description", "parameters"}` (the
  OpenAI `{"type": "function", "function": {...}}` wrapper too) whose `parameters` is a JSON
  Schema object;
- `expected`: a list of `{"name", "arguments": {param: [accepted values]}}`, `""` among the values
  meaning the parameter may be left out, a list-valued argument written as a list in the list;
  `[]` or `"no call"` when the right answer is not to call a tool;
- optional `string_match` ("normalised", BFCL's rule, the default; or "exact") and
  `answer_contains` (for no-call cases: text the answer must contain).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from rolepool.core import ToolSpec, UserError
from rolepool.evals.bfcl import (
    CATEGORIES,
    GROUPS,
    MULTI_TURN_CATEGORIES,
    checked_tool,
    load_bfcl,
)
from rolepool.evals.bfcl.multi_turn import load_multi_turn
from rolepool.evals.cases import Case, ExpectedCall, Suite, messages_from_openai
from rolepool.evals.errors import SuiteError
from rolepool.evals.roles import roles_cases
from rolepool.zoo.toolset import ROLE_TOOLS, tool_spec

__all__ = ["SUITES", "SuiteError", "expand_suites", "load_suite", "load_suite_file"]

SUITES: tuple[str, ...] = ("roles", *CATEGORIES, *MULTI_TURN_CATEGORIES, *GROUPS)
"""The built-in suites and suite groups; `bfcl*` need BFCL's data (the bfcl-eval package or a
directory)."""
NO_CALL = "no call"
BUILTIN_TOOLS: tuple[str, ...] = tuple(dict.fromkeys(n for ns in ROLE_TOOLS.values() for n in ns))


class _Line(BaseModel):
    """One line of a suite file, before its tools are resolved."""

    model_config = ConfigDict(extra="forbid")

    id: str
    category: str
    role: str | None = None
    messages: list[Any] | None = None
    prompt: str | None = None
    system: str | None = None
    tools: list[str | dict[str, Any]] = []
    expected: list[ExpectedCall] | Literal["no call"]
    string_match: Literal["normalised", "exact"] = "normalised"
    answer_contains: str | None = None


def load_suite(spec: str, *, bfcl_dir: Path | str | None = None, limit: int | None = None) -> Suite:
    """A built-in suite by name (`SUITES`) or a suite file by path; `limit` keeps the first
    cases (for `roles`, an even share of both held-out splits)."""
    if limit is not None and limit < 1:
        raise UserError(f"limit must be at least 1, got {limit}")
    if spec == "roles":
        return Suite(name="roles", cases=roles_cases(limit))
    if spec in CATEGORIES:
        return Suite(name=spec, cases=load_bfcl(spec, bfcl_dir, limit))
    if spec in MULTI_TURN_CATEGORIES:
        return Suite(name=spec, cases=load_multi_turn(spec, bfcl_dir, limit))
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(SUITES)
        raise UserError(f"unknown suite {spec!r}: not a built-in suite ({known}) nor a file")
    cases = load_suite_file(path)
    return Suite(name=path.stem, cases=cases if limit is None else cases[:limit])


def expand_suites(specs: list[str]) -> list[str]:
    """Suite names with each group (`bfcl`, `bfcl-live`, ...) replaced by its suites, in order,
    each suite once."""
    return list(dict.fromkeys(name for spec in specs for name in GROUPS.get(spec, (spec,))))


def load_suite_file(path: Path | str) -> list[Case]:
    """Every case of a suite file, checked line by line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: JSON may hold U+2028
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read suite file {str(path)!r}: {exc}") from None
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        case = parse_case_line(line, where, suite=path.stem)
        if case.id in seen:
            raise SuiteError(where, f"duplicate id {case.id!r} (first on line {seen[case.id]})")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise SuiteError(f"{path}:1", "the suite has no cases")
    return cases


def parse_case_line(line: str, where: str, *, suite: str) -> Case:
    """One suite line as a `Case`, or `SuiteError` saying what is wrong at `where`."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SuiteError(where, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise SuiteError(where, f"expected a JSON object, got {type(raw).__name__}")
    try:
        parsed = _Line.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(where, _pydantic_problem(exc)) from None
    tools = [_resolve_tool(t, f"{where}: tools[{i}]") for i, t in enumerate(parsed.tools)]
    names = [t.name for t in tools]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise SuiteError(where, f"tools: {duplicate!r} is offered twice")
    expected = [] if parsed.expected == NO_CALL else list(parsed.expected)
    _check_expected(expected, tools, where)
    try:
        return Case(
            id=parsed.id,
            suite=suite,
            role=parsed.role,
            category=parsed.category,
            messages=_messages(parsed, where),
            tools=tools,
            expected=expected,
            string_match=parsed.string_match,
            answer_contains=parsed.answer_contains,
        )
    except ValidationError as exc:
        raise SuiteError(where, _pydantic_problem(exc)) from None


def _messages(line: _Line, where: str) -> list[Any]:
    if (line.messages is None) == (line.prompt is None):
        raise SuiteError(where, 'give either "messages" or "prompt", not both or neither')
    if line.prompt is not None:
        system = [{"role": "system", "content": line.system}] if line.system is not None else []
        return messages_from_openai([*system, {"role": "user", "content": line.prompt}])
    if line.system is not None:
        raise SuiteError(where, '"system" goes with "prompt"; put it in "messages" instead')
    messages = []
    for index, message in enumerate(line.messages or []):
        try:
            messages.extend(messages_from_openai([message]))
        except ValidationError as exc:
            raise SuiteError(where, _pydantic_problem(exc, f"messages.{index}")) from None
        except ValueError as exc:
            raise SuiteError(where, f"messages.{index}: {exc}") from None
    if not messages:
        raise SuiteError(where, '"messages" is empty')
    if messages[-1].role == "assistant":
        raise SuiteError(
            where,
            "messages end with an assistant turn; the scored turn is the "
            "next assistant turn, so leave it out",
        )
    return messages


def _resolve_tool(tool: str | dict[str, Any], where: str) -> ToolSpec:
    """A built-in tool by name, or a raw function schema checked like `@tool` checks one."""
    if isinstance(tool, str):
        if tool not in BUILTIN_TOOLS:
            raise SuiteError(
                where, f"unknown built-in tool {tool!r} (known: {', '.join(BUILTIN_TOOLS)})"
            )
        spec = tool_spec(tool)
        return ToolSpec(name=spec.name, description=spec.description, parameters=spec.parameters)
    function = tool.get("function") if tool.get("type") == "function" else tool
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise SuiteError(where, 'a tool needs a string "name" (or a built-in tool name)')
    unknown = sorted(function.keys() - {"name", "description", "parameters", "strict"})
    if unknown:
        raise SuiteError(
            where, f"unknown key {unknown[0]!r} in a tool (name, description, parameters)"
        )
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    description = function.get("description", "")
    if not isinstance(description, str):
        raise SuiteError(where, '"description" must be a string')
    return checked_tool(function["name"], description, parameters, where)


def _check_expected(expected: list[ExpectedCall], tools: list[ToolSpec], where: str) -> None:
    """Expected calls must be answerable: an offered tool, and arguments its schema can take."""
    offered = {t.name: t.parameters for t in tools}
    for index, call in enumerate(expected):
        at = f"expected[{index}]"
        if call.name not in offered:
            names = ", ".join(offered) or "no tools are offered"
            raise SuiteError(where, f"{at}: {call.name!r} is not an offered tool ({names})")
        schema = offered[call.name]
        properties = schema.get("properties") or {}
        closed = schema.get("additionalProperties") is False
        for name, accepted in call.arguments.items():
            if closed and name not in properties:
                raise SuiteError(where, f"{at}.arguments: {call.name} has no parameter {name!r}")
            if not accepted:
                raise SuiteError(where, f"{at}.arguments.{name}: no accepted value")
        missing = [n for n in schema.get("required") or [] if n not in call.arguments]
        if missing:
            raise SuiteError(where, f"{at}.arguments: required parameter {missing[0]!r} missing")


def _pydantic_problem(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's first error as `field.path: message`, the path under `prefix`."""
    error = exc.errors()[0]
    path = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{path}: {error['msg']}{more}" if path else f"{error['msg']}{more}"
