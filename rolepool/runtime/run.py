"""A run: the scope that agents and tools share, its lifecycle events, and the handle to watch it.

`execute` drives one run to its end and always closes it with `run.finished` or `run.failed`,
including on cancellation and on a deadline, so the stored trace of every run has an end. A
process killed outright (SIGKILL, a power cut) cannot write that end: so with a store, `execute`
first records the process as the run's owner and keeps a heartbeat beside it, in a task of the
run's own task group, and `trace list` tells a run whose owner is gone (`interrupted`) from one
still going. An interrupted workflow can be resumed (`runtime/replay.py`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, Field

from rolepool.core import (
    DeadlineExceeded,
    Event,
    Message,
    RunCancelled,
    TokenBudgetExceeded,
    Usage,
    new_run_id,
    new_span_id,
)
from rolepool.core.emit import emitting
from rolepool.core.events import RunFailed, RunFinished, RunStarted
from rolepool.core.messages import utf8_safe
from rolepool.runtime.approval import Approver
from rolepool.runtime.limits import Limits
from rolepool.runtime.owner import HEARTBEAT_INTERVAL, this_owner
from rolepool.runtime.store import EventStore, default_store_path
from rolepool.runtime.stream import EventStream, Subscription

if TYPE_CHECKING:
    from rolepool.runtime.replay import Replay

StoreOption = EventStore | Literal[False] | None
_default_stores: dict[Path, EventStore] = {}
_run_hooks: list[Callable[[EventStream], None]] = []


def on_new_run(hook: Callable[[EventStream], None]) -> Callable[[], None]:
    """Call `hook(stream)` for every run `new_scope` creates from now on, before its first event,
    so an exporter (OTel, metrics) can listen to every run without each caller wiring it.
    Returns the function that removes the hook."""
    _run_hooks.append(hook)
    return lambda: _run_hooks.remove(hook) if hook in _run_hooks else None


def resolve_store(store: StoreOption) -> EventStore | None:
    """`None` → the default store (opened once per process and path), `False` → no store."""
    if store is False:
        return None
    if store is not None:
        return store
    path = default_store_path()
    if path not in _default_stores:
        _default_stores[path] = EventStore(path)
    return _default_stores[path]


class RunResult(BaseModel):
    """What a finished run hands its caller: the body's answer plus the run's own accounting (its
    id, the tokens every agent of the run used, and how long the run took)."""

    run_id: str
    output: str
    messages: list[Message] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    turns: int = 0
    duration: float = 0.0


class BodyResult(BaseModel):
    """What a run's `Body` (an agent loop or a workflow) hands back to `execute`, which adds the
    run's id, usage and duration to make the `RunResult`."""

    output: str
    messages: list[Message] = Field(default_factory=list)
    turns: int = 0


class RunScope:
    """Shared by everything inside one run: its id, event stream, limits, budget, workspace and
    the approver that answers for tools that need approval."""

    def __init__(
        self,
        stream: EventStream,
        limits: Limits,
        *,
        workspace: Path | None = None,
        deps: Any = None,
        approver: Approver | None = None,
        replay: Replay | None = None,
    ) -> None:
        self.stream = stream
        self.replay = replay
        """Answers from the stored events of the run this one resumes; None for a fresh run."""
        self.limits = limits
        self.workspace = workspace
        self.deps = deps
        self.approver = approver
        self.span_id = new_span_id()
        self.usage = Usage()
        self.tool_slots = anyio.CapacityLimiter(limits.max_parallel_tools)
        """Tool calls of this run running at once (`Limits.max_parallel_tools`)."""

    @property
    def run_id(self) -> str:
        return self.stream.run_id

    @property
    def tenant(self) -> str | None:
        return self.stream.tenant

    def emit(self, event: Event) -> Event:
        if self.replay is not None:  # it keys spans as they open, before anyone can ask
            self.replay.observe(event)
        return self.stream.emit(event)

    def add_usage(self, usage: Usage) -> None:
        """Count tokens against the run's budget; over budget raises `TokenBudgetExceeded`."""
        self.usage = self.usage + usage
        budget = self.limits.max_tokens
        if budget is not None and self.usage.total_tokens > budget:
            raise TokenBudgetExceeded(
                f"run used {self.usage.total_tokens} tokens, over its budget of {budget}"
            )


Body = Callable[[RunScope], Awaitable[BodyResult]]


async def execute(
    scope: RunScope,
    task: str,
    body: Body,
    *,
    label: str | None = None,
    workflow: str | None = None,
) -> RunResult:
    """Run `body` inside `scope` with the run's deadline; emit the run's first and last event."""
    started = time.perf_counter()
    task = utf8_safe(task)
    store = scope.stream.store
    resumed_from = scope.replay.origin.run_id if scope.replay is not None else None
    if store is not None:  # before the first event: a run in the store always has its owner
        store.claim_run(this_owner(scope.run_id, resumed_from))
    scope.emit(
        RunStarted(
            run_id=scope.run_id,
            span_id=scope.span_id,
            task=task,
            agent=label,
            workflow=workflow,
            workspace=str(scope.workspace) if scope.workspace is not None else None,
            resumed_from=resumed_from,
        )
    )

    def fail(exc: BaseException, error_type: str | None = None) -> None:
        scope.emit(
            RunFailed(
                run_id=scope.run_id,
                span_id=scope.span_id,
                error_type=error_type or type(exc).__name__,
                message=str(exc) or type(exc).__name__,
                duration=time.perf_counter() - started,
            )
        )
        scope.stream.close()

    deadline = scope.limits.deadline
    try:
        with anyio.move_on_after(deadline) as timer, emitting(scope.emit):
            answer = await _with_heartbeat(scope, body)
        if timer.cancelled_caught:
            raise DeadlineExceeded(f"run exceeded its deadline of {deadline:g}s")
    except anyio.get_cancelled_exc_class() as exc:
        fail(exc, "RunCancelled")
        raise
    except Exception as exc:
        fail(exc)
        raise
    duration = time.perf_counter() - started
    scope.emit(
        RunFinished(
            run_id=scope.run_id,
            span_id=scope.span_id,
            output=answer.output,
            usage=scope.usage,
            duration=duration,
        )
    )
    scope.stream.close()
    return RunResult(
        run_id=scope.run_id,
        output=answer.output,
        messages=answer.messages,
        usage=scope.usage,
        turns=answer.turns,
        duration=duration,
    )


async def _with_heartbeat(scope: RunScope, body: Body) -> BodyResult:
    """`body(scope)`, with the owner's heartbeat beating beside it in a task group the run owns;
    the body's error is raised as itself, not wrapped in the group's."""
    store = scope.stream.store
    if store is None:
        return await body(scope)
    error: Exception | None = None
    answer: BodyResult | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_beat, store, scope.run_id)
        try:
            answer = await body(scope)
        except Exception as exc:
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    assert answer is not None
    return answer


async def _beat(store: EventStore, run_id: str) -> None:
    """Every `HEARTBEAT_INTERVAL` seconds, one UPDATE. A beat the store cannot take is skipped:
    the run's events, not its heartbeat, decide whether the run goes on."""
    while True:
        await anyio.sleep(HEARTBEAT_INTERVAL)
        try:
            store.beat(run_id, time.time())
        except Exception:  # noqa: S110 - a missed beat only ages the heartbeat
            pass


def new_scope(
    *,
    store: StoreOption = None,
    limits: Limits | None = None,
    run_id: str | None = None,
    workspace: Path | None = None,
    deps: Any = None,
    approver: Approver | None = None,
    replay: Replay | None = None,
    tenant: str | None = None,
) -> RunScope:
    """The scope of a new run. `tenant` labels every event of the run and every request it
    makes (the tenant's quotas apply where a pool enforces them)."""
    stream = EventStream(run_id or new_run_id(), store=resolve_store(store), tenant=tenant)
    for hook in list(_run_hooks):
        hook(stream)
    return RunScope(
        stream, limits or Limits(), workspace=workspace, deps=deps, approver=approver, replay=replay
    )


class Run:
    """A run going on in the background of an `async with ... start(...)` block."""

    def __init__(
        self, scope: RunScope, finalize: Callable[[RunResult], RunResult] | None = None
    ) -> None:
        self.scope = scope
        self._finalize = finalize
        self._done = anyio.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._cancel = anyio.CancelScope()

    @property
    def run_id(self) -> str:
        return self.scope.run_id

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def events(self, *, from_seq: int = 0) -> Subscription:
        """Every event of the run from `from_seq`, live; ends when the run ends."""
        return self.scope.stream.subscribe(from_seq=from_seq)

    def cancel(self) -> None:
        self._cancel.cancel()

    async def result(self) -> RunResult:
        """Wait for the end; return the result or raise the run's error."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def _drive(
        self, task: str, body: Body, label: str | None, workflow: str | None = None
    ) -> None:
        try:
            with self._cancel:
                result = await execute(self.scope, task, body, label=label, workflow=workflow)
                self._result = self._finalize(result) if self._finalize else result
        except Exception as exc:  # kept for result(); run.failed is already emitted
            self._error = exc
        if self._cancel.cancelled_caught:
            self._error = RunCancelled(f"run {self.run_id} was cancelled")
        self._done.set()


@asynccontextmanager
async def start(
    scope: RunScope,
    task: str,
    body: Body,
    *,
    label: str | None = None,
    workflow: str | None = None,
    finalize: Callable[[RunResult], RunResult] | None = None,
) -> AsyncIterator[Run]:
    """Start a run in the background; leaving the block waits for it (or cancels it on error).
    `finalize` turns the plain result into the caller's richer one (a workflow's)."""
    run = Run(scope, finalize)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run._drive, task, body, label, workflow)
        try:
            yield run
        except BaseException:
            run.cancel()
            raise
