"""Workers for offline tests and examples: scripted answers or a Python function.

They run the real loop with no model behind it. They are not the product's default; the default
pool serves the shipped reference models.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from rolepool.core import Completion, Request, ToolCall, Usage, WorkerError, WorkerInfo

Reply = str | ToolCall | list[ToolCall] | Completion
ReplyFn = Callable[[Request], Reply | Awaitable[Reply]]


def _to_completion(reply: Reply, info: WorkerInfo) -> Completion:
    if isinstance(reply, Completion):
        completion = reply.model_copy()
    elif isinstance(reply, str):
        completion = Completion(text=reply)
    else:
        calls = [reply] if isinstance(reply, ToolCall) else list(reply)
        completion = Completion(tool_calls=calls)
    completion.worker = completion.worker or info.name
    completion.model = completion.model or info.model
    if completion.architecture == "unknown":
        completion.architecture = info.architecture
    return completion


def _approx_tokens(request: Request, completion: Completion) -> Usage:
    """Whitespace token counts, so usage and token budgets behave plausibly in tests."""
    prompt = sum(len(m.content.split()) for m in request.messages)
    calls = completion.tool_calls or []
    try:
        out = completion.text or json.dumps([c.model_dump() for c in calls])
    except (ValueError, TypeError, RecursionError):  # arguments no JSON holds: the loop says so
        out = " ".join(c.name for c in calls)
    return Usage(prompt_tokens=prompt, completion_tokens=len(out.split()))


class FunctionWorker:
    """Answers each request by calling `fn(request)` (sync or async).

    `fn` may return text (parsed by the run loop like any model output), a `ToolCall`, a list of
    them, or a full `Completion`.
    """

    def __init__(
        self, fn: ReplyFn, *, name: str = "function", architecture: str = "unknown"
    ) -> None:
        self._fn = fn
        self._info = WorkerInfo(name=name, model=f"test:{name}", architecture=architecture)  # type: ignore[arg-type]
        self.requests: list[Request] = []

    @property
    def info(self) -> WorkerInfo:
        return self._info

    async def health(self) -> bool:
        return True

    async def complete(self, request: Request) -> Completion:
        self.requests.append(request)
        start = time.perf_counter()
        reply = self._fn(request)
        if inspect.isawaitable(reply):
            reply = await reply
        completion = _to_completion(reply, self._info)  # type: ignore[arg-type]
        if completion.usage == Usage():
            completion.usage = _approx_tokens(request, completion)
        completion.latency = completion.latency or time.perf_counter() - start
        return completion


class ScriptedWorker(FunctionWorker):
    """Plays back a fixed list of replies, one per request; running out is a `WorkerError`."""

    def __init__(self, replies: Iterable[Reply], *, name: str = "scripted", **kw: Any) -> None:
        self._replies = list(replies)
        self._next = 0
        super().__init__(self._reply, name=name, **kw)

    def _reply(self, request: Request) -> Reply:
        if self._next >= len(self._replies):
            raise WorkerError(
                f"script exhausted after {len(self._replies)} replies", worker=self.info.name
            )
        reply = self._replies[self._next]
        self._next += 1
        return reply

    @property
    def remaining(self) -> int:
        return len(self._replies) - self._next
