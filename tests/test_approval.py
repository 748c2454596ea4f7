"""Human approval: a tool that needs it pauses the call until the approver answers."""

from __future__ import annotations

import anyio
import pytest
from workflow_scripts import calls, finish, last, role_worker

from rolepool import Agent, ApprovalRequest, Decision, ScriptedWorker, ToolCall, Workflow, tool
from rolepool.runtime import EventStore

pytestmark = pytest.mark.anyio


def events_of(run_id, path):
    with EventStore(path) as store:
        return store.events(run_id)


async def test_approved_call_runs_after_the_pause(tmp_path, isolated_store):
    asked: list[ApprovalRequest] = []

    async def approver(request: ApprovalRequest) -> bool:
        asked.append(request)
        await anyio.sleep(0.05)  # the call waits for the answer
        return True

    flow = Workflow(approve={"run_python"})
    result = await flow.run("Go.", worker=role_worker(), workspace=tmp_path, approver=approver)
    assert [(a.agent, a.tool, a.arguments["code"]) for a in asked] == [
        ("coder", "run_python", "print(2 + 3)")
    ]
    events = events_of(result.run_id, isolated_store)
    kinds = [e.type for e in events if e.span_id == events_of_span(events, "run_python")]
    assert kinds == [
        "tool.call.parsed", "approval.requested", "approval.resolved", "tool.started",
        "tool.finished",
    ]  # fmt: skip
    resolved = next(e for e in events if e.type == "approval.resolved")
    assert resolved.approved and resolved.waited >= 0.04
    assert result.steps[0].answer == "5"


def events_of_span(events, tool_name):
    return next(e.span_id for e in events if e.type == "tool.call.parsed" and e.tool == tool_name)


async def test_refused_call_is_never_executed_and_the_model_is_told(tmp_path, isolated_store):
    ran: list[str] = []

    @tool(needs_approval=True)
    def delete_everything(path: str) -> str:
        """Delete a path.

        Args:
            path: What to delete.
        """
        ran.append(path)
        return "deleted"

    worker = ScriptedWorker(
        [[ToolCall(id="c1", name="delete_everything", arguments={"path": "/"})], "I stopped."]
    )
    agent = Agent("ops", "coder", tools=[delete_everything])
    result = await agent.run("clean up", worker=worker,
                             approver=lambda r: Decision(False, "not on prod"))  # fmt: skip
    assert ran == [] and result.output == "I stopped."
    told = worker.requests[1].messages[-1]
    assert told.role == "tool" and "refused (not on prod)" in told.content
    events = events_of(result.run_id, isolated_store)
    assert not any(e.type == "tool.started" for e in events)
    resolved = next(e for e in events if e.type == "approval.resolved")
    assert resolved.approved is False and resolved.reason == "not on prod"
    assert events[-1].type == "run.finished"


async def test_no_approver_refuses_and_a_broken_approver_refuses(tmp_path):
    def coder(request):
        if last(request).role == "user":
            return calls(("run_python", {"code": "print(1)"}))
        return finish(last(request).content)

    flow = Workflow(approve={"run_python"})
    result = await flow.run("Go.", worker=role_worker(coder=coder), workspace=tmp_path)
    assert "this run has no approver" in result.steps[0].answer

    def broken(request):
        raise RuntimeError("approval service down")

    result = await flow.run("Go.", worker=role_worker(coder=coder), workspace=tmp_path,
                            approver=broken)  # fmt: skip
    assert "approval service down" in result.steps[0].answer


def test_approve_must_name_a_tool_of_the_team():
    from rolepool import ConfigError

    with pytest.raises(ConfigError, match="no agent has the tools"):
        Workflow(approve={"rm_rf"})
