"""Checking tool schemas, and checking a model's arguments against them.

Validation results go back to the model so it can repair its call, so every problem is reported
at once (one retry can fix them all) with the JSON path of the offending value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from rolepool.core import ConfigError

_META_VALIDATOR = Draft202012Validator(
    Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
)
# jsonschema messages embed the repr of the offending value; a huge value would flood the prompt.
_MAX_MESSAGE_CHARS = 500
_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas (2020-12).
_SCHEMA_KEYWORDS = frozenset(
    {
        "items",
        "additionalProperties",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
_SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAP_KEYWORDS = frozenset(
    {
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
    }
)


@dataclass(frozen=True)
class ValidationIssue:
    """One problem with a call's arguments, phrased for the model that has to fix it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def child_schemas(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The direct sub-schemas of `schema` with their JSON path suffix.

    Walking by keyword (not by every nested dict) keeps instance data such as `enum`, `const` or
    `default`, and property *names* such as a property called "title", out of the walk.
    """
    for key, value in schema.items():
        if key in _SCHEMA_KEYWORDS and isinstance(value, dict):
            yield f".{key}", value
        elif key in _SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield f".{key}[{index}]", item
        elif key in _SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            for name, item in value.items():
                if isinstance(item, dict):
                    yield f".{key}{_path_suffix([name])}", item


def json_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """Format a path the way jsonschema's `ValidationError.json_path` does: `$.items[0].name`."""
    return "$" + _path_suffix(parts)


def _path_suffix(parts: list[str | int] | tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}"
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            out += f"['{escaped}']"
    return out


def check_schema(schema: dict[str, Any], *, where: str = "parameters") -> None:
    """Refuse a parameters schema up front, so a broken tool fails at definition, not mid-run."""
    if not isinstance(schema, dict):
        raise ConfigError(f"must be a JSON Schema object, got {type(schema).__name__}", where=where)
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"is not JSON-serialisable: {exc}", where=where) from None
    error = best_match(_META_VALIDATOR.iter_errors(schema))
    if error is not None:
        raise ConfigError(
            f"not a valid JSON Schema (Draft 2020-12) at {error.json_path}: "
            f"{_short(error.message)}",
            where=where,
        )
    if schema.get("type") != "object":
        raise ConfigError(
            f'the top level must be {{"type": "object", ...}}, got type {schema.get("type")!r}',
            where=where,
        )
    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    _check_refs(schema, resolver, "$", where=where, is_root=True)


def _check_refs(
    node: dict[str, Any], resolver: Any, path: str, *, where: str, is_root: bool
) -> None:
    """Resolve every `$ref` now: a dangling one would otherwise only fail when a call reaches it."""
    if not is_root and isinstance(node.get("$id"), str):
        resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
    ref = node.get("$ref")
    if isinstance(ref, str):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise ConfigError(f"$ref {ref!r} at {path} cannot be resolved", where=where) from None
    for suffix, child in child_schemas(node):
        _check_refs(child, resolver, path + suffix, where=where, is_root=False)


def validate_arguments(schema: dict[str, Any], arguments: object) -> list[ValidationIssue]:
    """Every way `arguments` breaks `schema`, sorted by path; an empty list means valid.

    Never raises for any `arguments`: whatever the model produced, the answer is a list of issues
    the run loop can send back.
    """
    if not isinstance(arguments, dict):
        got = _json_type(arguments)
        return [ValidationIssue("$", f"arguments must be a JSON object, got {got}")]
    bad_keys = [key for key in arguments if not isinstance(key, str)]
    if bad_keys:
        return [ValidationIssue("$", f"property names must be strings, got {bad_keys[0]!r}")]
    try:
        validator = _validator_for(json.dumps(schema, sort_keys=True))
        errors = list(validator.iter_errors(arguments))
    except Exception as exc:  # noqa: BLE001 - the contract is a list of issues, never a crash
        return [ValidationIssue("$", f"arguments could not be checked: {_short(str(exc))}")]
    errors.sort(key=lambda e: (_path_key(e), e.message))
    return [_issue(error) for error in errors]


@lru_cache(maxsize=512)
def _validator_for(frozen_schema: str) -> Draft202012Validator:
    """Keyed by the schema's JSON text, and built from a copy of it, so mutating the caller's
    dict afterwards can never leave a stale validator behind."""
    return Draft202012Validator(json.loads(frozen_schema))


def _issue(error: ValidationError) -> ValidationIssue:
    message = error.message
    if error.validator in ("anyOf", "oneOf") and error.context:
        # "... is not valid under any of the given schemas" alone gives the model nothing to fix.
        # best_match descends from the failed keyword into the most specific branch error.
        best = best_match([error])
        if best is not None and best is not error:
            where = "" if best.json_path == error.json_path else f" at {best.json_path}"
            message = f"{message}; closest match failed{where}: {best.message}"
    return ValidationIssue(error.json_path, _short(message))


def _path_key(error: ValidationError) -> tuple[tuple[int, int | str], ...]:
    # Numeric indices sort numerically ([2] before [10]); names sort as text.
    return tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in error.absolute_path)


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _short(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 1] + "…"
