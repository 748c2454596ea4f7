"""Human approval of tool calls: the question the run asks and the approver that answers it.

A tool made with `needs_approval=True` pauses its agent before every call: the loop emits
`approval.requested`, awaits the run's approver, emits `approval.resolved`, and runs the call only
if it was allowed. A refused call goes back to the model as a tool error, so the run goes on.
Waiting counts towards the run's deadline: a run nobody answers ends with `DeadlineExceeded`
rather than hanging (when it has a deadline).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rolepool.core import Event
from rolepool.core.events import ApprovalRequested, ApprovalResolved


@dataclass(frozen=True)
class ApprovalRequest:
    """What the approver is asked: which agent wants to call which tool with what."""

    run_id: str
    agent: str
    role: str
    tool: str
    call_id: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """An approver may return a plain bool, or a `Decision` to tell the model why."""

    approved: bool
    reason: str = ""


Approver = Callable[[ApprovalRequest], "bool | Decision | Awaitable[bool | Decision]"]


def allow_all(request: ApprovalRequest) -> bool:
    """The approver behind `--yes`."""
    return True


async def ask(approver: Approver | None, request: ApprovalRequest) -> Decision:
    """The approver's answer as a `Decision`. No approver refuses: nobody allowed the call."""
    if approver is None:
        return Decision(False, "this run has no approver, so calls that need approval are refused")
    answer = approver(request)
    if inspect.isawaitable(answer):
        answer = await answer
    if isinstance(answer, Decision):
        return answer
    return Decision(bool(answer), "" if answer else "refused by the approver")


async def ask_approval(
    approver: Approver | None,
    request: ApprovalRequest,
    emit: Callable[[Event], object],
    span_id: str,
) -> Decision:
    """Ask with both events around the wait; an approver that raises refuses the call."""
    emit(
        ApprovalRequested(
            run_id=request.run_id,
            span_id=span_id,
            agent=request.agent,
            role=request.role,
            call_id=request.call_id,
            tool=request.tool,
            arguments=request.arguments,
        )
    )
    started = time.perf_counter()
    try:
        decision = await ask(approver, request)
    except Exception as exc:  # a broken approver must not run the call, nor kill the run
        decision = Decision(False, f"the approver failed: {type(exc).__name__}: {exc}")
    emit(
        ApprovalResolved(
            run_id=request.run_id,
            span_id=span_id,
            agent=request.agent,
            call_id=request.call_id,
            tool=request.tool,
            approved=decision.approved,
            reason=decision.reason,
            waited=time.perf_counter() - started,
        )
    )
    return decision
