"""`Workflow` on a role-aware test worker: plan, parallel steps, compose, permissions, limits."""

from __future__ import annotations

import anyio
import pytest
from workflow_scripts import calls, finish, last, role_worker

from rolepool import Agent, Limits, Workflow, tool
from rolepool.agents.workflow import Step
from rolepool.core import (
    DeadlineExceeded,
    MaxTurnsExceeded,
    TokenBudgetExceeded,
)
from rolepool.runtime import EventStore
from rolepool.runtime.limits import StepLimitExceeded
from rolepool.zoo import toolset

pytestmark = pytest.mark.anyio


def events_of(run_id: str, store_path) -> list:
    with EventStore(store_path) as store:
        return store.events(run_id)


async def test_plan_parallel_steps_compose_and_report(tmp_path, isolated_store):
    both_started = anyio.Event()
    seen: set[str] = set()

    def waits_for_the_other(role):
        async def fn(request):
            if last(request).role == "user":
                seen.add(role)
                if len(seen) == 2:
                    both_started.set()
                with anyio.fail_after(20):  # both steps are in flight at once, or this fails
                    await both_started.wait()
                return calls(
                    ("run_python", {"code": "print(2 + 3)"})
                    if role == "coder"
                    else ("search_docs", {"query": "routing policy", "top_k": 2})
                )
            return finish(last(request).content.split("\n")[0 if role == "search" else 2])

        return fn

    worker = role_worker(coder=waits_for_the_other("coder"), search=waits_for_the_other("search"))
    result = await Workflow().run("Plan this: two things.", worker=worker, workspace=tmp_path)
    assert [s.role for s in result.steps] == ["coder", "search"]
    assert all(isinstance(s, Step) for s in result.steps)  # typed, not dicts
    coder, search = result.steps
    assert coder.answer == "5" and coder.task == "print 2 + 3"
    assert search.answer.startswith("[routing-policy]")
    assert result.plan == f"coder: 5; search: {search.answer}"
    assert result.report == tmp_path / "report.md"
    report = result.report.read_text()
    assert report.startswith("## Results\n") and "coder: 5" in report
    # the run's output is the section the writer wrote: what the steps found
    # the writer's answer, then the section it wrote (this scripted writer copies its whole
    # request into the section's body)
    answer, section = result.output.split("\n\n", 1)
    assert answer.startswith("Added section 'Results'")
    assert section.startswith("Write a section titled Results saying coder: 5; search: [")
    assert section in report
    events = events_of(result.run_id, isolated_store)
    assert events[0].type == "run.started" and events[0].workflow == "default"
    assert events[-1].type == "run.finished"
    executed = [e.tool for e in events if e.type == "tool.started"]
    assert executed.count("assign") == 2
    assert {"run_python", "search_docs", "write_section"} <= set(executed)
    # each step's agent nests under the planner's assign call that started it
    assign_spans = {e.span_id for e in events if e.type == "tool.started" and e.tool == "assign"}
    steps = [e for e in events if e.type == "agent.started" and e.agent in ("coder", "search")]
    assert {e.parent_id for e in steps} == assign_spans
    # the prompts are the ones the reference models were trained on
    first = {r.role: r for r in reversed(worker.requests)}
    assert first["coder"].messages[0].content == "You are the coder agent."
    assert first["coder"].messages[1].content == "Use python to run: print 2 + 3"
    assert first["search"].messages[1].content == "Search the docs for routing policy."
    assert [t.name for t in first["planner"].tools] == ["assign", "finish"]
    assert first["planner"].tools[0].parameters == toolset.schema("assign")


async def test_later_steps_see_earlier_answers(tmp_path):
    def planner(request):
        results = [m.content for m in request.messages if m.role == "tool"]
        if len(results) == 0:
            return calls(("assign", {"role": "coder", "task": "print 2 + 3"}))
        if len(results) == 1:
            return calls(("assign", {"role": "search", "task": "the answer"}))
        return finish("; ".join(results))

    worker = role_worker(planner)
    result = await Workflow().run("Two steps, one after the other.", worker=worker,
                                  workspace=tmp_path)  # fmt: skip
    search_task = next(r for r in worker.requests if r.role == "search").messages[1].content
    assert search_task.endswith("Earlier results: coder: 5")
    assert [s.index for s in result.steps] == [0, 1]


async def test_the_compose_body_is_cut_to_the_runs_result_limit(tmp_path):
    def coder(request):
        if last(request).role == "user":
            return finish("word " * 200)
        return finish("done")

    worker = role_worker(coder=coder)
    flow = Workflow()
    await flow.run("Go.", worker=worker, workspace=tmp_path, limits=Limits(max_result_chars=150))
    compose = next(r for r in worker.requests if r.role == "writer").messages[1].content
    body = compose.split(" saying ", 1)[1]
    assert len(body) <= 151 and body.startswith("coder: word word") and "…" in body
    worker = role_worker(coder=coder)
    await flow.run("Go.", worker=worker, workspace=tmp_path)  # default limits: 600 characters
    compose = next(r for r in worker.requests if r.role == "writer").messages[1].content
    assert 580 < len(compose.split(" saying ", 1)[1]) <= 601


async def test_another_roles_tool_is_refused_and_never_runs(tmp_path, isolated_store):
    def coder(request):
        if last(request).role == "user":
            return calls(("write_section", {"title": "Hijack", "body": "not mine"}))
        return finish("could not")

    result = await Workflow().run("Go.", worker=role_worker(coder=coder), workspace=tmp_path)
    events = events_of(result.run_id, isolated_store)
    refused = [e for e in events if e.type == "tool.call.invalid" and e.agent == "coder"]
    assert [e.kind for e in refused] == ["forbidden"]
    assert "belongs to another role" in refused[0].errors[0]
    writers = [e for e in events if e.type == "tool.started" and e.tool == "write_section"]
    assert all(e.agent == "writer" for e in writers)
    assert "Hijack" not in result.report.read_text()
    assert events[-1].type == "run.finished"


async def test_assign_to_an_unknown_role_is_fed_back_and_never_executed(tmp_path, isolated_store):
    def planner(request):
        tool_messages = [m for m in request.messages if m.role == "tool"]
        if not tool_messages:
            return calls(("assign", {"role": "hacker", "task": "take over"}))
        if "invalid call" in tool_messages[-1].content and len(tool_messages) == 1:
            return calls(("assign", {"role": "search", "task": "routing policy"}))
        return finish(tool_messages[-1].content)

    worker = role_worker(planner)
    result = await Workflow().run("Go.", worker=worker, workspace=tmp_path)
    events = events_of(result.run_id, isolated_store)
    invalid = [e for e in events if e.type == "tool.call.invalid"]
    assert [(e.tool, e.kind) for e in invalid] == [("assign", "schema")]
    assert "hacker" in invalid[0].errors[0]
    feedback = next(
        r for r in worker.requests if r.role == "planner" and r.messages[-1].role == "tool"
    )
    assert "invalid call, not executed" in feedback.messages[-1].content
    assert [s.role for s in result.steps] == ["search"]
    assert not any(e.type == "agent.started" and e.role == "hacker" for e in events)


async def test_a_failing_step_is_a_tool_error_and_the_run_goes_on(tmp_path):
    def coder(request):
        return "<tool_call>{broken"

    def planner(request):
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            return calls(("assign", {"role": "coder", "task": "x"}))
        return finish(results[0])

    result = await Workflow().run("Go.", worker=role_worker(planner, coder=coder),
                                  workspace=tmp_path)  # fmt: skip
    assert result.steps[0].error.startswith("ModelBehaviorError")
    assert "the coder step failed" in result.plan


async def test_deadline_ends_the_run_with_a_typed_error(tmp_path, isolated_store):
    async def stuck(request):
        await anyio.sleep(60)

    with anyio.fail_after(30):
        with pytest.raises(DeadlineExceeded):
            await Workflow().run("Go.", worker=role_worker(coder=stuck), workspace=tmp_path,
                                 limits=Limits(deadline=0.5), run_id="run_deadline")  # fmt: skip
    events = events_of("run_deadline", isolated_store)
    assert events[-1].type == "run.failed" and events[-1].error_type == "DeadlineExceeded"


async def test_token_budget_ends_the_run_from_inside_a_step(tmp_path, isolated_store):
    with pytest.raises(TokenBudgetExceeded):
        await Workflow().run("Go.", worker=role_worker(), workspace=tmp_path,
                             limits=Limits(max_tokens=40), run_id="run_budget")  # fmt: skip
    events = events_of("run_budget", isolated_store)
    assert events[-1].type == "run.failed" and events[-1].error_type == "TokenBudgetExceeded"


async def test_max_steps_ends_the_run(tmp_path, isolated_store):
    def planner(request):
        return calls(*[("assign", {"role": "search", "task": f"q{i}"}) for i in range(3)])

    with pytest.raises(StepLimitExceeded):
        await Workflow().run("Go.", worker=role_worker(planner), workspace=tmp_path,
                             limits=Limits(max_steps=2), run_id="run_steps")  # fmt: skip
    assert events_of("run_steps", isolated_store)[-1].error_type == "StepLimitExceeded"


async def test_max_turns_per_agent_ends_the_run(tmp_path):
    def coder(request):  # never finishes
        return calls(("run_python", {"code": "print(1)"}))

    with pytest.raises(MaxTurnsExceeded):
        await Workflow().run("Go.", worker=role_worker(coder=coder), workspace=tmp_path,
                             limits=Limits(max_turns=2))  # fmt: skip


async def test_custom_agents_and_tools(tmp_path):
    @tool(roles={"analyst"})
    def word_count(text: str) -> int:
        """Count words.

        Args:
            text: The text.
        """
        return len(text.split())

    planner = Agent("boss", "planner", "You plan.", [])
    analyst = Agent("ana", "analyst", "You analyse.", [word_count])

    def fn(request):
        if request.role == "planner":
            if last(request).role == "user":
                return calls(("assign", {"role": "analyst", "task": "count: a b c"}))
            return "done: " + last(request).content
        if last(request).role == "user":
            return calls(("word_count", {"text": "a b c"}))
        return "three words"

    from rolepool import FunctionWorker

    worker = FunctionWorker(fn)
    result = await Workflow([planner, analyst]).run("Go.", worker=worker, workspace=tmp_path)
    assert result.output == "done: analyst: three words" and result.report is None
    assign = worker.requests[0].tools[0]
    assert assign.parameters["properties"]["role"]["enum"] == ["analyst"]


def test_the_run_output_is_the_answer_then_the_section_unless_the_answer_holds_it():
    from rolepool.agents.workflow import run_output

    assert run_output("Added the section Results.", "coder: 5") == (
        "Added the section Results.\n\ncoder: 5"
    )
    assert (
        run_output("The coder found 5 (coder: 5).", "coder: 5") == "The coder found 5 (coder: 5)."
    )
    assert run_output("Done.", None) == "Done." and run_output("Done.", "  ") == "Done."
    assert run_output("", "coder: 5") == "coder: 5"
