"""A tool's JSON Schema, made from the type hints and docstring of a plain Python function.

Pydantic builds the schema (and later turns validated JSON into typed arguments); this module only
decides which parameters take part and tidies the output into what a model should read.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import docstring_parser
import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rolepool.core import ConfigError, RunContext
from rolepool.tools.validation import child_schemas

# Parameters become fields named p0, p1, ... with the parameter's own name as alias: a parameter
# may be called `schema`, `json`, `validate`, `model_config` or `_hidden`, and as a field name
# those would clash with BaseModel or be taken as private attributes.
_FIELD_PREFIX = "p"


def schema_from_function(fn: Callable[..., Any]) -> tuple[dict[str, Any], type[BaseModel], bool]:
    """`(json_schema, args_model, takes_context)` for a typed function.

    A first parameter annotated `RunContext` is filled by the run loop, so it stays out of the
    schema and `takes_context` is True. Descriptions of the other parameters come from the
    docstring (Google, reST or Numpy style) unless a `Field(description=...)` already gives one.
    """
    label = _label(fn)
    params, takes_context = _tool_parameters(fn, label)
    fields: dict[str, Any] = {}
    for index, param in enumerate(params):
        default = ... if param.default is inspect.Parameter.empty else param.default
        annotation = Annotated[param.annotation, Field(alias=param.name)]
        fields[f"{_FIELD_PREFIX}{index}"] = (annotation, default)
    try:
        model = pydantic.create_model(
            f"{label}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        raw = model.model_json_schema()
    except (pydantic.PydanticUserError, TypeError, ValueError, NameError) as exc:
        culprit = _unsupported_parameter(params)
        where = f"parameter {culprit!r} of {label}" if culprit else label
        raise ConfigError(f"cannot build a JSON Schema: {exc}", where=where) from None
    _check_aliases(model, params, label)
    descriptions = _param_descriptions(fn)
    schema = _clean(raw, descriptions)
    return schema, model, takes_context


def function_description(fn: Callable[..., Any]) -> str:
    """The docstring's short and long description, without the parameter (or returns) sections,
    which the schema carries per property instead."""
    doc = _parse_docstring(fn)
    if doc is None:
        return ""
    parts = [doc.short_description or "", doc.long_description or ""]
    return "\n\n".join(part.strip() for part in parts if part and part.strip())


def _label(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _tool_parameters(fn: Callable[..., Any], label: str) -> tuple[list[inspect.Parameter], bool]:
    """The parameters the model fills, and whether a leading `RunContext` one was dropped."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except NameError as exc:
        raise ConfigError(
            f"a type hint cannot be resolved ({exc}); define the type at module level",
            where=label,
        ) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"has no inspectable signature: {exc}", where=label) from None
    params = list(signature.parameters.values())
    takes_context = bool(params) and _is_context(params[0].annotation)
    if takes_context:
        params = params[1:]
    for param in params:
        where = f"parameter {param.name!r} of {label}"
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            star = "*" if param.kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise ConfigError(
                f"{star}{param.name} is not supported: a tool's arguments must be named and typed",
                where=where,
            )
        if param.annotation is inspect.Parameter.empty:
            raise ConfigError("has no type annotation; the schema is built from it", where=where)
        if _is_context(param.annotation):
            raise ConfigError("RunContext must be the first parameter", where=where)
    return params, takes_context


def _is_context(annotation: object) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, RunContext)


def _check_aliases(model: type[BaseModel], params: list[inspect.Parameter], label: str) -> None:
    # An alias in a `Field(...)` default would silently rename the argument the model must send.
    for index, param in enumerate(params):
        field = model.model_fields[f"{_FIELD_PREFIX}{index}"]
        if field.alias != param.name or field.validation_alias not in (None, param.name):
            raise ConfigError(
                "an alias is not supported on a tool parameter; rename the parameter instead",
                where=f"parameter {param.name!r} of {label}",
            )


def _unsupported_parameter(params: list[inspect.Parameter]) -> str | None:
    """Which parameter pydantic choked on, so the error names it (only run on failure)."""
    for param in params:
        try:
            TypeAdapter(param.annotation).json_schema()
        except Exception:  # noqa: BLE001 - any failure here marks the culprit
            return param.name
    return None


def _parse_docstring(fn: Callable[..., Any]) -> docstring_parser.Docstring | None:
    text = inspect.getdoc(fn)
    if not text:
        return None
    try:
        return docstring_parser.parse(text)
    except docstring_parser.ParseError:
        return None


def _param_descriptions(fn: Callable[..., Any]) -> dict[str, str]:
    doc = _parse_docstring(fn)
    if doc is None:
        return {}
    return {
        p.arg_name: p.description.strip()
        for p in doc.params
        if p.description and p.description.strip()
    }


def _clean(raw: dict[str, Any], descriptions: dict[str, str]) -> dict[str, Any]:
    """Drop pydantic's generated titles, add docstring descriptions, and order the top level the
    way a model reads it best: type, properties, required, then the definitions."""
    _drop_titles(raw)
    properties: dict[str, Any] = raw.get("properties", {})
    for name, prop in properties.items():
        if name in descriptions and "description" not in prop:
            prop["description"] = descriptions[name]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if raw.get("required"):
        schema["required"] = raw["required"]
    schema["additionalProperties"] = False
    if raw.get("$defs"):
        schema["$defs"] = raw["$defs"]
    return schema


def _drop_titles(schema: dict[str, Any]) -> None:
    # Only the `title` keyword of schema objects goes; a property *named* "title" lives under
    # `properties` as a key, which the keyword walk never deletes.
    schema.pop("title", None)
    for _, child in child_schemas(schema):
        _drop_titles(child)
