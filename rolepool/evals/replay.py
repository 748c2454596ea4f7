"""Score precomputed outputs without any model: a replay file gives, per case id, the text a model
wrote or the tool calls it made, and each becomes a one-attempt `Prediction` through the same
parser (`parse_tool_calls`) and the same validation the run loop applies.

Format, JSON Lines: `{"id": ..., "text": "..."}` or
`{"id": ..., "tool_calls": [{"name": ..., "arguments": {...} or "<JSON string>"}]}`, optionally
with both (the text is then prose beside native calls, as an OpenAI-compatible server returns).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rolepool.core import ToolCall, UserError
from rolepool.evals.cases import Attempt, Case, Prediction
from rolepool.evals.result_line import CallRecord
from rolepool.evals.scoring import call_problems
from rolepool.tools.parsing import parse_tool_calls

_KEYS = frozenset({"id", "text", "tool_calls"})


class ReplayRecord(BaseModel):
    """One line of a replay file, checked: what a model wrote for case `id`, as text, as native
    calls (OpenAI's `{"function": ...}` wrapper taken off, string arguments decoded), or both."""

    id: str
    text: str | None = None
    tool_calls: list[CallRecord] | None = None


def load_replay(path: str | Path) -> dict[str, list[ReplayRecord]]:
    """Records by case id, in file order (an id may repeat: the caller decides what that means).
    A malformed line raises `UserError` naming `FILE:LINE`."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"replay file {str(path)!r}: {exc.strerror or exc}") from None
    records: dict[str, list[ReplayRecord]] = {}
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = _record(line, f"{path}:{number}")
            records.setdefault(record.id, []).append(record)
    return records


def _record(line: str, where: str) -> ReplayRecord:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(record.keys() - _KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: id, text, tool_calls)")
    if not isinstance(record.get("id"), str) or not record["id"]:
        raise UserError(f'{where}: "id" must be a non-empty string')
    if "text" not in record and "tool_calls" not in record:
        raise UserError(f'{where}: needs "text" or "tool_calls"')
    if "text" in record and not isinstance(record["text"], str):
        raise UserError(f'{where}: "text" must be a string')
    calls = None
    if "tool_calls" in record:
        calls = [
            _call(item, f"{where}: tool_calls[{i}]") for i, item in enumerate(_list(record, where))
        ]
    return ReplayRecord(id=record["id"], text=record.get("text"), tool_calls=calls)


def _list(record: dict[str, Any], where: str) -> list[Any]:
    calls = record["tool_calls"]
    if not isinstance(calls, list):
        raise UserError(f'{where}: "tool_calls" must be a list of {{"name", "arguments"}}')
    return calls


def _call(item: Any, where: str) -> CallRecord:
    """One native call, OpenAI's `{"function": {...}}` wrapper accepted; arguments decoded."""
    if isinstance(item, dict) and isinstance(item.get("function"), dict):
        item = item["function"]
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise UserError(f'{where}: a call needs a non-empty string "name"')
    arguments = item.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise UserError(f'{where}: "arguments" string is not JSON ({exc.msg})') from None
    if not isinstance(arguments, dict):
        raise UserError(f'{where}: "arguments" must be a JSON object')
    return CallRecord(name=item["name"], arguments=arguments)


def prediction_from_replay(case: Case, record: ReplayRecord) -> Prediction:
    """One attempt from one record, seen as the run loop would see that completion: native calls
    taken as they are, text parsed, an empty reply refused, calls validated against the case's
    tools. `record` is one value from `load_replay` (already checked)."""
    text = record.text or ""
    if record.tool_calls:
        calls = [ToolCall(name=c.name, arguments=c.arguments) for c in record.tool_calls]
        return Prediction(attempts=[_attempt(case, text, calls, None)])
    parsed = parse_tool_calls(text)
    if parsed.failure is not None:
        return Prediction(attempts=[_attempt(case, text, [], str(parsed.failure))])
    if not parsed.calls and not parsed.text.strip():
        return Prediction(attempts=[_attempt(case, text, [], "the reply was empty")])
    return Prediction(attempts=[_attempt(case, text, list(parsed.calls), None)])


def _attempt(case: Case, text: str, calls: list[ToolCall], parse_error: str | None) -> Attempt:
    invalid = call_problems(case, calls) if calls else []
    return Attempt(text=text, calls=calls, parse_error=parse_error, invalid=invalid)
