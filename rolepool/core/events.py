"""The typed events every run emits: a pydantic union discriminated on `type`.

Spans: a run, an agent, a model call and a tool call each have a `span_id`; the events that open and
close a span share it and carry the parent span in `parent_id`. `seq` is the event's position in
its run, assigned by the event stream, so consumers can detect gaps and resume.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from rolepool.core.requests import Usage


def new_span_id() -> str:
    return uuid.uuid4().hex[:16]


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:20]


class EventBase(BaseModel):
    run_id: str
    span_id: str = Field(default_factory=new_span_id)
    parent_id: str | None = None
    ts: float = Field(default_factory=time.time)
    seq: int = -1


class RunStarted(EventBase):
    type: Literal["run.started"] = "run.started"
    task: str
    agent: str | None = None
    workflow: str | None = None


class RunFinished(EventBase):
    type: Literal["run.finished"] = "run.finished"
    output: str
    usage: Usage = Field(default_factory=Usage)
    duration: float = 0.0


class RunFailed(EventBase):
    type: Literal["run.failed"] = "run.failed"
    error_type: str
    message: str
    duration: float = 0.0


class AgentStarted(EventBase):
    type: Literal["agent.started"] = "agent.started"
    agent: str
    role: str
    task: str = ""


class AgentFinished(EventBase):
    type: Literal["agent.finished"] = "agent.finished"
    agent: str
    role: str
    output: str | None = None
    turns: int = 0
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    duration: float = 0.0


class ModelRequested(EventBase):
    type: Literal["model.requested"] = "model.requested"
    agent: str
    role: str
    turn: int
    messages: int
    tools: list[str] = Field(default_factory=list)
    elided: int = 0
    """Oldest tool results this request shows as a marker so the prompt fits the context."""


class ModelCompleted(EventBase):
    type: Literal["model.completed"] = "model.completed"
    agent: str
    role: str
    turn: int
    worker: str = ""
    model: str = ""
    architecture: str = "unknown"
    policy_version: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency: float = 0.0
    text: str = ""
    expert_load: list[list[int]] | None = None
    error: str | None = None


class ToolCallParsed(EventBase):
    type: Literal["tool.call.parsed"] = "tool.call.parsed"
    agent: str
    call_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 0


class ToolCallInvalid(EventBase):
    """A call that was not executed. `kind`: parse, unknown_tool, forbidden or schema."""

    type: Literal["tool.call.invalid"] = "tool.call.invalid"
    agent: str
    kind: Literal["parse", "unknown_tool", "forbidden", "schema"]
    call_id: str | None = None
    tool: str | None = None
    errors: list[str] = Field(default_factory=list)
    raw: str = ""
    attempt: int = 0


class ToolStarted(EventBase):
    type: Literal["tool.started"] = "tool.started"
    agent: str
    call_id: str
    tool: str


class ToolFinished(EventBase):
    type: Literal["tool.finished"] = "tool.finished"
    agent: str
    call_id: str
    tool: str
    duration: float = 0.0
    result: str = ""
    error: str | None = None


class ApprovalRequested(EventBase):
    """A call to a tool that needs approval is waiting for the run's approver. It shares the tool
    call's `span_id`, so traces show the wait inside the call it holds up."""

    type: Literal["approval.requested"] = "approval.requested"
    agent: str
    role: str
    call_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ApprovalResolved(EventBase):
    """The approver allowed or refused the call (`approved=False`: it was not executed)."""

    type: Literal["approval.resolved"] = "approval.resolved"
    agent: str
    call_id: str
    tool: str
    approved: bool
    reason: str = ""
    waited: float = 0.0


class PoolRouted(EventBase):
    """A pool chose a worker for a request: the audit trail of which model and policy served it.

    `choice` says how: "primary" (the role's weighted choices), "fallback", or "pinned" (the
    request named its worker, as an HTTP client naming a model does)."""

    type: Literal["pool.routed"] = "pool.routed"
    role: str
    worker: str
    policy_version: str
    choice: Literal["primary", "fallback", "pinned"] = "primary"


class PoolFailover(EventBase):
    """A worker failed a request and the pool moved it to the next choice."""

    type: Literal["pool.failover"] = "pool.failover"
    role: str
    from_worker: str
    to_worker: str | None
    error: str


class BreakerChanged(EventBase):
    """A worker's circuit breaker changed state."""

    type: Literal["pool.breaker"] = "pool.breaker"
    worker: str
    state: Literal["closed", "open", "half_open"]
    reason: str = ""


Event = Annotated[
    RunStarted
    | RunFinished
    | RunFailed
    | AgentStarted
    | AgentFinished
    | ModelRequested
    | ModelCompleted
    | ToolCallParsed
    | ToolCallInvalid
    | ToolStarted
    | ToolFinished
    | ApprovalRequested
    | ApprovalResolved
    | PoolRouted
    | PoolFailover
    | BreakerChanged,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_from_json(data: str | bytes) -> Event:
    return EVENT_ADAPTER.validate_json(data)
