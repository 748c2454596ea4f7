"""What a tool-call format module returns, and the JSON helper the marker formats share.

A format module reads one call block at a marker the scanner found (`parsing.py`) and says what is
there: `Found` (the calls and where the block ends) or `Broken` (where and why the attempt cannot be
read, in words for the model). Format modules never raise on model text and never import the
scanner, so the scanner can import them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rolepool.core.messages import ToolCall, new_call_id
from rolepool.tools._strict_json import Decoded, JsonError, StrictDecoder, find_problem
from rolepool.tools.call_objects import skip_space, to_call

__all__ = ["Broken", "Found", "json_calls_at", "json_object_at", "named_call"]


@dataclass(frozen=True)
class Found:
    """Calls read from one block; `end` is the offset just past the block."""

    calls: list[ToolCall]
    end: int


@dataclass(frozen=True)
class Broken:
    """A call attempt that cannot be read: the offset of the problem and what it is."""

    position: int
    message: str


def json_object_at(
    text: str, pos: int, decoder: StrictDecoder, where: str, closers: tuple[str, ...] = ()
) -> tuple[dict[str, Any], int] | Broken:
    """The JSON object starting at `pos` (after spaces) and where it ends, strictly decoded."""
    pos = skip_space(text, pos)
    if not text.startswith("{", pos):
        return Broken(pos, f"expected a JSON object {where}")
    decoded = _decode(text, pos, decoder, where, closers)
    return decoded if isinstance(decoded, Broken) else (decoded.value, decoded.end)


def _decode(
    text: str, pos: int, decoder: StrictDecoder, where: str, closers: tuple[str, ...]
) -> Decoded | Broken:
    """The strict JSON value at `pos`, or what is wrong with it (`where` ends the message)."""
    try:
        decoded = decoder.decode_at(text, pos, closers)
    except JsonError as err:
        return Broken(err.position, f"{err.message} {where}")
    problem = find_problem(text, decoded)
    if problem is not None:
        return Broken(problem[0], f"{problem[1]} {where}")
    return decoded


def json_calls_at(
    text: str, pos: int, decoder: StrictDecoder, where: str, closers: tuple[str, ...] = ()
) -> Found | Broken:
    """A JSON call object, or a non-empty list of them, at `pos` (the shared call-object rules)."""
    pos = skip_space(text, pos)
    if pos >= len(text) or text[pos] not in "[{":
        return Broken(pos, f"expected a JSON list of tool calls {where}")
    decoded = _decode(text, pos, decoder, where, closers)
    if isinstance(decoded, Broken):
        return decoded
    objects = decoded.value if isinstance(decoded.value, list) else [decoded.value]
    if not objects:
        return Broken(pos, f"empty list of tool calls {where}")
    calls = []
    for obj in objects:
        call = to_call(obj, decoder)
        if isinstance(call, str):
            return Broken(pos, f"{call} {where}")
        calls.append(call)
    return Found(calls, decoded.end)


def named_call(name: str, arguments: dict[str, Any]) -> ToolCall:
    return ToolCall(id=new_call_id(), name=name, arguments=arguments)
