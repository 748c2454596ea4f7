"""`Workflow`: a planner turns a task into steps for the other roles, the steps run concurrently on
the pool, and a writer composes the final answer and the run's report.

1. plan: the planner agent runs on the task. Its `assign(role, task)` calls are the steps; the
   calls of one turn run concurrently (the loop runs a turn's calls in a task group) under the
   workflow's concurrency limit. The planner reads each step's answer back as the call's result,
   `"coder: <answer>"` (the shape the reference models were trained on), and may assign more
   steps or finish. A step whose agent fails (invalid calls past its retries, a dead worker) is a
   tool error for the planner, not the end of the run; a limit hit anywhere ends the run.
2. compose: the writer agent gets the steps' answers (else the planner's answer) as a section to
   write, appends it to `report.md` in the run's workspace and finishes. The run's output is the
   writer's answer followed by the text of the section it wrote (what the steps found, as the
   report has it), unless the answer already holds that text. (Before 2026-12 it was the answer
   alone, which for the reference models is "Added the section Results." and reports nothing.)

A step's agent sees its task and, when earlier steps have answered, their answers. Each agent may
call only its own tools: a call to another role's tool is refused as `forbidden`, never run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field

from rolepool.agents.agent import Agent, sync_run
from rolepool.agents.roles import PLANNER, STEP_TEMPLATES, WRITER, builtin_agents
from rolepool.core import (
    ConfigError,
    Message,
    ModelBehaviorError,
    RunContext,
    ToolError,
    WorkerError,
    new_run_id,
)
from rolepool.pools.worker import Worker
from rolepool.runtime import Limits, LoopInputs, Run, RunResult, RunScope, execute, new_scope, start
from rolepool.runtime.approval import Approver
from rolepool.runtime.limits import StepLimitExceeded
from rolepool.runtime.loop import run_agent
from rolepool.runtime.replay import Replay, interrupted_run
from rolepool.runtime.run import BodyResult, StoreOption, resolve_store
from rolepool.runtime.store import EventStore, default_store_path
from rolepool.tools.builtin.assign import assign_tool
from rolepool.tools.builtin.report import report_path
from rolepool.tools.mcp import MCPServer, check_servers, mcp_tools
from rolepool.tools.tool import Tool

COMPOSE_TEMPLATE = "Write a section titled {title} saying {body}."
"""The writer's task: one of the request shapes the reference writer was trained on."""
WRITE_SECTION = "write_section"
"""The built-in writer's tool: the section it writes ends the run's output."""
MAX_COMPOSE_CHARS = 600
"""The writer copies the body into its call, and a tiny model's context is 512 tokens. The body is
also never longer than the run's `max_result_chars`: the writer is not asked to copy more text
than any tool result may show it (on the built-in pool, what its models were trained on)."""


@dataclasses.dataclass
class Step:
    """One `assign` call: which role did what, and how it ended."""

    index: int
    role: str
    agent: str
    task: str
    answer: str | None = None
    error: str | None = None
    duration: float = 0.0


class WorkflowResult(RunResult):
    """A run's result plus its steps, the planner's answer and where the report is."""

    steps: list[Step] = Field(default_factory=list)
    plan: str = ""
    workspace: Path | None = None
    report: Path | None = None


def default_workspace(run_id: str) -> Path:
    """`runs/<run id>/` next to the default event store, so a run's files sit by its trace."""
    return default_store_path().parent / "runs" / run_id


class Workflow:
    """A planner, the agents it assigns steps to, and an optional writer that composes.

    `agents`: one `Agent` per role; the planner's role is `planner`, every other role is a role
    the planner may `assign` to (the default team is the four built-in roles). `concurrency`
    bounds the steps running at once; `approve` names tools that need approval in this workflow
    (on top of tools made with `needs_approval=True`). `mcp`: servers whose tools each role may
    call as the server's `allow` permits (on top of the servers of the role's own agent).
    """

    def __init__(
        self,
        agents: Iterable[Agent] | None = None,
        *,
        name: str = "default",
        concurrency: int = 4,
        approve: Iterable[str] = (),
        compose_title: str = "Results",
        share_answers: bool = True,
        step_templates: dict[str, str] | None = None,
        mcp: Iterable[MCPServer] = (),
    ) -> None:
        team = list(agents) if agents is not None else builtin_agents()
        if concurrency < 1:
            raise ConfigError("must be at least 1", where="workflow concurrency")
        self.name = name
        self.concurrency = concurrency
        self.compose_title = compose_title
        self.share_answers = share_answers
        self.step_templates = dict(STEP_TEMPLATES if step_templates is None else step_templates)
        for role, template in self.step_templates.items():
            if "{task}" not in template:
                raise ConfigError("must contain {task}", where=f"step_templates[{role!r}]")
        self.approve = frozenset(approve)
        self.mcp = check_servers(mcp, "workflow mcp")
        self.agents = _by_role(team)
        self.worker_roles = [r for r in self.agents if r != PLANNER]
        if not self.worker_roles:
            raise ConfigError("a workflow needs an agent besides the planner", where="agents")
        known = {t.name for a in self.agents.values() for t in a.tools} | {"assign"}
        if unknown := sorted(self.approve - known):
            raise ConfigError(f"no agent has the tools {unknown}", where="workflow approve")

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, roles={list(self.agents)})"

    async def run(self, task: str, *, worker: Worker, **options: Any) -> WorkflowResult:
        """Run to the composed answer. Options as for `Agent.run`, plus `approver`."""
        state, scope = self._prepare(task, worker, **options)
        result = await execute(scope, state.task, state.body, label=PLANNER, workflow=self.name)
        return state.result(result)

    async def resume(self, run_id: str, *, worker: Worker, **options: Any) -> WorkflowResult:
        """Continue an interrupted run of this workflow (`trace list` says `interrupted`) as a
        new run, from its stored events: stored model replies and tool results are replayed, a
        call that was cut off is not run again (see `rolepool.runtime.replay`). Options as for
        `run`; the task and workspace are the interrupted run's."""
        return await self.run("", worker=worker, resume=run_id, **options)

    def run_sync(self, task: str, **kwargs: Any) -> WorkflowResult:
        """`run` for code that has no event loop of its own."""
        return sync_run(self.run, task, **kwargs)

    @asynccontextmanager
    async def start(self, task: str, *, worker: Worker, **options: Any) -> AsyncIterator[Run]:
        """Start in the background to watch it; `await run.result()` is a `WorkflowResult`."""
        state, scope = self._prepare(task, worker, **options)
        async with start(
            scope, state.task, state.body, label=PLANNER, workflow=self.name, finalize=state.result
        ) as run:
            yield run

    def _prepare(
        self,
        task: str,
        worker: Worker,
        *,
        limits: Limits | None = None,
        store: StoreOption = None,
        workspace: Path | None = None,
        deps: Any = None,
        run_id: str | None = None,
        approver: Approver | None = None,
        resume: str | None = None,
        tenant: str | None = None,
    ) -> tuple[_WorkflowRun, RunScope]:
        replay = None
        if resume is not None:  # the interrupted run's task, in its workspace
            origin = interrupted_run(_resume_store(store), resume, self.name)
            task, replay = origin.task, Replay(origin)
            workspace = workspace or origin.workspace or default_workspace(origin.run_id)
        if not task.strip():
            raise ConfigError("the task is empty", where="workflow task")
        run_id = run_id or new_run_id()
        workspace = Path(workspace) if workspace is not None else default_workspace(run_id)
        workspace.mkdir(parents=True, exist_ok=True)
        scope = new_scope(
            store=store,
            limits=limits,
            run_id=run_id,
            workspace=workspace,
            deps=deps,
            approver=approver,
            replay=replay,
            tenant=tenant,
        )
        return _WorkflowRun(self, task, worker, scope), scope

    def loop_inputs(self, role: str, assign: Tool | None = None) -> LoopInputs:
        """The loop inputs of the role's agent inside this workflow: approval marks applied, the
        planner's `assign` bound to the run (`assign`), the other roles' tools forbidden."""
        agent = self.agents[role]
        inputs = agent.loop_inputs()
        tools = [t for t in inputs.tools if not (assign is not None and t.name == "assign")]
        if assign is not None:
            tools.insert(0, assign)
        tools += mcp_tools(self.mcp, role, [t.name for t in tools])
        tools = [t.replace(needs_approval=True) if t.name in self.approve else t for t in tools]
        own = {t.name for t in tools}
        others = {t.name for r, a in self.agents.items() if r != role for t in a.tools}
        if role != PLANNER:
            others.add("assign")
        return dataclasses.replace(
            inputs, tools=tuple(tools), forbidden_tools=frozenset(others - own)
        )


class _WorkflowRun:
    """One run of a workflow: its steps, the step budget and the concurrency limiter."""

    def __init__(self, flow: Workflow, task: str, worker: Worker, scope: RunScope) -> None:
        self.flow, self.task, self.worker, self.scope = flow, task, worker, scope
        self.steps: list[Step] = []
        self.plan = ""
        self.limiter = anyio.CapacityLimiter(flow.concurrency)

    async def body(self, scope: RunScope) -> BodyResult:
        assign = assign_tool(self.dispatch, self.flow.worker_roles)
        plan = await run_agent(
            self.flow.loop_inputs(PLANNER, assign), self.task, self.worker, scope
        )
        self.plan = plan.output
        if WRITER not in self.flow.agents:
            return plan
        body = "; ".join(_answers(self.steps)) or self.plan.strip() or self.task
        limit = min(MAX_COMPOSE_CHARS, scope.limits.max_result_chars)
        compose = COMPOSE_TEMPLATE.format(title=self.flow.compose_title, body=_clip(body, limit))
        written = await run_agent(self.flow.loop_inputs(WRITER), compose, self.worker, scope)
        output = run_output(written.output, _written_section(written.messages))
        return BodyResult(output=output, messages=written.messages, turns=written.turns)

    async def dispatch(self, ctx: RunContext, role: str, task: str) -> str:
        """Run one step (the bound `assign`); its answer is what the planner reads back."""
        if not task.strip():
            raise ToolError("the task is empty; say what the agent should do", tool="assign")
        limit = self.scope.limits.max_steps
        if len(self.steps) >= limit:
            raise StepLimitExceeded(f"the planner assigned more than max_steps={limit} steps")
        agent = self.flow.agents[role]
        step = Step(index=len(self.steps), role=role, agent=agent.name, task=task.strip())
        earlier = _answers([s for s in self.steps if s.answer is not None])
        self.steps.append(step)
        template = self.flow.step_templates.get(role, "{task}")
        message = template.replace("{task}", step.task.rstrip("."))
        if earlier and self.flow.share_answers:
            message += "\n\nEarlier results: " + "; ".join(earlier)
        started = time.perf_counter()
        try:
            async with self.limiter:
                outcome = await run_agent(
                    self.flow.loop_inputs(role),
                    message,
                    self.worker,
                    self.scope,
                    parent_id=ctx.extra.get("span_id"),
                )
        except (ModelBehaviorError, WorkerError) as exc:
            step.error = f"{type(exc).__name__}: {exc}"
            raise ToolError(f"the {role} step failed: {exc}", tool="assign") from None
        finally:
            step.duration = time.perf_counter() - started
        step.answer = outcome.output
        return f"{role}: {outcome.output}"

    def result(self, run: RunResult) -> WorkflowResult:
        workspace = self.scope.workspace
        report = report_path(workspace) if workspace is not None else None
        return WorkflowResult(
            **run.model_dump(),
            steps=list(self.steps),
            plan=self.plan,
            workspace=workspace,
            report=report if report is not None and report.exists() else None,
        )


def _resume_store(store: StoreOption) -> EventStore:
    found = resolve_store(store)
    if found is None:
        raise ConfigError("a run is resumed from its stored events: give a store", where="store")
    return found


def run_output(answer: str, section: str | None) -> str:
    """A workflow's output: the writer's answer, then the section it wrote unless the answer
    already holds it."""
    if not section or not section.strip() or section.strip() in answer:
        return answer
    return f"{answer.rstrip()}\n\n{section.strip()}" if answer.strip() else section.strip()


def _written_section(messages: list[Message]) -> str | None:
    """The body of the last section the writer wrote: a `write_section` call whose result was not
    an error (None when it wrote none)."""
    bodies: dict[str, str] = {}
    written = None
    for message in messages:
        for call in message.tool_calls:
            body = call.arguments.get("body")
            if call.name == WRITE_SECTION and isinstance(body, str):
                bodies[call.id] = body
        if message.role == "tool" and message.tool_call_id in bodies:
            if not message.content.startswith("ERROR:"):
                written = bodies[message.tool_call_id]
    return written


def _answers(steps: list[Step]) -> list[str]:
    return [f"{s.role}: {s.answer}" for s in steps if s.answer is not None]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _by_role(agents: list[Agent]) -> dict[str, Agent]:
    found: dict[str, Agent] = {}
    for agent in agents:
        if not isinstance(agent, Agent):
            raise ConfigError(f"expected an Agent, got {type(agent).__name__}", where="agents")
        if agent.role in found:
            raise ConfigError(
                f"two agents have the role {agent.role!r} ({found[agent.role].name!r} and "
                f"{agent.name!r}); a workflow has one agent per role",
                where="agents",
            )
        found[agent.role] = agent
    if PLANNER not in found:
        raise ConfigError("a workflow needs an agent with the role 'planner'", where="agents")
    return found
