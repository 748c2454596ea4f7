"""How often `rolepool run` completes on the shipped reference models, and how the rest end.

    python bench/workflow_completion.py               # 12 held-out planner requests, both routings
    python bench/workflow_completion.py --tasks 30

The tasks are planner requests from the zoo corpus generator's held-out split (`unseen_values`:
phrasings the models were trained on, values they never saw), the kind `rolepool run` is documented
to handle. Each runs through the default workflow exactly as `rolepool run` runs it on the built-in
pool (the same reply and tool-result budgets), once with the default routing (MoE first, dense
fallback) and once with the pool's policy switched to dense first. A quality measurement, not a
speed one: it reports completions, the steps and roles each completed run had, whether those
steps are exactly the ones the request asked for (role and task copied right), how many steps
ended in an answer, and every failure by error type, so the README's claims about the workflow
come from a command.
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

from rolepool.agents import Workflow
from rolepool.agents.roles import builtin_agents
from rolepool.agents.run_cli import TINY_MAX_TOKENS, TINY_RESULT_CHARS
from rolepool.core import RolepoolError, Sampling
from rolepool.pools.default import default_pool
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.runtime import Limits
from rolepool.runtime.approval import allow_all
from rolepool.zoo.corpus import Generator

ROUTINGS = ("moe first (default)", "dense first")


def tasks(n: int, seed: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """Requests, each with the steps it asks for: `(role, task)` of its `assign` calls."""
    gen = Generator("unseen_values", seed)
    out = []
    for _ in range(n):
        text, calls = gen.parallel_request()
        out.append((text, sorted((a["role"], a["task"]) for _, a in calls)))
    return out


async def run_all(
    requests: list[tuple[str, list[tuple[str, str]]]], routing: str
) -> list[dict[str, Any]]:
    pool = default_pool()
    if routing == "dense first":
        route = Route(choices=[Choice(worker="dense")], fallbacks=["moe"])
        pool.set_policy(RoutingPolicy(version="bench-dense-first", default=route))
    flow = Workflow(builtin_agents(Sampling(max_tokens=TINY_MAX_TOKENS)))
    limits = Limits(max_result_chars=TINY_RESULT_CHARS)
    outcomes = []
    try:
        for task, wanted in requests:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as workspace:
                try:
                    result = await flow.run(
                        task,
                        worker=pool,
                        limits=limits,
                        store=False,
                        workspace=Path(workspace),
                        approver=allow_all,
                    )
                    steps = result.steps
                    outcome = {
                        "status": "finished",
                        "steps": len(steps),
                        "roles": sorted({step.role for step in steps}),
                        "answered": sum(step.answer is not None for step in steps),
                        "plan_exact": sorted((s.role, s.task) for s in steps) == wanted,
                    }
                except RolepoolError as exc:
                    outcome = {"status": type(exc).__name__, "error": str(exc)[:300]}
            outcome.update(task=task, seconds=round(time.perf_counter() - started, 2))
            outcomes.append(outcome)
            print(f"[{routing}] {outcome['status']:<22} {task[:70]}", flush=True)
    finally:
        await pool.aclose()
    return outcomes


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=12, help="planner requests (default 12)")
    parser.add_argument("--seed", type=int, default=11, help="corpus seed for the requests")
    args = parser.parse_args()
    requests = tasks(args.tasks, args.seed)
    results = {r: anyio.run(run_all, requests, r) for r in ROUTINGS}
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
    header = [
        "routing",
        "completed",
        "of those: 2+ steps",
        "2+ roles",
        "steps exactly as asked",
        "steps answered",
        "failures by type",
    ]
    note = (
        f"\n\n{args.tasks} planner requests from the zoo's held-out `unseen_values` split "
        f"(seed {args.seed}), each through the default workflow as `rolepool run` runs it on the "
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


if __name__ == "__main__":
    main()
