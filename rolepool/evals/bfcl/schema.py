"""BFCL function docs as the tools a model is offered: BFCL's parameter types (Python names:
`dict`, `float`, `tuple`, `any`) become JSON Schema once, recursively, for every place a schema can
nest, because the run loop validates against JSON Schema.

Java and JavaScript functions are offered as BFCL offers them: every parameter a string of source
text, its language type said in words in the description (`java_js_offered`), because BFCL's
checker reads those values as source text (`source_values`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import ValidationError

from rolepool.core import ConfigError, ToolSpec
from rolepool.evals.errors import SuiteError
from rolepool.tools.tool import Tool

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
        if not tool_accepted(name, description, parameters):
            Tool.from_schema(name, description, parameters)
            _ACCEPTED.add(_tool_key(name, description, parameters))
        return ToolSpec(name=name, description=description, parameters=parameters)
    except (ConfigError, ValidationError) as exc:
        raise SuiteError(where, str(exc)) from None


_ACCEPTED: set[str | None] = set()


def tool_accepted(name: str, description: str, parameters: Any) -> bool:
    """Whether this exact tool was built once already: it is not checked again (BFCL's live
    categories offer the same docs over and over, and checking a schema against the metaschema
    costs milliseconds)."""
    key = _tool_key(name, description, parameters)
    return key is not None and key in _ACCEPTED


def _tool_key(name: str, description: str, parameters: Any) -> str | None:
    try:
        return json.dumps([name, description, parameters], sort_keys=True)
    except (TypeError, ValueError):
        return None


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


_HINTS = {
    "java": " Note that the provided function is in Java 8 SDK syntax.",
    "javascript": " Note that the provided function is in JavaScript syntax.",
}
_NAMES = {"java": "Java", "javascript": "JavaScript"}


def java_js_offered(function: dict[str, Any], language: str) -> dict[str, Any]:
    """A Java or JavaScript function doc as BFCL shows it to a model: the language named in the
    description, every parameter a string whose description names its type (array items and
    object entries described in words, not as schema)."""
    out = copy.deepcopy(function)
    out["description"] = str(out.get("description", "")) + _HINTS[language]
    name = _NAMES[language]
    for detail in (out.get("parameters") or {}).get("properties", {}).values():
        kind = detail.get("type")
        note = str(detail.get("description", ""))
        if kind == "any":
            note += f" This parameter can be of any type of {name} object in string representation."
        else:
            note += f" This is {name} {kind} type parameter in string representation."
        if kind in (("ArrayList", "Array") if language == "java" else ("array",)):
            items = (detail.pop("items", None) or {}).get("type")
            note += (
                f" The list elements are of type {items}; they are not in string representation."
            )
        if language == "javascript" and kind == "dict" and "properties" in detail:
            entries = json.dumps(detail.pop("properties"))
            note += (
                " The dictionary entries have the following schema; they are not in string "
                f"representation. {entries}"
            )
        detail["description"] = note
        detail["type"] = "string"
    return out
