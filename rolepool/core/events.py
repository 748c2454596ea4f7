"""The typed events every run emits: a pydantic union discriminated on `type`.

Spans: a run, an agent, a model call and a tool call each have a `span_id`; the events that open and
close a span share it and carry the parent span in `parent_id`. `seq` is the event's position in
its run, assigned by the event stream, so consumers can detect gaps and resume.

Every field carries an attribute docstring; with `use_attribute_docstrings` they are also the
fields' descriptions in the JSON Schema (`EVENT_ADAPTER.json_schema()`). Events are stored as JSON,
so a renamed field keeps accepting its old name on read (`ModelRequested.message_count`).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter

from rolepool.core.messages import ToolCall
from rolepool.core.requests import Usage


def new_span_id() -> str:
    return uuid.uuid4().hex[:16]


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:20]


class EventBase(BaseModel):
    """What every event has: where it belongs (run, span, parent span), when, and its place."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    run_id: str
    """The run this event belongs to."""
    span_id: str = Field(default_factory=new_span_id)
    """The span (run, agent, model call or tool call) this event opens, closes or happens in."""
    parent_id: str | None = None
    """The span this one nests under; None for a run's own span."""
    ts: float = Field(default_factory=time.time)
    """When it happened, in seconds since the epoch (wall clock)."""
    seq: int = -1
    """Its position in the run, from 0, set by the event stream; -1 before it is emitted."""
    tenant: str | None = None
    """The tenant the run belongs to (`tenant=` on a run, or serve's keys file), set by the
    event stream on every event of the run; None for a run without one."""


class RunStarted(EventBase):
    """A run began: the first event of every run."""

    type: Literal["run.started"] = "run.started"
    task: str
    """The task the run was given, as text."""
    agent: str | None = None
    """The agent's name for a run of one agent (None for a workflow)."""
    workflow: str | None = None
    """The workflow's name for a workflow run (None for a run of one agent)."""
    workspace: str | None = None
    """The run's workspace directory, where it has one (a resumed run works in the same one)."""
    resumed_from: str | None = None
    """The interrupted run this run continues (`Workflow.resume`); None for a fresh run."""


class RunFinished(EventBase):
    """A run reached its final answer: one of the two last events of a run."""

    type: Literal["run.finished"] = "run.finished"
    output: str
    """The run's final answer."""
    usage: Usage = Field(default_factory=Usage)
    """Tokens used by every model call of the run."""
    duration: float = 0.0
    """Seconds from the run's start to its end."""


class RunFailed(EventBase):
    """A run ended without an answer (an error, a limit, a cancellation): its last event."""

    type: Literal["run.failed"] = "run.failed"
    error_type: str
    """The exception's class name, e.g. `MaxTurnsExceeded` or `RunCancelled`."""
    message: str
    """The exception's message (its class name when it had none)."""
    duration: float = 0.0
    """Seconds from the run's start to its end."""


class AgentStarted(EventBase):
    """An agent's loop began inside a run (a workflow starts one per step)."""

    type: Literal["agent.started"] = "agent.started"
    agent: str
    """The agent's name."""
    role: str
    """The agent's role, which the pool routes on (planner, coder, search, writer, ...)."""
    task: str = ""
    """The latest user message the agent starts from."""


class AgentFinished(EventBase):
    """An agent's loop ended, with its answer or the error that ended it."""

    type: Literal["agent.finished"] = "agent.finished"
    agent: str
    """The agent's name."""
    role: str
    """The agent's role."""
    output: str | None = None
    """The agent's final answer; None when it ended with an error."""
    turns: int = 0
    """Model turns taken (the turn it was in when it ended)."""
    usage: Usage = Field(default_factory=Usage)
    """Tokens this agent's model calls used."""
    error: str | None = None
    """"ErrorType: message" of what ended the agent; None when it answered."""
    duration: float = 0.0
    """Seconds the agent's loop ran."""


class ModelRequested(EventBase):
    """An agent asked the model for its next reply: opens the model call's span."""

    type: Literal["model.requested"] = "model.requested"
    agent: str
    """The asking agent's name."""
    role: str
    """The asking agent's role, which the pool routes on."""
    turn: int
    """The agent's turn, from 1; a prompt asked again after a refusal keeps its turn."""
    message_count: int = Field(validation_alias=AliasChoices("message_count", "messages"))
    """How many messages the prompt holds. Stored events before the rename call it `messages`,
    which is still read."""
    tools: list[str] = Field(default_factory=list)
    """Names of the tools offered to the model."""
    elided: int = 0
    """Oldest tool results this request shows as a marker so the prompt fits the context."""
    prompt_digest: str | None = None
    """A hash of what the model is asked (messages, tools, sampling, role, agent): a resumed run
    checks that it asks the same before it answers from the stored reply. None in old events."""


class ModelCompleted(EventBase):
    """The model answered, or the call failed (`error`): closes the model call's span."""

    type: Literal["model.completed"] = "model.completed"
    agent: str
    """The asking agent's name."""
    role: str
    """The asking agent's role."""
    turn: int
    """The agent's turn this answer belongs to."""
    worker: str = ""
    """The worker that answered (a pool member's name); empty when the call failed."""
    model: str = ""
    """The model name the worker reports."""
    architecture: str = "unknown"
    """The answering model's architecture: `moe`, `dense` or `unknown`."""
    policy_version: str | None = None
    """The routing policy version of the pool that chose the worker (None without a pool)."""
    usage: Usage = Field(default_factory=Usage)
    """Prompt and completion tokens of this call."""
    latency: float = 0.0
    """Seconds the call took (the worker's own figure where it gives one)."""
    text: str = ""
    """The reply's raw text, before tool calls are parsed out of it."""
    expert_load: list[list[int]] | None = None
    """Tokens each expert processed, `[layer][expert]` (MoE workers only)."""
    error: str | None = None
    """Why the call failed; None when the model answered."""
    tool_calls: list[ToolCall] | None = None
    """Calls the worker parsed itself (OpenAI-compatible servers), kept so a resumed run can
    replay the reply whole; None when the loop parses `text` (and in old events)."""
    unreadable: str | None = None
    """Why the reply could not be read, when the worker or the loop's check of its calls said
    so (a call stored in `tool_calls` then has its arguments left out)."""
    replayed: bool = False
    """The reply came from the stored events of the run this one resumes, not from a model."""
    reasoning: str | None = None
    """The model's reasoning text, where the server returned it apart from the reply."""
    time_to_first_token: float | None = None
    """Seconds to the first streamed token (streaming HTTP workers); None otherwise."""
    cached_prompt_tokens: int | None = None
    """Prompt tokens the server took from its prefix cache, where it said."""
    response_id: str | None = None
    """The serving API's id for this answer."""


class ToolCallParsed(EventBase):
    """A tool call passed every check and will run: opens the tool call's span."""

    type: Literal["tool.call.parsed"] = "tool.call.parsed"
    agent: str
    """The calling agent's name."""
    call_id: str
    """The call's id (unique within its turn), which its result answers."""
    tool: str
    """The tool's name."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The call's arguments, as the model gave them."""
    attempt: int = 0
    """Consecutive invalid turns before this one: 0 means valid at the first try."""


class ToolCallInvalid(EventBase):
    """A call that was not executed. `kind`: parse, unknown_tool, forbidden or schema."""

    type: Literal["tool.call.invalid"] = "tool.call.invalid"
    agent: str
    """The calling agent's name."""
    kind: Literal["parse", "unknown_tool", "forbidden", "schema"]
    """Why: the reply could not be parsed, no such tool, another role's tool, or the arguments
    break the tool's schema."""
    call_id: str | None = None
    """The call's id; None when the reply could not be parsed into calls."""
    tool: str | None = None
    """The tool the model named; None when the reply could not be parsed."""
    errors: list[str] = Field(default_factory=list)
    """What was wrong, as the model is told it."""
    raw: str = ""
    """The unparseable reply's text (first 4,000 characters; `parse` only)."""
    attempt: int = 0
    """Consecutive invalid turns before this one."""


class ToolStarted(EventBase):
    """A valid (and, where needed, approved) tool call began to run."""

    type: Literal["tool.started"] = "tool.started"
    agent: str
    """The calling agent's name."""
    call_id: str
    """The call's id."""
    tool: str
    """The tool's name."""
    server: str | None = None
    """The MCP server the tool comes from; None for a Python tool."""


class ToolFinished(EventBase):
    """A tool call ended: its result, its error, or its refusal by the approver."""

    type: Literal["tool.finished"] = "tool.finished"
    agent: str
    """The calling agent's name."""
    call_id: str
    """The call's id."""
    tool: str
    """The tool's name."""
    duration: float = 0.0
    """Seconds the tool ran (0 when it was refused before running)."""
    result: str = ""
    """The formatted result the model sees (first 2,000 characters)."""
    error: str | None = None
    """The tool error the model sees instead of a result; None on success."""
    full_result: str | None = None
    """The whole result when `result` is cut at 2,000 characters, so a resumed run can replay
    it exactly; None otherwise (and in old events)."""
    replayed: bool = False
    """The result came from the stored events of the run this one resumes; the tool did not
    run again."""


class ApprovalRequested(EventBase):
    """A call to a tool that needs approval is waiting for the run's approver. It shares the tool
    call's `span_id`, so traces show the wait inside the call it holds up."""

    type: Literal["approval.requested"] = "approval.requested"
    agent: str
    """The calling agent's name."""
    role: str
    """The calling agent's role."""
    call_id: str
    """The call's id."""
    tool: str
    """The tool's name."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The arguments the approver is asked about."""


class ApprovalResolved(EventBase):
    """The approver allowed or refused the call (`approved=False`: it was not executed)."""

    type: Literal["approval.resolved"] = "approval.resolved"
    agent: str
    """The calling agent's name."""
    call_id: str
    """The call's id."""
    tool: str
    """The tool's name."""
    approved: bool
    """Whether the call may run."""
    reason: str = ""
    """The approver's reason, if it gave one."""
    waited: float = 0.0
    """Seconds the call waited for the decision."""


class PoolRouted(EventBase):
    """A pool chose a worker for a request: the audit trail of which model and policy served it.

    `choice` says how: "primary" (the role's weighted choices), "fallback", or "pinned" (the
    request named its worker, as an HTTP client naming a model does)."""

    type: Literal["pool.routed"] = "pool.routed"
    role: str
    """The request's role, which the policy routes on."""
    worker: str
    """The worker chosen."""
    policy_version: str
    """The routing policy's version."""
    choice: Literal["primary", "fallback", "pinned"] = "primary"
    """How the worker was chosen (see the class docstring)."""


class PoolFailover(EventBase):
    """A worker failed a request and the pool moved it to the next choice."""

    type: Literal["pool.failover"] = "pool.failover"
    role: str
    """The request's role."""
    from_worker: str
    """The worker that failed the request."""
    to_worker: str | None
    """The worker tried next; None when no choice was left."""
    error: str
    """Why the failed worker did not serve it."""


class BreakerChanged(EventBase):
    """A worker's circuit breaker changed state."""

    type: Literal["pool.breaker"] = "pool.breaker"
    worker: str
    """The worker whose breaker changed."""
    state: Literal["closed", "open", "half_open"]
    """The new state: `open` turns requests away, `half_open` lets a trial through."""
    reason: str = ""
    """What changed it, e.g. "5 failures"."""


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
