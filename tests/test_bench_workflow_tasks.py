"""bench/workflow_tasks.jsonl and the hand-mode scoring of bench/workflow_completion.py (its rules
in bench/_workflow_scoring.py), without a model: the tasks are well formed for the built-in roles,
and hand-made events and outcomes score as the scoring module's docstring says they should."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rolepool.core.events import AgentFinished, AgentStarted, ToolCallInvalid, ToolCallParsed
from rolepool.zoo.toolset import ROLE_TOOLS, WORKER_ROLES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import _workflow_scoring as scoring  # noqa: E402
import workflow_completion as bench  # noqa: E402

README_REQUEST = "Plan this: have the coder test the parser, and ask the search agent to find the routing policy."
RUN = "run_test"


@pytest.fixture(scope="module")
def tasks() -> list[scoring.HandTask]:
    return scoring.load_tasks()


def test_tasks_file_has_the_readme_task_and_at_least_12_more(tasks):
    assert len(tasks) >= 13
    assert len({t.id for t in tasks}) == len(tasks)
    assert len({t.request for t in tasks}) == len(tasks)
    readme = {t.id: t for t in tasks}[bench.README_TASK]
    assert readme.request == README_REQUEST
    assert f'rolepool run "{README_REQUEST}"' in (ROOT / "README.md").read_text()
    assert [(s.role, s.task, s.tool) for s in readme.steps] == [
        ("coder", "test the parser", "run_python"),
        ("search", "find the routing policy", "search_docs"),
    ]


def test_every_step_is_a_valid_role_and_tool_pair_with_its_words_in_the_request(tasks):
    for task in tasks:
        assert 1 <= len(task.steps) <= 3, task.id
        for step in task.steps:
            assert step.role in WORKER_ROLES, task.id
            assert step.tool in ROLE_TOOLS[step.role] and step.tool != "finish", task.id
            assert step.task.strip() == step.task and step.task, task.id
            assert step.task.casefold() in task.request.casefold(), task.id
    used = {s.tool for t in tasks for s in t.steps}
    assert used == {t for role in WORKER_ROLES for t in ROLE_TOOLS[role]} - {"finish"}


def wanted(*steps: tuple[str, str, str]) -> tuple[scoring.WantedStep, ...]:
    return tuple(scoring.WantedStep(*s) for s in steps)


def seen(role: str, task: str, tool: str | None, answer: str | None) -> scoring.SeenStep:
    return scoring.SeenStep(role=role, task=task, first_tool=tool, answer=answer)


TASK = scoring.HandTask(
    "t",
    "Have the coder test the parser and the search agent find the routing policy.",
    wanted(
        ("coder", "test the parser", "run_python"),
        ("search", "find the routing policy", "search_docs"),
    ),
)
GOOD = [
    seen("search", "find the routing policy", "search_docs", "Found policy-v3: moe first, 90/10."),
    seen("coder", "test the parser", "run_python", "Ran 14 checks, 2 failed on empty input."),
]
GOOD_FINAL = (
    "Results: coder: Ran 14 checks, 2 failed on empty input; "
    "search: Found policy-v3: moe first, 90/10."
)


def test_a_good_run_passes_every_check():
    assert scoring.score(TASK, GOOD, GOOD_FINAL, "## Results\n\n" + GOOD_FINAL) == {
        "plan": True,
        "plan_exact": True,
        "first_tools": 2,
        "first_tools_all": True,
        "reported": True,
        "in_report": True,
        "completed": True,
    }


def test_the_report_is_judged_apart_from_the_answer():
    scored = scoring.score(TASK, GOOD, "Added the section Results.", "## Results\n\n" + GOOD_FINAL)
    assert not scored["reported"] and scored["in_report"]
    assert not scoring.score(TASK, GOOD, GOOD_FINAL, None)["in_report"]
    assert not scoring.score(TASK, GOOD, GOOD_FINAL, "## Results\n\nfind.")["in_report"]


def test_plan_compares_tasks_normalised_and_reports_exact_apart():
    steps = [
        seen("coder", "  Test the PARSER.", "run_python", "ok"),
        seen("search", '"find the routing  policy"', "search_docs", "ok"),
    ]
    assert scoring.plan_matches(TASK.steps, steps, exact=False)
    assert not scoring.plan_matches(TASK.steps, steps, exact=True)


@pytest.mark.parametrize(
    "steps",
    [
        [GOOD[1]],  # a step missing
        [*GOOD, seen("writer", "write it up", "write_section", "done")],  # a step too many
        [GOOD[0], seen("writer", "test the parser", "write_section", "x")],  # the wrong role
        [GOOD[0], seen("coder", "test the parsers", "run_python", "x")],  # task words changed
        [GOOD[0], seen("coder", "test", "run_python", "x")],  # task words cut
        [GOOD[0], GOOD[0]],  # one step twice, the other never
    ],
)
def test_plan_fails_unless_exactly_the_steps_asked_for(steps):
    assert not scoring.plan_matches(TASK.steps, steps, exact=False)


def test_first_tool_is_judged_per_wanted_step_with_its_partner():
    assert scoring.first_tools_right(TASK.steps, GOOD) == [True, True]
    wrong = [seen("coder", "test the parser", "read_file", "x"), GOOD[0]]
    assert scoring.first_tools_right(TASK.steps, wrong) == [False, True]
    # a garbled task still pairs by role, so its agent's first tool is judged
    garbled = [seen("coder", "tset the prasr", "run_python", "x")]
    assert scoring.first_tools_right(TASK.steps, garbled) == [True, False]
    # no call at all, or no partner: wrong
    assert scoring.first_tools_right(TASK.steps, [seen("coder", "test the parser", None, "x")]) == [
        False,
        False,
    ]
    # two steps of one role: the task words decide who partners whom
    two = wanted(("coder", "read the file a.txt", "read_file"), ("coder", "run it", "run_python"))
    steps = [
        seen("coder", "run it", "run_python", "x"),
        seen("coder", "read the file a.txt", "read_file", "y"),
    ]
    assert scoring.first_tools_right(two, steps) == [True, True]


def test_reported_needs_the_key_words_of_every_answer_in_the_final_answer():
    assert scoring.score(TASK, GOOD, GOOD_FINAL)["reported"]
    # restating the request reports nothing the steps found
    restated = "The coder tested the parser and the search agent found the routing policy."
    assert not scoring.score(TASK, GOOD, restated)["reported"]
    # one step's findings left out
    assert not scoring.score(TASK, GOOD, "Results: coder: Ran 14 checks, 2 failed on empty input.")[
        "reported"
    ]
    # half of the key words is enough: found, moe, first, 90, 10 (not policy: a task word)
    assert scoring.reports("The search found policy v3 with moe first.", GOOD[0])
    assert not scoring.reports("The search found policy v3.", GOOD[0])
    # a step that did not answer, or whose answer only restates its task, cannot be reported
    unanswered = [GOOD[0], seen("coder", "test the parser", "run_python", None)]
    assert not scoring.score(TASK, unanswered, GOOD_FINAL)["reported"]
    echo = seen("coder", "test the parser", "run_python", "I will test the parser.")
    assert not scoring.reports("I will test the parser.", echo)
    # no steps at all: nothing reported, whatever the answer says
    assert not scoring.score(TASK, [], GOOD_FINAL)["reported"]


def test_a_run_that_did_not_finish_is_neither_completed_nor_reported():
    scored = scoring.score(TASK, GOOD, None, GOOD_FINAL)
    assert scored["plan"] and scored["first_tools_all"]
    assert not scored["completed"] and not scored["reported"] and not scored["in_report"]


def test_steps_from_events_reads_each_steps_task_first_tool_and_answer():
    planner, assign_a, assign_b, agent_a, agent_b, compose = "p0", "a1", "a2", "s1", "s2", "w0"

    def parsed(span: str, parent: str, agent: str, tool: str, args: dict) -> ToolCallParsed:
        where = {"run_id": RUN, "span_id": span, "parent_id": parent, "agent": agent}
        return ToolCallParsed(**where, call_id=span, tool=tool, arguments=args)

    events = [
        AgentStarted(run_id=RUN, span_id=planner, agent="planner", role="planner"),
        parsed(assign_a, planner, "planner", "assign", {"role": "coder", "task": " test it "}),
        parsed(assign_b, planner, "planner", "assign", {"role": "search", "task": "find it"}),
        AgentStarted(run_id=RUN, span_id=agent_a, parent_id=assign_a, agent="coder", role="coder"),
        AgentStarted(
            run_id=RUN, span_id=agent_b, parent_id=assign_b, agent="search", role="search"
        ),
        # the coder's first reply could not be parsed: it names no tool and is skipped
        ToolCallInvalid(run_id=RUN, parent_id=agent_a, agent="coder", kind="parse"),
        # its first named call broke the schema, and still counts as the tool it named
        ToolCallInvalid(
            run_id=RUN, parent_id=agent_a, agent="coder", kind="schema", tool="write_file"
        ),
        parsed("c2", agent_a, "coder", "run_python", {"code": "print(1)"}),
        parsed("c3", agent_b, "search", "search_docs", {"query": "it"}),
        AgentFinished(run_id=RUN, span_id=agent_a, agent="coder", role="coder", output="1"),
        AgentFinished(run_id=RUN, span_id=agent_b, agent="search", role="search", error="boom"),
        # the workflow's compose step nests under the run, not under an assign call
        AgentStarted(run_id=RUN, span_id=compose, agent="writer", role="writer"),
        parsed("c4", compose, "writer", "write_section", {"title": "R", "body": "1"}),
    ]
    for seq, event in enumerate(events):
        event.seq = seq
    assert scoring.steps_from_events(events) == [
        scoring.SeenStep(role="coder", task="test it", first_tool="write_file", answer="1"),
        scoring.SeenStep(role="search", task="find it", first_tool="search_docs", answer=None),
    ]


def test_key_words_leave_out_function_words_role_names_and_the_task():
    assert scoring.key_words(
        "The coder ran 3 tests of the parser: all passed.", "test the parser"
    ) == {
        "ran",
        "3",
        "tests",
        "passed",
    }
    assert scoring.normalise("  'Find the Routing   policy.' ") == "find the routing policy"


def scripted_pool():
    """A role-aware scripted worker in place of the built-in pool; its coder reads a file rather
    than run code, so no sandbox starts."""
    from workflow_scripts import calls, finish, last, role_worker

    def coder(request):
        if last(request).role == "user":
            return calls(("read_file", {"path": "notes.txt"}))
        return finish("notes.txt is missing from the workspace")

    async def aclose() -> None:
        pass

    worker = role_worker(coder=coder)
    worker.aclose = aclose
    return worker


def test_a_scripted_run_through_the_benchs_runner_is_scored_from_its_events(monkeypatch):
    """The bench's own runner and scoring on a scripted worker in place of the built-in pool: the
    events give the steps, and report.md is read before the workspace goes."""
    import anyio

    monkeypatch.setattr(bench, "default_pool", scripted_pool)
    task = scoring.HandTask(
        "scripted",
        "Coder: print 2 + 3. Search: routing policy.",
        wanted(("coder", "print 2 + 3", "read_file"), ("search", "routing policy", "read_doc")),
    )
    (ran,) = anyio.run(bench.run_workflows, [task.request], bench.ROUTINGS[0])
    outcome = scoring.hand_outcome(task, ran)
    assert outcome["status"] == "finished" and outcome["completed"]
    assert outcome["plan"] and outcome["plan_exact"]
    assert [s["first_tool"] for s in outcome["steps"]] == ["read_file", "search_docs"]
    assert outcome["first_tools"] == 1 and not outcome["first_tools_all"]
    # the scripted writer answers "Added section ...", but the run's output is the section it
    # wrote, so the findings reach the final answer as well as report.md
    assert "notes.txt is missing" in ran.report and outcome["report"] == ran.report
    assert outcome["in_report"] and outcome["reported"]
    assert outcome["answer"] == ran.result.output


def test_generator_mode_still_summarises_as_before(monkeypatch):
    """The default mode on a scripted worker: its summary keeps its keys, and it writes to
    workflow_completion (write_result is stubbed: no file is written)."""
    written = {}
    monkeypatch.setattr(bench, "default_pool", scripted_pool)
    monkeypatch.setattr(
        bench, "write_result", lambda name, title, results, md: written.update(name=name, r=results)
    )
    monkeypatch.setattr(bench, "ROUTINGS", ("moe first (default)",))
    bench.generated_main(2, 11)
    assert written["name"] == "workflow_completion"
    summary = written["r"]["summary"]["moe first (default)"]
    assert summary["tasks"] == 2 and summary["finished"] == 2
    assert summary["steps_answered"] == "4/4" and summary["failures"] == {}
