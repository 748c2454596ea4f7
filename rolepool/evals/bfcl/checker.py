"""BFCL's single-turn verdict, rule for rule, so that rolepool's `exact` on a BFCL case is the
number BFCL's own checker gives for the same output (`tests/test_bfcl_oracle.py` holds the two
together on every case of every category and on thousands of perturbed outputs).

Written from BFCL's checker's behaviour, including the rules where rolepool's own matching
(`rolepool.evals.matching`, still used by our suites) is arguably better; those are kept here on
purpose, because a leaderboard number must be the leaderboard's:
- parallel calls are paired greedily, each expected call taking the first output call that
  matches it; a pairing that exists but needs another order is missed (rolepool backtracks);
- types come from BFCL's type names, not JSON Schema: an `integer` is never a float, a `float`
  takes an int, `tuple` is a list; nested types are checked one level deep only;
- where the answer key's value has another type than the declared one (a variable such as
  `data['sales']` for an array) an output of the key's type is compared as it is, without string
  normalisation;
- values are compared with Python's `==`, so `1 == 1.0 == True` inside lists and objects;
- strings compare after lower-casing and removing ` ,./-_*^`, `'` equal to `"`; so do strings at
  the top level of a list and the values of an object, never deeper;
- an object argument is checked key by key against each accepted object, one level deep;
- a list of objects must have as many objects as one accepted list, each checked as an object; an
  empty list passes where the argument may be left out (BFCL's `""` has length 0);
- a call with fewer or more calls than expected fails; `simple` categories take exactly one.
Java and JavaScript arguments are source text converted first (`source_values`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rolepool.core import ToolCall
from rolepool.evals.bfcl.source_values import JAVA_TYPES, JS_TYPES, java_value, js_value
from rolepool.evals.cases import OMITTED, BfclKey, ExpectedCall

PYTHON_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
_NESTED = ("Array", "ArrayList", "array")  # Java/JavaScript types whose items are converted too
_PYTHON_NESTED = ("array", "tuple")
_IGNORED = re.compile(r"[ ,./\-_*^]")

Output = list[dict[str, dict[str, Any]]]
"""BFCL's decoded output: one `{name: arguments}` per call."""


class CannotJudge(Exception):
    """An output BFCL's checker itself stops on (an unknown declared type, a key it cannot read):
    BFCL has no verdict; rolepool scores it as not exact."""


def bfcl_verdict(key: BfclKey, expected: list[ExpectedCall], calls: list[ToolCall] | None) -> bool:
    """BFCL's verdict on one output. `calls` is None when the output does not decode to calls
    (unparseable text, prose), else the calls in order (an empty list: no call)."""
    if key.kind == "irrelevance":
        return not calls
    if key.kind == "relevance":
        return bool(calls)
    if calls is None:
        return False
    output = [{c.name: c.arguments} for c in calls]
    answers = [{c.name: c.arguments} for c in expected]
    try:
        return _ast_verdict(key, output, answers)
    except CannotJudge:
        return False


def _ast_verdict(key: BfclKey, output: Output, answers: Output) -> bool:
    if len(output) != len(answers):
        return False
    if "parallel" in key.category:
        return _parallel(key, output, answers)
    if "multiple" in key.category:
        return _one_call(key, _describe(key, answers[0]), output[0], answers[0])
    return _one_call(key, key.functions[0] if key.functions else None, output[0], answers[0])


def _describe(key: BfclKey, answer: dict[str, Any]) -> dict[str, Any] | None:
    name = next(iter(answer))
    return next((f for f in key.functions if f.get("name") == name), None)


def _parallel(key: BfclKey, output: Output, answers: Output) -> bool:
    """Greedy, in the answer key's order: each expected call takes the first unused output call
    that matches it."""
    used: set[int] = set()
    for answer in answers:
        doc = _describe(key, answer)
        found = next(
            (
                i
                for i, call in enumerate(output)
                if i not in used and _one_call(key, doc, call, answer)
            ),
            None,
        )
        if found is None:
            return False
        used.add(found)
    return True


def _one_call(
    key: BfclKey, doc: dict[str, Any] | None, call: dict[str, Any], answer: dict[str, Any]
) -> bool:
    if doc is None or not isinstance(doc.get("parameters"), dict):
        raise CannotJudge("no function description")
    accepted_args: dict[str, list[Any]] = next(iter(answer.values()))
    name = doc.get("name")
    if name not in call:
        return False
    arguments = call[name]
    details = doc["parameters"].get("properties") or {}
    if any(p not in arguments for p in doc["parameters"].get("required") or []):
        return False
    for param, value in arguments.items():
        if param not in details or param not in accepted_args:
            return False
        if not _argument_ok(key.language, details[param], value, accepted_args[param]):
            return False
    return all(p in arguments or OMITTED in accepted for p, accepted in accepted_args.items())


def _argument_ok(language: str, detail: dict[str, Any], value: Any, accepted: list[Any]) -> bool:
    declared = detail.get("type")
    nested: type | None = None
    if language == "python":
        expected = _lookup(PYTHON_TYPES, declared)
        if declared in _PYTHON_NESTED:
            nested = _lookup(PYTHON_TYPES, _item_type(detail))
        if declared == "float" and type(value) is int:
            value = float(value)
        if declared == "tuple" and type(value) is tuple:  # never from JSON; from Python callers
            value = list(value)
    else:
        table, convert = (JAVA_TYPES, java_value) if language == "java" else (JS_TYPES, js_value)
        expected = _lookup(table, declared)
        if type(value) is not str:
            return False  # Java and JavaScript values are always source text
        value, nested = _convert(convert, table, detail, value)
    typed, is_variable = _type_check(value, accepted, expected, nested)
    if not typed:
        return False
    if not is_variable:
        special = _value_checker(expected, nested)
        if special is not None:
            return special(value, accepted)
    return value in accepted


def _convert(
    convert: Callable[..., Any], table: dict[str, type], detail: dict[str, Any], value: str
) -> tuple[Any, type | None]:
    declared = detail["type"]
    try:
        if declared in _NESTED:
            item = _item_type(detail)
            return convert(value, declared, item), _lookup(table, item)
        return convert(value, declared), None
    except ValueError as exc:  # an unknown type; BFCL raises too
        raise CannotJudge(str(exc)) from None


def _item_type(detail: dict[str, Any]) -> Any:
    items = detail.get("items")
    if not isinstance(items, dict) or "type" not in items:
        raise CannotJudge("an array without an item type")
    return items["type"]


def _lookup(table: dict[str, type], declared: Any) -> type:
    if not isinstance(declared, str) or declared not in table:
        raise CannotJudge(f"unknown type {declared!r}")
    return table[declared]


def _answer_type(accepted: list[Any]) -> type | None:
    """The type of the first accepted value that is not the omission marker."""
    return next((type(a) for a in accepted if a != OMITTED), None)


def _type_check(
    value: Any, accepted: list[Any], expected: type, nested: type | None
) -> tuple[bool, bool]:
    """(type ok, value is a variable): BFCL's type rule. A value of the answer key's type, where
    that differs from the declared type, is a variable and passes."""
    key_type = _answer_type(accepted)
    is_variable = key_type is not None and key_type is not expected
    if type(value) is expected:
        if nested is None or any(_items_typed(value, option, nested) for option in accepted):
            return True, is_variable
        return False, True  # nested check failed: a variable of the key's type cannot save it
    if key_type is not None and type(value) is key_type:
        return True, True
    return False, False


def _items_typed(value: Any, option: Any, nested: type) -> bool:
    """Every item has the nested type (or the type of the option's own items). An accepted value
    that is not a list (`""`, a variable) passes any list: BFCL's rule."""
    if type(option) is not list:
        return True
    return all(_type_check(item, option, nested, None)[0] for item in value)


def standardise(text: str) -> str:
    """A string as BFCL compares it."""
    return _IGNORED.sub("", text).lower().replace("'", '"')


def _std(value: Any) -> Any:
    return standardise(value) if type(value) is str else value


def _value_checker(expected: type, nested: type | None) -> Callable[[Any, list[Any]], bool] | None:
    if expected is dict:
        return _dict_ok
    if expected is list and nested is dict:
        return _dict_list_ok
    if expected is str:
        return lambda value, accepted: _std(value) in [_std(a) for a in accepted if type(a) is str]
    if expected is list:
        return _list_ok
    return None


def _list_ok(value: list[Any], accepted: list[Any]) -> bool:
    options = [[_std(item) for item in a] for a in accepted if isinstance(a, (list, str))]
    return [_std(item) for item in value] in options


def _dict_ok(value: dict[str, Any], accepted: list[Any]) -> bool:
    return any(_dict_matches(value, option) for option in accepted if option != OMITTED)


def _dict_matches(value: Any, option: Any) -> bool:
    if option == OMITTED:
        return False  # BFCL skips the omission marker among accepted objects
    if not isinstance(value, dict) or not isinstance(option, dict):
        raise CannotJudge("an object compared with a non-object")
    for key, item in value.items():
        if key not in option or _std(item) not in [_std(a) for a in _values(option[key])]:
            return False
    return all(k in value or _omittable(option[k]) for k in option)


def _values(accepted: Any) -> list[Any]:
    if not isinstance(accepted, (list, str)):
        raise CannotJudge("an accepted object value that is not a list")
    return list(accepted)  # a string is read as its characters, as BFCL indexes it


def _omittable(accepted: Any) -> bool:
    """BFCL's `"" in accepted`: true of any string (the empty string is in every string)."""
    return isinstance(accepted, str) or OMITTED in _values(accepted)


def _dict_list_ok(value: list[Any], accepted: list[Any]) -> bool:
    for option in accepted:
        if not isinstance(option, (list, str)) or len(option) != len(value):
            continue
        if all(_dict_matches(v, o) for v, o in zip(value, option, strict=True)):
            return True
    return False
