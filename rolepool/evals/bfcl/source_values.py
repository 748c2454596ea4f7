"""Java and JavaScript argument values as BFCL's checker reads them.

In `simple_java` and `simple_javascript` every argument is source text (`"3.14f"`, `"new
ArrayList<>(Arrays.asList(1, 2))"`, `"[1, 2]"`), and the checker turns that text into a Python value
by the parameter's declared type before comparing it with the answer key. Text that does not have
the form of its type stays text, and is then compared as text. These rules are BFCL's, followed
case by case (regular expressions included), so that `exact` is BFCL's verdict; they are written
here from its behaviour, not copied. `java_value`/`js_value` raise `UnknownType` for a declared
type BFCL does not convert either (its checker stops there with an error).
"""

from __future__ import annotations

import re
from typing import Any

JAVA_TYPES: dict[str, type] = {
    "byte": int,
    "short": int,
    "integer": int,
    "long": int,
    "float": float,
    "double": float,
    "boolean": bool,
    "char": str,
    "String": str,
    "any": str,
    "Array": list,
    "ArrayList": list,
    "Queue": list,
    "Stack": list,
    "HashMap": dict,
    "Hashtable": dict,
    "Set": set,
}
"""Java type -> the Python type the checker expects after conversion."""

JS_TYPES: dict[str, type] = {
    "String": str,
    "integer": int,
    "float": float,
    "Bigint": int,
    "Boolean": bool,
    "dict": dict,
    "array": list,
    "any": str,
}
"""JavaScript type -> the Python type the checker expects after conversion."""

_INT = re.compile(r"-?\d+")
_JAVA_FLOAT = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?[fF]")
_JAVA_DOUBLE = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_JAVA_LONG = re.compile(r"-?\d+[lL]")
_JS_FLOAT = re.compile(r"-?\d+(\.\d+)?")
_JS_BIGINT = re.compile(r"-?\d+n")


class UnknownType(ValueError):
    """A declared type that BFCL's checker cannot convert (it fails the whole evaluation)."""


def _full(pattern: re.Pattern[str], text: str) -> bool:
    # BFCL anchors with ^...$, where $ also matches before one trailing newline.
    return pattern.fullmatch(text.removesuffix("\n")) is not None


# -- Java -----------------------------------------------------------------------------------------
def java_value(text: str, declared: str, item_type: str | None = None) -> Any:
    """`text` converted by the Java type `declared` (`item_type` for arrays' elements)."""
    if declared not in JAVA_TYPES:
        raise UnknownType(declared)
    if declared in ("byte", "short", "integer"):
        return int(text) if _full(_INT, text) else text
    if declared == "float":
        return float(text.removesuffix("\n")[:-1]) if _full(_JAVA_FLOAT, text) else text
    if declared == "double":
        return float(text) if _full(_JAVA_DOUBLE, text) else text
    if declared == "long":
        return int(text.removesuffix("\n")[:-1]) if _full(_JAVA_LONG, text) else text
    if declared == "boolean":
        return text == "true" if text in ("true", "false") else text
    if declared in ("char", "String", "any"):
        return text  # BFCL's char pattern can never match, so a char stays as written
    if declared == "ArrayList":
        return _java_array_list(text, item_type)
    if declared == "Array":
        return _java_array(text, item_type)
    if declared == "HashMap":
        return _java_hash_map(text)
    raise UnknownType(declared)  # Set, Hashtable, Queue, Stack: BFCL has no conversion


def _java_element(text: str, item_type: str | None) -> Any:
    if item_type in ("char", "String"):
        return text[1:-1]  # quotes dropped, whatever they were
    return java_value(text, item_type) if item_type else java_literal(text)


def _java_array_list(text: str, item_type: str | None) -> Any:
    as_list = re.search(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)", text)
    if as_list:
        return [_java_element(part.strip(), item_type) for part in as_list.group(1).split(",")]
    adds = re.search(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", text, re.DOTALL)
    if adds:
        found = re.findall(r"add\((.+?)\)", adds.group(1))
        return [_java_element(part.strip(), item_type) for part in found]
    if re.search(r"new\s+ArrayList<\w*>\(\)", text):
        return []
    return text


def _java_array(text: str, item_type: str | None) -> Any:
    match = re.search(r"new\s+\w+\[\]\s*\{(.*?)\}", text)
    if not match:
        return text
    parts = [p.strip() for p in match.group(1).split(",") if p.strip()]
    if item_type:
        return [java_value(p, item_type) for p in parts]
    return [java_literal(p) for p in parts]


def _java_hash_map(text: str) -> Any:
    body = re.search(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", text, re.DOTALL)
    if body:
        puts = re.findall(r"put\(\"(.*?)\",\s*(.*?)\)", body.group(1))
        return {key: java_literal(value.strip()) for key, value in puts}
    if re.search(r"new\s+HashMap<.*?>\s*\(\)", text):
        return {}
    return text


def java_literal(text: str) -> Any:
    """A Java literal of unknown type: boolean, quoted string, long, float, int, double, or text."""
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    if _full(_JAVA_LONG, text):
        return int(text[:-1])
    if _full(_JAVA_FLOAT, text):
        return float(text.removesuffix("\n")[:-1])
    return _number_or_text(text)


def _number_or_text(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


# -- JavaScript -----------------------------------------------------------------------------------
def js_value(text: str, declared: str, item_type: str | None = None) -> Any:
    """`text` converted by the JavaScript type `declared` (`item_type` for arrays' elements)."""
    if declared not in JS_TYPES:
        raise UnknownType(declared)
    if declared == "String":
        quoted = len(text) >= 1 and text[0] == text[-1] and text[0] in "\"'"
        return text[1:-1] if quoted else text
    if declared == "integer":
        return int(text) if _full(_INT, text) else text
    if declared == "float":
        return float(text) if _full(_JS_FLOAT, text) else text
    if declared == "Bigint":
        return int(text.removesuffix("\n")[:-1]) if _full(_JS_BIGINT, text) else text
    if declared == "Boolean":
        return text == "true" if text in ("true", "false") else text
    if declared == "dict":
        return _js_object(text.strip())
    if declared == "array":
        return _js_array(text.strip(), item_type)
    return text  # any


_JS_2D = re.compile(
    r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)"
)
_JS_1D = re.compile(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)")


def _js_array(code: str, item_type: str | None) -> Any:
    try:
        nested = _JS_2D.match(code)
        if nested:
            rows = re.findall(r"\[(.*?)\]", nested.group(0))
            out = []
            for index, row in enumerate(rows):
                row = row.strip()
                if index == 0 and row.startswith("["):
                    row = row[1:]
                out.append([js_literal(part.strip()) for part in row.split(",")])
            return out
        flat = _JS_1D.match(code)
        if not flat:
            return code
        inner = flat.group(1) if flat.group(1) is not None else flat.group(2)
        parts = inner.strip().split(",") if inner is not None and inner.strip() else []
        if item_type:  # BFCL passes "String" on as the item type of a quoted element
            return [js_value(p.strip(), item_type, _quoted_hint(p.strip())) for p in parts]
        return [js_literal(p.strip()) for p in parts]
    except Exception:  # BFCL gives the text back on any failure here (an unknown item type too)
        return code


def _quoted_hint(text: str) -> str | None:
    return "String" if text.startswith(("'", '"')) else None


def _js_object(code: str) -> Any:
    if code == "{}":
        return {}
    match = re.match(r"\{(.*?)\}", code)
    if not match:
        return code
    out: dict[str, Any] = {}
    pairs = re.findall(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)", match.group(1))
    for key, value in pairs:
        key, value = key.strip().strip("'\""), value.strip()
        if value.startswith("[") and value.endswith("]"):
            out[key] = _js_array(value, None)
        elif value.startswith("{") and value.endswith("}"):
            out[key] = _js_object(value)
        else:
            out[key] = js_literal(value.strip("'\""))
    return out


def js_literal(text: str) -> Any:
    """A JavaScript literal of unknown type: boolean, quoted string, int, float, or text."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if len(text) >= 1 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return _number_or_text(text)


# -- values back to source text -------------------------------------------------------------------
def source_text(value: Any, detail: dict[str, Any], language: str) -> Any:
    """A Python value (from BFCL's answer key) written as the source text a Java or JavaScript
    argument is, so that the conversions above read it back: how a right answer is replayed."""
    declared = detail.get("type")
    item = (detail.get("items") or {}).get("type")
    if isinstance(value, str):
        return value  # a string stays as written: for a collection type, a variable's name
    if language == "java":
        return _java_source(value, declared, item)
    return _js_source(value, declared, item)


def _java_source(value: Any, declared: Any, item: Any) -> str:
    if declared == "Array":  # BFCL keeps the quotes of an array's string items: write none
        parts = ", ".join(v if isinstance(v, str) else _java_item(v, item) for v in value)
        return f"new {_JAVA_ITEM_NAMES.get(item, 'Object')}[]{{{parts}}}"
    if declared == "ArrayList":
        parts = ", ".join(_java_item(v, item) for v in value)
        return f"new ArrayList<>(Arrays.asList({parts}))" if value else "new ArrayList<>()"
    if declared == "HashMap":
        puts = " ".join(f'put("{k}", {_java_item(v, None)});' for k, v in value.items())
        return f"new HashMap<String, Object>() {{{{ {puts} }}}}"
    return _java_item(value, declared)


_JAVA_ITEM_NAMES = {"String": "String", "integer": "int", "long": "long", "char": "char"}


def _java_item(value: Any, declared: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if declared == "long":
        return f"{value}L"
    if declared == "float":
        return f"{value}f"
    if isinstance(value, str):
        return f'"{value}"' if declared in (None, "String", "char") else value
    return repr(value)


def _js_source(value: Any, declared: Any, item: Any) -> str:
    if declared == "array":
        return "[" + ", ".join(_js_item(v, item) for v in value) + "]"
    if declared == "dict":
        return "{" + ", ".join(f"{k}: {_js_item(v, None)}" for k, v in value.items()) + "}"
    if declared == "Bigint":
        return f"{value}n"
    return _js_item(value, declared)


def _js_item(value: Any, declared: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if declared in (None, "String") else value
    if isinstance(value, list):
        return "[" + ", ".join(_js_item(v, None) for v in value) + "]"
    return repr(value)
