"""How the hand mode of bench/workflow_completion.py (`--hand`, `--tasks-file`; also
bench/workflow_tasks.py) scores a run of a request written by hand.

A task is one JSON object a line: `{"id", "request", "steps": [{"role", "task", "tool"}]}`, where
`task` is the words of the request the planner should pass on and `tool` the tool the step's
agent should call first. Each run is scored on four questions, from its events
(`tool.call.parsed` of the planner's `assign` calls, the step agents'
`agent.started`/`agent.finished` nested under them, and their calls):

(a) plan: the planner assigned exactly the steps asked for, as a multiset of (role, task), tasks
    compared normalised (case folded, whitespace collapsed, punctuation and whitespace stripped
    from both ends); "exact" also compares the task text as it is.
(b) first tool: each wanted step is paired with a step the planner assigned (same role and
    normalised task first, then any unpaired step of the same role, in order); the pair is right
    when the first call of that step's agent names the wanted tool. A reply that could not be
    parsed at all names no tool and is skipped; a call that failed validation still counts as the
    tool it named; an agent that answered without calling a tool, or a wanted step with no
    partner, is wrong. The task passes when every wanted step's first tool is right.
(c) reported: the run finished, every step answered, and the final answer reports each answer: at
    least half of the answer's key words appear among the final answer's words. Key words are
    the answer's lower-cased runs of letters and digits, at least three characters long or all
    digits, leaving out common function words, the role names and the words of the step's own
    task (so restating the request reports nothing). An answer with no key word left reports
    nothing the step found, so it fails the check. "in report.md": the same rule applied to the
    run's report (what the writer's `write_section` calls appended), which `rolepool run` points
    to beside the answer.
(d) completed: the run ended with `run.finished`.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rolepool.agents.workflow import WorkflowResult
from rolepool.core import Event, RolepoolError
from rolepool.core.events import AgentFinished, AgentStarted, ToolCallInvalid, ToolCallParsed

TASKS_FILE = Path(__file__).resolve().parent / "workflow_tasks.jsonl"
FUNCTION_WORDS = frozenset(
    "the and for with from into onto that this these those then than there here what which who "
    "whom whose when where why how are was were been being has have had having does did doing "
    "can could will would shall should may might must not its our ours your yours their "
    "theirs his her him she they them you all any some each every also just only very about "
    "over under after before again once per via".split()
)
ROLE_WORDS = frozenset({"planner", "coder", "search", "writer", "agent"})
MEASURES = ("plan", "plan_exact", "first_tools_all", "reported", "in_report", "completed")
"""Per hand-written task, each true or false: (a) normalised and exact, (b), (c) answer and
report, (d)."""


@dataclass(frozen=True)
class WantedStep:
    role: str
    task: str
    tool: str


@dataclass(frozen=True)
class HandTask:
    id: str
    request: str
    steps: tuple[WantedStep, ...]


@dataclass
class SeenStep:
    """A step as the run's events show it: what the planner assigned and what its agent did."""

    role: str
    task: str
    first_tool: str | None = None
    answer: str | None = None


@dataclass
class Ran:
    """One request's run: its result or the error that ended it, and every event it emitted."""

    request: str
    result: WorkflowResult | None
    error: RolepoolError | None
    events: list[Event]
    seconds: float
    report: str | None = None
    """The text of the run's report.md, read before its workspace is removed; None without one."""


def load_tasks(path: Path = TASKS_FILE) -> list[HandTask]:
    tasks = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            steps = tuple(WantedStep(s["role"], s["task"], s["tool"]) for s in row["steps"])
            tasks.append(HandTask(row["id"], row["request"], steps))
    return tasks


def steps_from_events(events: list[Event]) -> list[SeenStep]:
    """The steps of a run, in the order their agents started: each agent nests under the span of
    the planner's `assign` call that made it (the workflow's compose step does not)."""
    assigns = {
        e.span_id: e.arguments
        for e in events
        if isinstance(e, ToolCallParsed) and e.tool == "assign"
    }
    steps: list[SeenStep] = []
    by_span: dict[str, SeenStep] = {}
    for event in events:
        if isinstance(event, AgentStarted) and event.parent_id in assigns:
            task = str(assigns[event.parent_id].get("task", "")).strip()
            by_span[event.span_id] = step = SeenStep(role=event.role, task=task)
            steps.append(step)
        elif isinstance(event, ToolCallParsed | ToolCallInvalid) and event.parent_id in by_span:
            step = by_span[event.parent_id]
            if step.first_tool is None and event.tool is not None:
                step.first_tool = event.tool
        elif isinstance(event, AgentFinished) and event.span_id in by_span:
            by_span[event.span_id].answer = event.output
    return steps


def normalise(text: str) -> str:
    return " ".join(text.casefold().split()).strip(string.punctuation + string.whitespace)


def plan_matches(wanted: tuple[WantedStep, ...], seen: list[SeenStep], *, exact: bool) -> bool:
    """(a): the assigned steps are exactly the wanted ones, as a multiset of (role, task)."""
    key = (lambda t: t) if exact else normalise
    return Counter((s.role, key(s.task)) for s in wanted) == Counter(
        (s.role, key(s.task)) for s in seen
    )


def pair_steps(wanted: tuple[WantedStep, ...], seen: list[SeenStep]) -> list[SeenStep | None]:
    """Each wanted step's partner among the seen ones: same role and task first, then same role."""
    free = list(seen)
    pairs: list[SeenStep | None] = [None] * len(wanted)
    for same_task in (True, False):
        for i, want in enumerate(wanted):
            if pairs[i] is not None:
                continue
            for step in free:
                if step.role == want.role and (
                    not same_task or normalise(step.task) == normalise(want.task)
                ):
                    pairs[i] = step
                    free.remove(step)
                    break
    return pairs


def first_tools_right(wanted: tuple[WantedStep, ...], seen: list[SeenStep]) -> list[bool]:
    """(b), per wanted step: its partner's agent first called the wanted tool."""
    return [
        step is not None and step.first_tool == want.tool
        for want, step in zip(wanted, pair_steps(wanted, seen), strict=True)
    ]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.casefold()))


def key_words(answer: str, task: str) -> set[str]:
    """The words of a step's answer that say what it found (see the module docstring)."""
    found = {w for w in words(answer) if len(w) >= 3 or w.isdigit()}
    return found - FUNCTION_WORDS - ROLE_WORDS - words(task)


def reports(final: str, step: SeenStep) -> bool:
    """(c), per step: the final answer holds at least half of the step's answer's key words."""
    if step.answer is None:
        return False
    keys = key_words(step.answer, step.task)
    return bool(keys) and len(keys & words(final)) >= math.ceil(len(keys) / 2)


def score(
    task: HandTask, seen: list[SeenStep], final: str | None, report: str | None = None
) -> dict[str, Any]:
    """(a)-(d) for one run; `final` is the run's answer, None when it did not finish, and
    `report` the text of its report.md."""
    tools = first_tools_right(task.steps, seen)

    def reported(text: str | None) -> bool:
        return (
            final is not None
            and text is not None
            and bool(seen)
            and all(reports(text, step) for step in seen)
        )

    return {
        "plan": plan_matches(task.steps, seen, exact=False),
        "plan_exact": plan_matches(task.steps, seen, exact=True),
        "first_tools": sum(tools),
        "first_tools_all": all(tools),
        "reported": reported(final),
        "in_report": reported(report),
        "completed": final is not None,
    }


def hand_outcome(task: HandTask, ran: Ran) -> dict[str, Any]:
    seen = steps_from_events(ran.events)
    final = ran.result.output if ran.result is not None else None
    outcome: dict[str, Any] = {"id": task.id, **score(task, seen, final, ran.report)}
    outcome.update(
        status="finished" if ran.error is None else type(ran.error).__name__,
        wanted_steps=len(task.steps),
        steps=[asdict(s) for s in seen],
        answer=final,
        report=ran.report,
        seconds=ran.seconds,
    )
    if ran.error is not None:
        outcome["error"] = str(ran.error)[:300]
    return outcome
