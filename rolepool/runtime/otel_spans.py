"""OpenTelemetry spans from a run's events, in the GenAI semantic conventions (`otel.py` wires
this listener to runs and builds the tracer provider).

The event stream stays the source of truth; this is one more listener on it. Span per event span:

* the run: `invoke_workflow {workflow}` for workflows, else `rolepool.run {agent}` (a run of one
  agent is not a workflow, and the conventions ask not to report one then);
* each agent: `invoke_agent {agent}`; each model call: `chat {model}`; each tool call, valid or
  not: `execute_tool {tool}`. An invalid call was never executed: its span has zero length, error
  status and the validation errors, so backends count it with the tool's other calls.
* pool routing, failover and breaker changes: span events on the model call they belong to.

Times come from the events' `ts`, not from when the listener ran, so spans replayed from the
store (`export_events`) are placed exactly like live ones. Parents come from `parent_id`; the run
span's parent is whatever OTel span is current when the run starts, so a run inside an instrumented
web request nests under it.

Privacy: prompts, completions, tool arguments and results are recorded only with
`record_content=True`. Validation and tool error messages are always recorded: operators need
them, but they can quote argument values.

`gen_ai.provider.name` is `rolepool`: the events do not say whether a worker was in-process or an
HTTP server, and the pool, not the caller, picks the model. For the same reason
`gen_ai.request.model` is the model that answered (as `gen_ai.response.model`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from rolepool.core import Event
from rolepool.core import events as ev
from rolepool.runtime.expert_health import summarize_expert_load

log = logging.getLogger(__name__)

PROVIDER = "rolepool"
_CONTENT_LIMIT = 8000
_NS = 1_000_000_000


def _ns(ts: float) -> int:
    return int(ts * _NS)


def _clip(text: str) -> str:
    return text if len(text) <= _CONTENT_LIMIT else text[: _CONTENT_LIMIT - 1] + "…"


def _messages(role: str, text: str) -> str:
    """`gen_ai.*.messages` in the conventions' JSON, as a string: OTel attributes are flat."""
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": _clip(text)}]}])


def _error_type(message: str) -> str:
    """The exception class from "Type: message", else the conventions' fallback `_OTHER`."""
    head = message.split(":", 1)[0].strip()
    return head if head.isidentifier() else "_OTHER"


TTFT_METRIC = "gen_ai.server.time_to_first_token"
"""The OTel GenAI semantic conventions' histogram of seconds to the first token, recorded for
every model call that streamed (HTTP workers with `stream`)."""


class OTelExporter:
    """An `EventStream` listener that turns one run's events into OTel spans as they happen."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        record_content: bool = False,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = tracer
        self.record_content = record_content
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("rolepool")
        self.time_to_first_token = meter.create_histogram(
            TTFT_METRIC, unit="s", description="Time to the first token of a streamed answer"
        )
        self._open: dict[str, Span] = {}  # rolepool span id -> open OTel span
        self._failed = False

    def __call__(self, event: Event) -> None:
        """A listener must not raise: telemetry trouble never breaks a run."""
        try:
            self.handle(event)
        except Exception:
            if not self._failed:
                log.exception("rolepool OTel export failed; later errors of this run are silent")
            self._failed = True

    def handle(self, event: Event) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event)

    # -- span bookkeeping ----------------------------------------------------------------------

    def _start(
        self, event: Event, name: str, attrs: dict[str, Any], kind: SpanKind = SpanKind.INTERNAL
    ) -> Span:
        parent = self._open.get(event.parent_id or "")
        context = trace.set_span_in_context(parent) if parent is not None else None
        attrs = {**attrs, "rolepool.run_id": event.run_id, "rolepool.span_id": event.span_id}
        if event.tenant is not None:
            attrs["rolepool.tenant"] = event.tenant
        span = self.tracer.start_span(
            name, context=context, kind=kind, attributes=attrs, start_time=_ns(event.ts)
        )
        self._open[event.span_id] = span
        return span

    def _end(self, event: Event, error: str | None = None, error_type: str | None = None) -> None:
        span = self._open.pop(event.span_id, None)
        if span is None:
            return
        if error:
            span.set_attribute("error.type", error_type or _error_type(error))
            span.set_status(Status(StatusCode.ERROR, error[:500]))
        span.end(end_time=_ns(event.ts))

    def _content(self, span: Span, key: str, value: str) -> None:
        if self.record_content:
            span.set_attribute(key, value)

    # -- run and agent -------------------------------------------------------------------------

    def _run_started(self, event: ev.RunStarted) -> None:
        attrs: dict[str, Any] = {"gen_ai.conversation.id": event.run_id}
        if event.workflow:
            name = f"invoke_workflow {event.workflow}"
            attrs["gen_ai.operation.name"] = "invoke_workflow"
            attrs["gen_ai.workflow.name"] = event.workflow
        else:
            name = f"rolepool.run {event.agent}" if event.agent else "rolepool.run"
        span = self._start(event, name, attrs)
        self._content(span, "gen_ai.input.messages", _messages("user", event.task))

    def _run_ended(self, event: ev.RunFinished | ev.RunFailed) -> None:
        span = self._open.get(event.span_id)
        if span is None:
            return
        for child_id in [k for k in self._open if k != event.span_id]:  # cancelled, never closed
            child = self._open.pop(child_id)
            child.set_status(Status(StatusCode.ERROR, "the run ended before this span did"))
            child.end(end_time=_ns(event.ts))
        if isinstance(event, ev.RunFinished):
            span.set_attribute("gen_ai.usage.input_tokens", event.usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", event.usage.completion_tokens)
            self._content(span, "gen_ai.output.messages", _messages("assistant", event.output))
            self._end(event)
        else:
            self._end(event, f"{event.error_type}: {event.message}", event.error_type)

    def _agent_started(self, event: ev.AgentStarted) -> None:
        attrs = _operation_attributes("invoke_agent", event)
        span = self._start(event, f"invoke_agent {event.agent}", attrs)
        self._content(span, "gen_ai.input.messages", _messages("user", event.task))

    def _agent_finished(self, event: ev.AgentFinished) -> None:
        span = self._open.get(event.span_id)
        if span is None:
            return
        span.set_attribute("gen_ai.usage.input_tokens", event.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", event.usage.completion_tokens)
        span.set_attribute("rolepool.turns", event.turns)
        if event.output is not None:
            self._content(span, "gen_ai.output.messages", _messages("assistant", event.output))
        self._end(event, event.error)

    # -- model calls ---------------------------------------------------------------------------

    def _model_requested(self, event: ev.ModelRequested) -> None:
        attrs = _operation_attributes("chat", event) | {
            "rolepool.turn": event.turn,
            "rolepool.request.messages": event.message_count,
        }
        if event.tools:
            attrs["rolepool.request.tools"] = list(event.tools)
        if event.elided:
            attrs["rolepool.request.elided"] = event.elided
        self._start(event, "chat", attrs, SpanKind.CLIENT)

    def _model_completed(self, event: ev.ModelCompleted) -> None:
        span = self._open.get(event.span_id)
        if span is None:
            return
        if event.model:
            span.update_name(f"chat {event.model}")
            span.set_attribute("gen_ai.request.model", event.model)
            span.set_attribute("gen_ai.response.model", event.model)
        span.set_attributes(_model_attributes(event))
        if event.text:
            self._content(span, "gen_ai.output.messages", _messages("assistant", event.text))
        if event.reasoning:
            self._content(span, "rolepool.reasoning", event.reasoning)
        if event.time_to_first_token is not None:
            self.time_to_first_token.record(
                event.time_to_first_token,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": PROVIDER,
                    "gen_ai.response.model": event.model,
                    "rolepool.worker": event.worker,
                },
            )
        self._end(event, event.error, "WorkerError" if event.error else None)

    def _pool_event(self, event: ev.PoolRouted | ev.PoolFailover | ev.BreakerChanged) -> None:
        """Pool decisions are moments inside a model call, so span events rather than spans."""
        span = self._open.get(event.parent_id or "") or next(iter(self._open.values()), None)
        if span is None:
            return
        attrs = event.model_dump(exclude={"run_id", "span_id", "parent_id", "ts", "seq", "type"})
        attrs = {f"rolepool.{k}": v for k, v in attrs.items() if v is not None}
        span.add_event(f"rolepool.{event.type}", attributes=attrs, timestamp=_ns(event.ts))

    # -- tool calls ----------------------------------------------------------------------------

    def _tool_parsed(self, event: ev.ToolCallParsed) -> None:
        span = self._start(event, f"execute_tool {event.tool}", _tool_attributes(event))
        span.set_attribute("rolepool.validation.outcome", "valid")
        span.set_attribute("rolepool.attempt", event.attempt)
        self._content(span, "gen_ai.tool.call.arguments", json.dumps(event.arguments))

    def _tool_invalid(self, event: ev.ToolCallInvalid) -> None:
        name = f"execute_tool {event.tool}" if event.tool else "execute_tool"
        span = self._start(event, name, _tool_attributes(event))
        span.set_attribute("rolepool.validation.outcome", event.kind)
        span.set_attribute("rolepool.validation.errors", [e[:500] for e in event.errors])
        span.set_attribute("rolepool.attempt", event.attempt)
        if event.raw:
            self._content(span, "rolepool.tool.call.raw", _clip(event.raw))
        self._end(event, "; ".join(event.errors) or event.kind, f"invalid_call.{event.kind}")

    def _approval(self, event: ev.ApprovalRequested | ev.ApprovalResolved) -> None:
        """The wait for a human is a moment inside the tool call it holds up (same span id)."""
        span = self._open.get(event.span_id)
        if span is None:
            return
        attrs: dict[str, Any] = {
            "gen_ai.tool.name": event.tool,
            "gen_ai.tool.call.id": event.call_id,
        }
        if isinstance(event, ev.ApprovalResolved):
            attrs.update({"rolepool.approved": event.approved, "rolepool.waited_s": event.waited})
            if event.reason:
                attrs["rolepool.reason"] = event.reason
        elif self.record_content:
            attrs["gen_ai.tool.call.arguments"] = json.dumps(event.arguments)
        span.add_event(f"rolepool.{event.type}", attributes=attrs, timestamp=_ns(event.ts))

    def _tool_started(self, event: ev.ToolStarted) -> None:
        if event.span_id not in self._open:  # a tool started without a parse event
            self._start(event, f"execute_tool {event.tool}", _tool_attributes(event))
        if event.server:
            self._open[event.span_id].set_attribute("rolepool.mcp.server", event.server)

    def _tool_finished(self, event: ev.ToolFinished) -> None:
        span = self._open.get(event.span_id)
        if span is None:
            return
        span.set_attribute("rolepool.tool.duration", event.duration)
        if event.result:
            self._content(span, "gen_ai.tool.call.result", _clip(event.result))
        self._end(event, event.error)


def _operation_attributes(
    operation: str, event: ev.AgentStarted | ev.ModelRequested
) -> dict[str, Any]:
    """What an agent's span and its model calls' spans share."""
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.agent.name": event.agent,
        "gen_ai.conversation.id": event.run_id,
        "rolepool.role": event.role,
    }


def _model_attributes(event: ev.ModelCompleted) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.usage.input_tokens": event.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": event.usage.completion_tokens,
        "rolepool.worker": event.worker,
        "rolepool.architecture": event.architecture,
        "rolepool.latency": event.latency,
    }
    if event.policy_version:
        attrs["rolepool.policy_version"] = event.policy_version
    if event.response_id:
        attrs["gen_ai.response.id"] = event.response_id
    if event.cached_prompt_tokens is not None:
        attrs["gen_ai.usage.cache_read.input_tokens"] = event.cached_prompt_tokens
    if event.time_to_first_token is not None:
        attrs["rolepool.time_to_first_token"] = event.time_to_first_token
    summary = summarize_expert_load(event.expert_load)
    if summary is not None:
        attrs |= {
            "rolepool.expert_load.layers": summary.layers,
            "rolepool.expert_load.experts": summary.experts,
            "rolepool.expert_load.entropy_mean": summary.entropy_mean,
            "rolepool.expert_load.entropy_min": summary.entropy_min,
            "rolepool.expert_load.max_over_mean_max": summary.max_over_mean_max,
            "rolepool.expert_load.entropy": summary.entropy,
            "rolepool.expert_load.max_over_mean": summary.max_over_mean,
        }
    return attrs


def _tool_attributes(event: ev.ToolCallParsed | ev.ToolCallInvalid | ev.ToolStarted) -> dict:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.agent.name": event.agent,
        "gen_ai.tool.type": "function",
    }
    if event.tool:
        attrs["gen_ai.tool.name"] = event.tool
    if event.call_id:
        attrs["gen_ai.tool.call.id"] = event.call_id
    return attrs


_HANDLERS: dict[str, Callable[[OTelExporter, Any], None]] = {
    "run.started": OTelExporter._run_started,
    "run.finished": OTelExporter._run_ended,
    "run.failed": OTelExporter._run_ended,
    "agent.started": OTelExporter._agent_started,
    "agent.finished": OTelExporter._agent_finished,
    "model.requested": OTelExporter._model_requested,
    "model.completed": OTelExporter._model_completed,
    "approval.requested": OTelExporter._approval,
    "approval.resolved": OTelExporter._approval,
    "tool.call.parsed": OTelExporter._tool_parsed,
    "tool.call.invalid": OTelExporter._tool_invalid,
    "tool.started": OTelExporter._tool_started,
    "tool.finished": OTelExporter._tool_finished,
    "pool.routed": OTelExporter._pool_event,
    "pool.failover": OTelExporter._pool_event,
    "pool.breaker": OTelExporter._pool_event,
}
