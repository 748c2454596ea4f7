"""BFCL v4 single-turn categories as suites: read a BFCL data directory, turn BFCL's parameter
types into JSON Schema, and its possible answers into expected calls.

BFCL files are JSON Lines: test entries `{"id", "question", "function"}` and, under
`possible_answer/`, `{"id", "ground_truth": [{name: {param: [accepted values]}}]}` whose accepted
values already use our `ExpectedCall` convention (`""` = may be omitted). BFCL's types are Python
names (`dict`, `float`, `tuple`, `any`); the run loop validates against JSON Schema, so they are
converted here once, recursively, for every place a schema can nest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rolepool.core import ConfigError, Message, ToolSpec, UserError
from rolepool.evals.cases import Case, ExpectedCall
from rolepool.evals.errors import SuiteError
from rolepool.tools.tool import Tool

BFCL_ENV = "ROLEPOOL_BFCL_DIR"
CATEGORIES: dict[str, str] = {
    "bfcl-simple": "simple_python",
    "bfcl-multiple": "multiple",
    "bfcl-parallel": "parallel",
    "bfcl-parallel-multiple": "parallel_multiple",
    "bfcl-irrelevance": "irrelevance",
}
"""Suite name -> BFCL category (the file is `BFCL_v4_<category>.json`)."""

# BFCL type -> JSON Schema type. `tuple` is an array (JSON has no tuples); `any` is a string, as
# BFCL's own checker treats it. JSON Schema names are accepted as they are.
_TYPES: dict[str, str] = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "number": "number",
    "double": "number",
    "integer": "integer",
    "int": "integer",
    "string": "string",
    "str": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "any": "string",
    "null": "null",
}
_SCHEMA_VALUED = ("items", "additionalProperties", "not")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_DROPPED = ("optional",)  # BFCL's marker; JSON Schema says it with `required`


def find_bfcl_dir(bfcl_dir: Path | str | None) -> Path:
    """The BFCL data directory from the argument or `$ROLEPOOL_BFCL_DIR`, checked to exist."""
    source = "--bfcl-dir"
    if bfcl_dir is None:
        env = os.environ.get(BFCL_ENV)
        if not env:
            raise UserError(
                "BFCL suites need the BFCL data directory (the folder holding "
                "BFCL_v4_simple_python.json and possible_answer/): pass --bfcl-dir DIR "
                f"(bfcl_dir= in Python) or set {BFCL_ENV}"
            )
        bfcl_dir, source = env, f"${BFCL_ENV}"
    path = Path(bfcl_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"{source}: BFCL data directory {str(path)!r} does not exist")
    return path


def load_bfcl(suite: str, bfcl_dir: Path | str | None, limit: int | None = None) -> list[Case]:
    """The cases of one BFCL category (`suite` is a key of `CATEGORIES`), in file order."""
    category = CATEGORIES[suite]
    root = find_bfcl_dir(bfcl_dir)
    questions = root / f"BFCL_v4_{category}.json"
    if not questions.is_file():
        raise UserError(f"{suite}: {questions} not found (is {root} a BFCL v4 data directory?)")
    answers: dict[str, tuple[Any, str]] = {}
    if category != "irrelevance":
        answer_file = root / "possible_answer" / questions.name
        if not answer_file.is_file():
            raise UserError(f"{suite}: possible answers {answer_file} not found")
        answers = _read_answers(answer_file)
    cases = []
    for where, entry in _json_lines(questions):
        if limit is not None and len(cases) >= limit:
            break
        cases.append(_case(suite, category, entry, answers, where))
    return cases


def _json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every entry of a BFCL file with its `FILE:LINE`; ids must be unique."""
    out = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SuiteError(where, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(value, dict) or not isinstance(value.get("id"), str):
                raise SuiteError(where, 'expected a JSON object with a string "id"')
            if value["id"] in seen:
                first = seen[value["id"]]
                raise SuiteError(where, f"duplicate id {value['id']!r} (first on line {first})")
            seen[value["id"]] = number
            out.append((where, value))
    return out


def _read_answers(path: Path) -> dict[str, tuple[Any, str]]:
    answers: dict[str, tuple[Any, str]] = {}
    for where, entry in _json_lines(path):
        if "ground_truth" not in entry:
            raise SuiteError(where, 'missing "ground_truth"')
        answers[entry["id"]] = (entry["ground_truth"], where)
    return answers


def _case(
    suite: str,
    category: str,
    entry: dict[str, Any],
    answers: dict[str, tuple[Any, str]],
    where: str,
) -> Case:
    case_id = entry["id"]
    turns = entry.get("question")
    if not isinstance(turns, list) or len(turns) != 1 or not isinstance(turns[0], list):
        raise SuiteError(where, '"question" must hold exactly one turn (a list of messages)')
    functions = entry.get("function")
    if not isinstance(functions, list) or not functions:
        raise SuiteError(where, '"function" must be a non-empty list of function definitions')
    tools = [convert_function(f, f"{where}: function[{i}]") for i, f in enumerate(functions)]
    expected: list[ExpectedCall] = []
    if category != "irrelevance":
        if case_id not in answers:
            raise SuiteError(where, f"no possible answer for id {case_id!r}")
        truth, answer_where = answers[case_id]
        expected = expected_calls(truth, answer_where)
        offered = {t.name for t in tools}
        for call in expected:
            if call.name not in offered:
                raise SuiteError(answer_where, f"ground truth calls {call.name!r}, not offered")
    try:
        return Case(
            id=case_id,
            suite=suite,
            role=None,
            category=category,
            messages=[Message(role=m["role"], content=m["content"]) for m in turns[0]],
            tools=tools,
            expected=expected,
        )
    except (ValidationError, KeyError, TypeError) as exc:
        raise SuiteError(where, f"bad question messages: {exc}") from None


def expected_calls(truth: Any, where: str) -> list[ExpectedCall]:
    """BFCL's `ground_truth` (a list of `{name: {param: [accepted...]}}`) as expected calls."""
    if not isinstance(truth, list):
        raise SuiteError(where, '"ground_truth" must be a list of {name: {param: [values]}}')
    calls = []
    for index, item in enumerate(truth):
        if not isinstance(item, dict) or len(item) != 1:
            raise SuiteError(where, f"ground_truth[{index}] must be one {{name: arguments}} object")
        ((name, arguments),) = item.items()
        if not isinstance(arguments, dict) or not all(
            isinstance(v, list) for v in arguments.values()
        ):
            raise SuiteError(
                where, f"ground_truth[{index}] ({name}): each parameter needs a list of values"
            )
        calls.append(ExpectedCall(name=name, arguments=arguments))
    return calls


def convert_function(function: Any, where: str) -> ToolSpec:
    """A BFCL function definition as a `ToolSpec` (its parameters as JSON Schema)."""
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise SuiteError(where, 'a function needs a string "name"')
    parameters = function.get("parameters") or {"type": "dict", "properties": {}}
    schema = to_json_schema(parameters, where)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return checked_tool(function["name"], str(function.get("description", "")), schema, where)


def checked_tool(name: str, description: str, parameters: Any, where: str) -> ToolSpec:
    """A case's tool, refused here (at `where`) for anything the run loop's `Tool` would refuse
    later: a bad name, a broken JSON Schema."""
    try:
        Tool.from_schema(name, description, parameters)
        return ToolSpec(name=name, description=description, parameters=parameters)
    except (ConfigError, ValidationError) as exc:
        raise SuiteError(where, str(exc)) from None


def to_json_schema(node: Any, where: str) -> dict[str, Any]:
    """One BFCL parameter schema, and everything nested in it, as JSON Schema."""
    if not isinstance(node, dict):
        raise SuiteError(where, f"a parameter schema must be an object, got {node!r}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "type":
            out["type"] = _convert_type(value, where)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {n: to_json_schema(s, f"{where}.{n}") for n, s in value.items()}
        elif key in _SCHEMA_VALUED and isinstance(value, dict):
            out[key] = to_json_schema(value, f"{where}.{key}")
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [to_json_schema(s, f"{where}.{key}[{i}]") for i, s in enumerate(value)]
        else:
            out[key] = value
    if isinstance(out.get("required"), list) and isinstance(out.get("properties"), dict):
        optional = {n for n, s in node.get("properties", {}).items() if _is_optional(s)}
        out["required"] = [n for n in out["required"] if n not in optional]
    return out


def _is_optional(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("optional") is True


def _convert_type(value: Any, where: str) -> str | list[str]:
    if isinstance(value, list):
        converted = [_convert_type(v, where) for v in value]
        return sorted({t for t in converted if isinstance(t, str)})
    if not isinstance(value, str) or value.lower() not in _TYPES:
        known = ", ".join(sorted(_TYPES))
        raise SuiteError(where, f"unknown BFCL parameter type {value!r} (known: {known})")
    return _TYPES[value.lower()]
