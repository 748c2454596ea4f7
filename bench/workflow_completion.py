"""`rolepool run` on the shipped reference models: how often it completes, whether it makes sense.

    python bench/workflow_completion.py               # 12 held-out planner requests, both routings
    python bench/workflow_completion.py --tasks 30
    python bench/workflow_completion.py --hand        # the hand-written bench/workflow_tasks.jsonl
    python bench/workflow_completion.py --hand --only wf-readme wf-kb-doc
    python bench/workflow_completion.py --tasks-file my_tasks.jsonl

Every request runs through the default workflow exactly as `rolepool run` runs it on the built-in
pool (the same reply and tool-result budgets), once with the default routing (MoE first, dense
fallback) and once with the pool's policy switched to dense first. Nothing is retried. A quality
measurement, not a speed one.

Generator mode (the default) takes planner requests from the zoo corpus generator's held-out split
(`unseen_values`: phrasings the models were trained on, values they never saw). It reports
completions, the steps and roles each completed run had, whether those steps are exactly the ones
the request asked for (role and task copied right), how many steps ended in an answer, and every
failure by error type; figures go to bench/results/workflow_completion.json.

Hand mode (`--hand`, or `--tasks-file PATH`) takes requests written by hand in ordinary English,
one JSON object a line: `{"id", "request", "steps": [{"role", "task", "tool"}]}`, where `task` is
the words of the request the planner should pass on and `tool` the tool the step's agent should
call first. Each run is scored on four questions from its events, (a) plan, (b) first tool,
(c) reported and (d) completed: the rules are in the docstring of bench/_workflow_scoring.py.

It prints a table per routing, the README task's final answer (id `wf-readme`) as each routing
gave it, and writes bench/results/workflow_tasks.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from _common import table, write_result
from _workflow_scoring import MEASURES, TASKS_FILE, Ran, hand_outcome, load_tasks

from rolepool.agents import Workflow
from rolepool.agents.roles import builtin_agents
from rolepool.agents.run_cli import TINY_MAX_TOKENS, TINY_RESULT_CHARS
from rolepool.core import Event, RolepoolError, Sampling
from rolepool.pools.default import default_pool
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.runtime import EventStream, Limits
from rolepool.runtime.approval import allow_all
from rolepool.runtime.run import on_new_run
from rolepool.zoo.corpus import Generator

ROUTINGS = ("moe first (default)", "dense first")
README_TASK = "wf-readme"


def generated_tasks(n: int, seed: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """Requests, each with the steps it asks for: `(role, task)` of its `assign` calls."""
    gen = Generator("unseen_values", seed)
    out = []
    for _ in range(n):
        text, calls = gen.parallel_request()
        out.append((text, sorted((a["role"], a["task"]) for _, a in calls)))
    return out


# -- running ---------------------------------------------------------------------------------------
async def run_workflows(requests: list[str], routing: str) -> list[Ran]:
    """Run each request in turn through the default workflow on the built-in pool."""
    pool = default_pool()
    if routing == "dense first":
        route = Route(choices=[Choice(worker="dense")], fallbacks=["moe"])
        pool.set_policy(RoutingPolicy(version="bench-dense-first", default=route))
    flow = Workflow(builtin_agents(Sampling(max_tokens=TINY_MAX_TOKENS)))
    limits = Limits(max_result_chars=TINY_RESULT_CHARS)
    streams: list[list[Event]] = []

    def watch(stream: EventStream) -> None:  # every run's events, as they are published
        events: list[Event] = []
        streams.append(events)
        stream.add_listener(events.append)

    remove = on_new_run(watch)
    ran = []
    try:
        for request in requests:
            started, before = time.perf_counter(), len(streams)
            result, error = None, None
            with tempfile.TemporaryDirectory() as workspace:
                try:
                    result = await flow.run(
                        request,
                        worker=pool,
                        limits=limits,
                        store=False,
                        workspace=Path(workspace),
                        approver=allow_all,
                    )
                except RolepoolError as exc:
                    error = exc
                report = result.report.read_text() if result and result.report else None
            events = sorted((e for run in streams[before:] for e in run), key=lambda e: e.seq)
            seconds = round(time.perf_counter() - started, 2)
            ran.append(Ran(request, result, error, events, seconds, report))
            status = "finished" if error is None else type(error).__name__
            print(f"[{routing}] {status:<22} {request[:70]}", flush=True)
    finally:
        remove()
        await pool.aclose()
    return ran


def hand_rows(outcomes: list[dict[str, Any]]) -> list[list[object]]:
    def mark(ok: bool) -> str:
        return "yes" if ok else "no"

    rows: list[list[object]] = []
    for o in outcomes:
        called = ", ".join(f"{s['role']} {s['first_tool'] or '-'}" for s in o["steps"]) or "-"
        tools = f"{o['first_tools']}/{o['wanted_steps']} ({called})"
        done = "yes" if o["completed"] else o["status"]
        found = [mark(o["reported"]), mark(o["in_report"])]
        rows.append([o["id"], mark(o["plan"]), mark(o["plan_exact"]), tools, *found, done])
    total = {k: sum(o[k] for o in outcomes) for k in (*MEASURES, "first_tools", "wanted_steps")}
    tools = (
        f"{total['first_tools_all']} tasks; {total['first_tools']}/{total['wanted_steps']} steps"
    )
    found = [total["reported"], total["in_report"]]
    sums = [total["plan"], total["plan_exact"], tools, *found, total["completed"]]
    return [*rows, [f"**all {len(outcomes)}**", *sums]]


def hand_main(path: Path, only: list[str] | None) -> None:
    tasks = load_tasks(path)
    if only:
        unknown = sorted(set(only) - {t.id for t in tasks})
        if unknown:
            raise SystemExit(f"no tasks with the ids {unknown} in {path}")
        tasks = [t for t in tasks if t.id in only]
    requests = [t.request for t in tasks]
    runs = {r: anyio.run(run_workflows, requests, r) for r in ROUTINGS}
    outcomes = {
        r: [hand_outcome(t, ran) for t, ran in zip(tasks, runs[r], strict=True)] for r in runs
    }
    header = ["task", "(a) plan", "exact", "(b) first tool", "(c) reported", "in report.md"]
    header.append("(d) completed")
    markdown = "\n\n".join(
        f"**{r}**\n\n" + table(header, hand_rows(o)) for r, o in outcomes.items()
    )
    markdown += (
        f"\n\n{len(tasks)} hand-written requests from `{path.name}`, each through the default "
        "workflow as `rolepool run` runs it on the built-in pool; nothing is retried. (a) the "
        "planner assigned exactly the roles and tasks asked for (tasks compared normalised; "
        '"exact": as written); (b) wanted steps whose agent first called the expected tool '
        "(in brackets: each assigned step's role and first tool); (c) the final answer holds at "
        "least half the key words of every step's answer (and the same of report.md); (d) the "
        "run finished. The rules are in "
        "the docstring of bench/_workflow_scoring.py."
    )
    for routing, found in outcomes.items():
        for o in found:
            if o["id"] == README_TASK:
                print(f"README task, {routing}: final answer: {o['answer']!r}")
    summary = {
        r: {"tasks": len(found), **{k: sum(o[k] for o in found) for k in MEASURES}}
        for r, found in outcomes.items()
    }
    write_result(
        "workflow_tasks",
        "rolepool run on the shipped models: hand-written workflow requests",
        {"tasks_file": path.name, "summary": summary, "runs": outcomes},
        markdown,
    )


# -- generator mode ------------------------------------------------------------------------------
def generated_outcome(wanted: list[tuple[str, str]], ran: Ran) -> dict[str, Any]:
    if ran.error is not None:
        outcome = {"status": type(ran.error).__name__, "error": str(ran.error)[:300]}
    else:
        assert ran.result is not None
        steps = ran.result.steps
        outcome = {
            "status": "finished",
            "steps": len(steps),
            "roles": sorted({step.role for step in steps}),
            "answered": sum(step.answer is not None for step in steps),
            "plan_exact": sorted((s.role, s.task) for s in steps) == wanted,
        }
    outcome.update(task=ran.request, seconds=ran.seconds)
    return outcome


def summarise(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    done = [o for o in outcomes if o["status"] == "finished"]
    return {
        "tasks": len(outcomes),
        "finished": len(done),
        "parallel_two_plus_steps": sum(o["steps"] >= 2 for o in done),
        "two_plus_roles": sum(len(o["roles"]) >= 2 for o in done),
        "plan_exact": sum(o["plan_exact"] for o in done),
        "steps_answered": f"{sum(o['answered'] for o in done)}/{sum(o['steps'] for o in done)}",
        "failures": dict(Counter(o["status"] for o in outcomes if o["status"] != "finished")),
    }


def generated_main(n: int, seed: int) -> None:
    requests = generated_tasks(n, seed)
    texts = [text for text, _ in requests]
    results = {
        r: [
            generated_outcome(wanted, ran)
            for (_, wanted), ran in zip(requests, anyio.run(run_workflows, texts, r), strict=True)
        ]
        for r in ROUTINGS
    }
    summary = {r: summarise(o) for r, o in results.items()}
    rows = [
        [
            r,
            f"{s['finished']}/{s['tasks']}",
            s["parallel_two_plus_steps"],
            s["two_plus_roles"],
            s["plan_exact"],
            s["steps_answered"],
            ", ".join(f"{k} {v}" for k, v in sorted(s["failures"].items())) or "none",
        ]
        for r, s in summary.items()
    ]
    columns = "routing|completed|of those: 2+ steps|2+ roles|steps exactly as asked|steps answered"
    header = [*columns.split("|"), "failures by type"]
    note = (
        f"\n\n{n} planner requests from the zoo's held-out `unseen_values` split "
        f"(seed {seed}), each through the default workflow as `rolepool run` runs it on the "
        'built-in pool; nothing is retried. "Steps exactly as asked": completed runs whose '
        'steps are exactly the roles and tasks the request names; "steps answered": steps of '
        "completed runs that ended in an answer rather than an error."
    )
    write_result(
        "workflow_completion",
        "rolepool run on the shipped models: completions",
        {"summary": summary, "runs": results},
        table(header, rows) + note,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=12, help="generated requests (default 12)")
    parser.add_argument("--seed", type=int, default=11, help="corpus seed for the requests")
    parser.add_argument(
        "--hand", action="store_true", help=f"run the hand-written {TASKS_FILE.name} instead"
    )
    parser.add_argument("--tasks-file", type=Path, help="run these hand-written tasks instead")
    parser.add_argument("--only", nargs="+", metavar="ID", help="hand mode: only these task ids")
    args = parser.parse_args()
    if args.hand or args.tasks_file:
        hand_main(args.tasks_file or TASKS_FILE, args.only)
    elif args.only:
        parser.error("--only goes with --hand or --tasks-file")
    else:
        generated_main(args.tasks, args.seed)


if __name__ == "__main__":
    main()
