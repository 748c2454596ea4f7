"""Turning whatever a tool returned into the text the model reads next."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from rolepool.core import ToolError


def format_result(value: object, *, max_chars: int = 20_000) -> str:
    """The tool result as text for the model, cut to `max_chars`.

    Strings pass through (a tool that formats its own output keeps it); everything else becomes
    JSON so the model sees one consistent notation. A result that cannot be serialised is the
    tool's bug and raises `ToolError` rather than reaching the model as a Python repr. A long
    result is cut with a marker that says so, so the model knows it saw only part of it.
    """
    if max_chars < 0:
        raise ValueError(f"max_chars must be >= 0, got {max_chars}")
    text = _to_text(value)
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}\n…[truncated: {len(text)} chars, showing first {max_chars}]"


def _to_text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        if isinstance(value, BaseModel):
            return value.model_dump_json()
        return json.dumps(value, ensure_ascii=False, default=_nested_model)
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        raise ToolError(
            f"result of type {type(value).__name__} is not serialisable to JSON: {exc}; "
            "return a str, a pydantic model, or dicts/lists of JSON values"
        ) from None


def _nested_model(value: Any) -> Any:
    # Lists and dicts of pydantic models are a common tool result; anything else stays an error.
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")
