"""Granite (IBM Granite 3.x chat models): `<|tool_call|>[{"name": ..., "arguments": {...}}]`."""

from __future__ import annotations

from rolepool.tools._strict_json import StrictDecoder
from rolepool.tools.formats.base import Broken, Found, json_calls_at

NAME = "granite"
MARKER = r"<\|tool_call\|>"
OPEN = "<|tool_call|>"


def read(text: str, start: int, decoder: StrictDecoder) -> Found | Broken:
    """The JSON list (or single object) of calls after the marker at `start`."""
    return json_calls_at(text, start + len(OPEN), decoder, f"after {OPEN}", (OPEN,))
