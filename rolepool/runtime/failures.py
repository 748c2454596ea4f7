"""Small helpers of the run loop: typed errors for failed model calls, exception groups, and
call ids that results can be matched by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio

from rolepool.core import Completion, RolepoolError, ToolCall, WorkerError
from rolepool.core.messages import new_call_id, utf8_safe
from rolepool.pools.worker import Worker
from rolepool.tools.parsing import too_deep


def first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first real exception of a (nested) exception group."""
    first: BaseException = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def unique_ids(calls: Sequence[ToolCall]) -> list[ToolCall]:
    """Give repeated call ids fresh ones: results are matched to calls by id."""
    seen: set[str] = set()
    out = []
    for call in calls:
        if call.id in seen:
            call = call.model_copy(update={"id": new_call_id()})
        seen.add(call.id)
        out.append(call)
    return out


def worker_error(exc: BaseException, worker: Worker, timeout: float) -> RolepoolError | None:
    """The typed error for a failed model call, or None for cancellation (re-raised as is)."""
    if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, RolepoolError):
        return exc
    name = worker_name(worker)
    if isinstance(exc, TimeoutError):
        return WorkerError(f"no completion within model_timeout={timeout:g}s", worker=name)
    return WorkerError(f"{type(exc).__name__}: {exc}", worker=name)


def worker_name(worker: Worker) -> str:
    try:
        return worker.info.name
    except Exception:
        return type(worker).__name__


def utf8_safe_value(value: Any) -> Any:
    """`value` with `utf8_safe` applied to every string at any depth (call arguments)."""
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, dict):
        return {utf8_safe_value(k): utf8_safe_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [utf8_safe_value(v) for v in value]
    return value


def clean_completion(completion: Completion) -> Completion:
    """The completion with lone surrogates (half an emoji from a model's byte-level decoding)
    replaced by U+FFFD in its text and call arguments, so what a model says cannot break the
    event store further down. The common case, ASCII text and no native calls, costs one check."""
    if completion.text.isascii() and not completion.tool_calls:
        return completion
    text = utf8_safe(completion.text)
    calls = completion.tool_calls and [
        c  # left whole: the loop refuses it, and cleaning would recurse past Python's stack
        if too_deep(c.arguments)
        else c.model_copy(
            update={"name": utf8_safe(c.name), "arguments": utf8_safe_value(c.arguments)}
        )
        for c in completion.tool_calls
    ]
    return completion.model_copy(update={"text": text, "tool_calls": calls})
