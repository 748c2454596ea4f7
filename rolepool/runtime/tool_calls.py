"""A turn's tool calls once they are parsed: each is checked, and the valid ones run.

A check gives one of two records, so validity is the record's type rather than a flag to remember:
`ValidCall` (the tool exists, belongs to the agent's role and the arguments match its schema) or
`InvalidCall` (with the `ToolCallInvalid` kind and the errors the model is shown). Only a
`ValidCall` can be run. Running asks the run's approver where the tool needs approval, enforces the
tool's timeout, formats the result, and emits the `tool.*` events; a failing tool becomes a tool
error for the model, while a run limit hit inside a tool ends the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import anyio

from rolepool.core import LimitExceeded, RunContext, ToolCall, ToolResult, new_span_id
from rolepool.core.events import ToolCallInvalid, ToolCallParsed, ToolFinished, ToolStarted
from rolepool.runtime.approval import ApprovalRequest, ask_approval
from rolepool.runtime.failures import first_leaf
from rolepool.runtime.replay import ResumeDiverged
from rolepool.runtime.run import RunScope
from rolepool.tools.results import format_result
from rolepool.tools.tool import Tool

InvalidKind = Literal["unknown_tool", "forbidden", "schema"]


@dataclass(frozen=True)
class ValidCall:
    """A call that passed every check, with the tool that will run it and its span."""

    call: ToolCall
    tool: Tool
    span_id: str


@dataclass(frozen=True)
class InvalidCall:
    """A call that is never run: why (`kind`) and what the model is told (`errors`)."""

    call: ToolCall
    kind: InvalidKind
    errors: list[str]
    span_id: str

    def result(self) -> ToolResult:
        """The tool message the model gets in place of a result."""
        return ToolResult(
            call_id=self.call.id,
            name=self.call.name,
            error="invalid call, not executed: "
            + "; ".join(self.errors)
            + ". Fix the call and try again.",
        )


CheckedCall = ValidCall | InvalidCall


@dataclass
class ToolCalls:
    """Checks and runs one agent's tool calls inside a run; `AgentLoop` owns one."""

    scope: RunScope
    agent: str
    role: str
    parent_id: str
    """The agent's span: every call's span nests under it."""
    tools: dict[str, Tool]
    """The agent's tools by name."""
    forbidden: frozenset[str]
    """Other roles' tools: calling one is `forbidden` rather than `unknown_tool`."""

    def _base(self) -> dict[str, object]:
        return {"run_id": self.scope.run_id, "parent_id": self.parent_id, "agent": self.agent}

    def check(self, call: ToolCall, attempt: int) -> CheckedCall:
        """Check one call and emit `tool.call.parsed` or `tool.call.invalid` for it."""
        span = new_span_id()
        tool = self.tools.get(call.name)
        item: CheckedCall
        if tool is None:
            kind: InvalidKind = "forbidden" if call.name in self.forbidden else "unknown_tool"
            reason = (
                f"tool {call.name!r} belongs to another role"
                if kind == "forbidden"
                else f"there is no tool named {call.name!r}"
            )
            errors = [f"{reason}; available: {', '.join(self.tools)}"]
            item = InvalidCall(call, kind, errors, span)
        else:
            issues = tool.validate(call.arguments)
            item = (
                InvalidCall(call, "schema", [str(i) for i in issues], span)
                if issues
                else ValidCall(call, tool, span)
            )
        where = {**self._base(), "span_id": span, "call_id": call.id, "tool": call.name}
        if isinstance(item, ValidCall):
            self.scope.emit(ToolCallParsed(**where, arguments=call.arguments, attempt=attempt))
        else:
            self.scope.emit(
                ToolCallInvalid(**where, kind=item.kind, errors=item.errors, attempt=attempt)
            )
        return item

    async def run(self, calls: list[ValidCall]) -> dict[str, ToolResult]:
        """Run one turn's valid calls concurrently; every call gets a result. A limit hit inside
        a tool (a workflow step over budget) ends the run, unwrapped from the group."""
        results: dict[str, ToolResult] = {}
        if len(calls) == 1:  # the common case: no task group
            await self._run_one(calls[0], results)
            return results
        try:
            async with anyio.create_task_group() as tg:
                for item in calls:
                    tg.start_soon(self._run_one, item, results)
        except BaseExceptionGroup as group:
            raise first_leaf(group) from None
        return results

    async def _approved(self, item: ValidCall, results: dict[str, ToolResult]) -> bool:
        """Ask the run's approver; a refused call gets its tool error and closes its span."""
        call = item.call
        request = ApprovalRequest(
            run_id=self.scope.run_id,
            agent=self.agent,
            role=self.role,
            tool=call.name,
            call_id=call.id,
            arguments=dict(call.arguments),
        )
        decision = await ask_approval(self.scope.approver, request, self.scope.emit, item.span_id)
        if decision.approved:
            return True
        error = f"not executed: the call was refused ({decision.reason or 'no reason given'})"
        results[call.id] = ToolResult(call_id=call.id, name=call.name, error=error)
        self.scope.emit(
            ToolFinished(
                **self._base(), span_id=item.span_id, call_id=call.id, tool=call.name, error=error
            )
        )
        return False

    async def _run_one(self, item: ValidCall, results: dict[str, ToolResult]) -> None:
        replay = self.scope.replay  # a resumed run: a stored outcome stands, nothing runs twice
        if replay is not None and not item.tool.nests_agents:
            stored = replay.tool_result(item.call, item.span_id)
            if stored is not None:
                results[item.call.id] = stored
                self._finish(item, time.perf_counter(), stored.content, stored.error)
                return
        if item.tool.needs_approval and not await self._approved(item, results):
            return
        if item.tool.nests_agents:  # a workflow step: bounded by the workflow, not by slots
            await self._execute(item, results)
            return
        slots = self.scope.tool_slots  # calls past max_parallel_tools wait here
        try:  # a free slot is taken without a checkpoint: no yield to the loop per call
            slots.acquire_nowait()
        except anyio.WouldBlock:
            await slots.acquire()
        try:
            await self._execute(item, results)
        finally:
            slots.release()

    async def _execute(self, item: ValidCall, results: dict[str, ToolResult]) -> None:
        call, tool, span = item.call, item.tool, item.span_id
        self.scope.emit(
            ToolStarted(
                **self._base(), span_id=span, call_id=call.id, tool=call.name, server=tool.server
            )
        )
        timeout = tool.timeout or self.scope.limits.tool_timeout
        ctx = RunContext(
            run_id=self.scope.run_id,
            agent=self.agent,
            role=self.role,
            call_id=call.id,
            workspace=self.scope.workspace,
            deps=self.scope.deps,
            extra={"span_id": span},  # a workflow step nests its agent under this call
        )
        started = time.perf_counter()
        content, error = "", None
        try:
            with anyio.move_on_after(timeout) as timer:
                value = await tool.call(call.arguments, ctx)
                content = format_result(value, max_chars=self.scope.limits.max_result_chars)
            if timer.cancel_called:  # also when the tool swallowed its cancellation and returned
                content, error = "", f"timed out after {timeout:g}s"
        except (LimitExceeded, ResumeDiverged) as exc:  # these end the run, even inside a tool
            self._finish(item, started, "", f"{type(exc).__name__}: {exc}")
            raise
        except (Exception, SystemExit) as exc:  # a failing tool is reported, never fatal
            error = f"{type(exc).__name__}: {exc}"
        except BaseException:  # cancelled: the run is ending (a limit hit by another call, ...)
            self._finish(item, started, "", "cancelled: the run ended before the call finished")
            raise
        results[call.id] = ToolResult(call_id=call.id, name=call.name, content=content, error=error)
        self._finish(item, started, content, error)

    def _finish(self, item: ValidCall, started: float, content: str, error: str | None) -> None:
        self.scope.emit(
            ToolFinished(
                **self._base(),
                span_id=item.span_id,
                call_id=item.call.id,
                tool=item.call.name,
                duration=time.perf_counter() - started,
                result=content[:2000],
                full_result=content if len(content) > 2000 else None,
                error=error,
            )
        )
