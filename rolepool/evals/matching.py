"""BFCL's AST match, re-implemented from its description: does one call's arguments match one
expected call, given the tool's JSON Schema?

- every required parameter present; no parameter that is in neither the schema nor the expected
  call; a parameter the expected call lists but the call leaves out is fine only when `""` is
  among its accepted values;
- types are strict and come from the schema: a bool is not an integer, an integer is accepted
  where the schema says number, arrays must be arrays (JSON has no tuples), recursively through
  array items and object properties; where the answer key itself contradicts the schema's type
  the answer key wins, for values equal to it only (see `value_accepted`);
- strings compare after lower-casing and removing ` ,./-_*^`, with `'` equal to `"` (unless the
  case asks for exact strings);
- arrays must equal one accepted array element by element, in order; objects compare key by key,
  each key against its own accepted values (`""` = the key may be missing).
"""

from __future__ import annotations

import re
from typing import Any

from rolepool.core import ToolCall
from rolepool.evals.cases import OMITTED, ExpectedCall

_IGNORED = re.compile(r"[ ,./\-_*^]")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
    "null": (type(None),),
}


def normalise(text: str) -> str:
    """A string as BFCL compares it."""
    return _IGNORED.sub("", text.lower()).replace("'", '"')


def call_matches(
    expected: ExpectedCall,
    call: ToolCall,
    parameters: dict[str, Any] | None,
    *,
    exact_strings: bool = False,
) -> bool:
    """Whether `call` matches `expected`; `parameters` is the offered tool's JSON Schema."""
    if call.name != expected.name:
        return False
    schema = parameters or {}
    properties = schema.get("properties") or {}
    arguments = call.arguments
    if any(name not in arguments for name in schema.get("required") or []):
        return False
    for name, value in arguments.items():
        if name not in expected.arguments and (
            name not in properties or not type_ok(value, properties[name])
        ):
            return False
    for name, accepted in expected.arguments.items():
        if name not in arguments:
            if OMITTED not in accepted:
                return False
        elif not value_accepted(arguments[name], accepted, properties.get(name), exact_strings):
            return False
    return True


def type_ok(value: Any, schema: dict[str, Any] | None) -> bool:
    """`value` has the schema's type, recursively through array items and object properties.
    No type (or no schema) accepts anything; a list of types accepts any of them."""
    if not isinstance(schema, dict):
        return True
    declared = schema.get("type")
    if declared is not None:
        names = declared if isinstance(declared, list) else [declared]
        if not any(_is_type(value, name) for name in names):
            return False
    if isinstance(value, (list, tuple)) and isinstance(schema.get("items"), dict):
        return all(type_ok(item, schema["items"]) for item in value)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if not type_ok(item, sub):
                return False
    return True


def _is_type(value: Any, name: str) -> bool:
    kinds = _JSON_TYPES.get(name)
    if kinds is None:
        return True  # a type we do not know is not ours to refuse
    if isinstance(value, bool):
        return name == "boolean"
    return isinstance(value, kinds)


def value_accepted(
    value: Any, accepted: list[Any], schema: dict[str, Any] | None, exact_strings: bool
) -> bool:
    """Whether `value` has the schema's type and equals one of the accepted values (the omission
    marker included: a string argument of `""` matches it, as in BFCL).

    Where the accepted value itself breaks the schema's type, the answer key wins: BFCL writes
    variable references such as `data['sales']` as strings for array parameters, and lists of
    words for integer-array parameters. A value of the wrong type is then accepted only when it
    equals such an accepted value, so the schema's type is never loosened for other values (nor
    for `""`, which marks an omission rather than standing for a value)."""
    typed = type_ok(value, schema)
    return any(
        values_equal(value, option, schema, exact_strings)
        and (typed or (option != OMITTED and not type_ok(sample_value(option), schema)))
        for option in accepted
    )


def sample_value(option: Any) -> Any:
    """A concrete value from an accepted value: nested accepted lists (BFCL's form for objects)
    replaced by their first entry, keys whose first entry is the omission marker left out."""
    if isinstance(option, dict):
        out = {}
        for key, accepted in option.items():
            first = accepted[0] if isinstance(accepted, list) and accepted else accepted
            if first != OMITTED:
                out[key] = sample_value(first)
        return out
    if isinstance(option, list):
        return [sample_value(item) for item in option]
    return option


def values_equal(value: Any, option: Any, schema: dict[str, Any] | None, exact: bool) -> bool:
    """One value against one accepted value, recursively."""
    if isinstance(value, bool) or isinstance(option, bool):
        return isinstance(value, bool) and isinstance(option, bool) and value == option
    if isinstance(value, str):
        if not isinstance(option, str):
            return False
        return value == option if exact else normalise(value) == normalise(option)
    if isinstance(value, (int, float)):
        return isinstance(option, (int, float)) and value == option
    if isinstance(value, (list, tuple)):
        if not isinstance(option, (list, tuple)) or len(value) != len(option):
            return False
        items = schema.get("items") if isinstance(schema, dict) else None
        return all(values_equal(v, o, items, exact) for v, o in zip(value, option, strict=True))
    if isinstance(value, dict):
        return isinstance(option, dict) and _dicts_equal(value, option, schema, exact)
    return value == option


def _dicts_equal(
    value: dict[str, Any], option: dict[str, Any], schema: dict[str, Any] | None, exact: bool
) -> bool:
    """An object against an accepted object whose values are lists of accepted values (BFCL's
    nested form); a plain value there is read as the only accepted one."""
    properties = (schema or {}).get("properties") or {}
    for key, item in value.items():
        if key not in option:
            return False
        accepted = option[key] if isinstance(option[key], list) else [option[key]]
        if not value_accepted(item, accepted, properties.get(key), exact):
            return False
    for key, accepted in option.items():
        if key not in value and not (isinstance(accepted, list) and OMITTED in accepted):
            return False
    return True


def calls_match(
    expected: list[ExpectedCall],
    calls: list[ToolCall],
    schemas: dict[str, dict[str, Any]],
    *,
    exact_strings: bool = False,
) -> bool:
    """Order-free: the same number of calls, and a one-to-one pairing in which every call
    matches its expected call (found by backtracking; a greedy pairing could miss it)."""
    if len(expected) != len(calls):
        return False
    fits = [
        [
            j
            for j, call in enumerate(calls)
            if call_matches(want, call, schemas.get(want.name), exact_strings=exact_strings)
        ]
        for want in expected
    ]
    return _pairing_exists(fits, 0, set())


def _pairing_exists(fits: list[list[int]], index: int, used: set[int]) -> bool:
    if index == len(fits):
        return True
    for j in fits[index]:
        if j not in used:
            used.add(j)
            if _pairing_exists(fits, index + 1, used):
                return True
            used.discard(j)
    return False
