"""OTel spans of a workflow: parallel steps nest under their `assign` calls, a pool failover is a
span event on the model call, an invalid call is an error span with its validation outcome."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from workflow_scripts import calls, finish, meeting_steps, role_worker

from rolepool import FunctionWorker, Workflow
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.runtime.otel import disable_otel, enable_otel

pytestmark = pytest.mark.anyio


@pytest.fixture
def memory():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_otel(provider)
    yield exporter
    disable_otel()


def planner(request):
    tool_messages = [m for m in request.messages if m.role == "tool"]
    if not tool_messages:
        return calls(("assign", {"role": "auditor", "task": "x"}))  # invalid: unknown role
    if len(tool_messages) == 1:
        return calls(
            ("assign", {"role": "coder", "task": "print 2 + 3"}),
            ("assign", {"role": "search", "task": "routing policy"}),
        )
    return finish("; ".join(m.content for m in tool_messages[1:]))


def failing_pool(up: FunctionWorker) -> Pool:
    def down(request):
        raise RuntimeError("down for maintenance")

    route = Route(choices=[Choice(worker="down")], fallbacks=["up"])
    workers = {"down": FunctionWorker(down, name="down"), "up": up}
    return Pool(workers, RoutingPolicy(version="otel-1", default=route))


async def test_workflow_spans(memory, tmp_path):
    up = role_worker(planner, **meeting_steps("coder", "search"))
    result = await Workflow().run("Go.", worker=failing_pool(up), workspace=tmp_path)
    spans = memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def parent(span):
        return by_id[span.parent.span_id] if span.parent is not None else None

    def named(name):
        return [s for s in spans if s.name == name]

    (root,) = named("invoke_workflow default")
    assert root.parent is None and root.attributes["gen_ai.workflow.name"] == "default"
    assert root.attributes["gen_ai.conversation.id"] == result.run_id
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    (plan,) = named("invoke_agent planner")
    (write,) = named("invoke_agent writer")
    assert parent(plan) is root and parent(write) is root
    assert plan.end_time <= write.start_time  # compose after the plan

    assigns = named("execute_tool assign")
    invalid = [s for s in assigns if s.attributes["rolepool.validation.outcome"] != "valid"]
    valid = [s for s in assigns if s.attributes["rolepool.validation.outcome"] == "valid"]
    assert len(invalid) == 1 and len(valid) == 2
    assert invalid[0].attributes["rolepool.validation.outcome"] == "schema"
    assert invalid[0].status.status_code == StatusCode.ERROR
    assert "auditor" in invalid[0].attributes["rolepool.validation.errors"][0]
    assert all(parent(s) is plan for s in assigns)

    steps = named("invoke_agent coder") + named("invoke_agent search")
    assert len(steps) == 2
    assert {parent(s).context.span_id for s in steps} == {s.context.span_id for s in valid}
    assert max(s.start_time for s in steps) <= min(s.end_time for s in steps)  # in parallel
    assert steps[0].attributes["rolepool.role"] in ("coder", "search")
    for tool_name, role in (("run_python", "coder"), ("search_docs", "search")):
        (span,) = named(f"execute_tool {tool_name}")
        assert parent(span).name == f"invoke_agent {role}"

    chats = [s for s in spans if s.name.startswith("chat")]
    assert chats and all(parent(s).name.startswith("invoke_agent") for s in chats)
    for chat in chats:
        assert chat.attributes["rolepool.worker"] == "up"
        failovers = [e for e in chat.events if e.name == "rolepool.pool.failover"]
        assert len(failovers) == 1 and failovers[0].attributes["rolepool.from_worker"] == "down"


async def test_approval_is_a_span_event_on_the_tool_call_it_held_up(memory, tmp_path):
    from rolepool import Agent, ScriptedWorker, ToolCall, tool

    @tool(needs_approval=True)
    def deploy(target: str) -> str:
        """Deploy to a target."""
        return f"deployed to {target}"

    worker = ScriptedWorker([ToolCall(id="d1", name="deploy", arguments={"target": "prod"}), "ok"])
    await Agent("ops", tools=[deploy]).run(
        "ship it", worker=worker, workspace=tmp_path, approver=lambda request: False
    )
    span = next(s for s in memory.get_finished_spans() if s.name == "execute_tool deploy")
    names = [e.name for e in span.events]
    assert names == ["rolepool.approval.requested", "rolepool.approval.resolved"]
    resolved = span.events[1].attributes
    assert resolved["rolepool.approved"] is False and resolved["gen_ai.tool.call.id"] == "d1"
    assert "gen_ai.tool.call.arguments" not in span.events[0].attributes  # privacy by default
    assert span.status.status_code == StatusCode.ERROR  # refused: never executed
