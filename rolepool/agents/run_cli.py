"""`rolepool run "TASK"`: the default workflow on a pool, with live progress and approval prompts.

Offline by default: the built-in default pool of shipped reference models. Progress (agents, tool
calls, tokens) goes to stderr; the answer, the run id and the report path to stdout (`--json`: one
JSON object). Bad input is one message and exit code 2 (`rolepool.cli.main` turns a
`RolepoolError` into that).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from rolepool.agents.roles import builtin_agents
from rolepool.agents.workflow import Workflow, WorkflowResult
from rolepool.cli_args import TEXT_FILE, Float, Int, OutputDir, OutputFile, count
from rolepool.core import ConfigError, Event, RolepoolError, Sampling, UserError, new_run_id
from rolepool.runtime import Limits, Run
from rolepool.runtime.approval import ApprovalRequest, Decision, allow_all
from rolepool.runtime.replay import ResumeError
from rolepool.runtime.store import EventStore
from rolepool.tools.mcp import MCPConnectError, load_mcp_config, open_servers
from rolepool.zoo.dialogues import RESULT_CHARS

DEFAULT_APPROVE = "run_python"
TINY_RESULT_CHARS = RESULT_CHARS
TINY_MAX_TOKENS = 160
"""On the built-in pool: tool results shown to the shipped models (cut where their training cut
them) and their longest reply (the budget their evaluation uses), because their whole context is
512 tokens and every invalid reply that is fed back stays in it."""


DEADLINE = Float(0, 30 * 86400.0)
"""A run's wall clock: above 0 and at most 30 days (anyio's deadline overflows near 1e308)."""


def add_run_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `run` on the `rolepool` command's subparsers."""
    parser = subparsers.add_parser(
        "run",
        help="run a task through the planner, coder, search and writer agents",
        description="Run TASK through the default workflow: the planner assigns steps to the "
        "coder, search and writer agents, which run in parallel on the pool; the writer composes "
        "the answer and report.md. Offline on the shipped models unless --pool says otherwise.",
    )
    parser.add_argument(
        "task",
        nargs="?",
        default="",
        help='what to do, e.g. "Plan this: have the coder test the parser, and ask the search '
        'agent to find the routing policy." (none with --resume)',
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue an interrupted run (trace list says interrupted) from its stored events, "
        "as a new run: stored replies and tool results are replayed, nothing runs twice; give "
        "the options the run was started with",
    )
    parser.add_argument(
        "--pool", type=TEXT_FILE, metavar="FILE", help="pool config (TOML); default: built-in"
    )
    parser.add_argument(
        "--mcp",
        type=TEXT_FILE,
        metavar="FILE",
        help="MCP servers whose tools the agents may call (TOML; see the README)",
    )
    parser.add_argument("--yes", "-y", action="store_true", help="approve every tool call")
    parser.add_argument(
        "--approve",
        default=DEFAULT_APPROVE,
        metavar="TOOLS",
        help=f"comma-separated tools that need approval (default {DEFAULT_APPROVE}; '' = none)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument(
        "--decoding",
        choices=("free", "auto", "required"),
        default="free",
        help="constrained decoding on in-process workers: auto holds each call the model opens "
        "to its tool's schema, required makes every reply a call (default free)",
    )
    parser.add_argument(
        "--workspace", type=OutputDir(), metavar="DIR", help="the run's workspace (default: new)"
    )
    parser.add_argument(
        "--db", type=OutputFile(), help="event store (default: as for `rolepool trace`)"
    )
    limits = parser.add_argument_group("limits")
    add = limits.add_argument
    add("--max-turns", type=count(1_000), default=6, help="model calls per agent (6)")
    add("--max-steps", type=count(1_000), default=8, help="steps the planner may assign (8)")
    add("--deadline", type=DEADLINE, default=600.0, help="wall-clock seconds (600)")
    add("--max-tokens", type=count(10**9), help="token budget for the run (default none)")
    add("--concurrency", type=count(1_000), default=4, help="steps at once (4)")
    add(
        "--max-result-chars",
        type=Int(100, 10**8),
        help=f"longest tool result shown to a model (default {TINY_RESULT_CHARS} on the built-in "
        "pool, whose models have a 512-token context; 20000 otherwise)",
    )
    parser.set_defaults(handler=cmd_run)
    return parser


def _limits(args: argparse.Namespace) -> Limits:
    chars = args.max_result_chars or (20_000 if args.pool else TINY_RESULT_CHARS)
    try:
        return Limits(
            max_turns=args.max_turns,
            max_steps=args.max_steps,
            deadline=args.deadline,
            max_tokens=args.max_tokens,
            max_result_chars=chars,
        )
    except ValueError as exc:  # pydantic's message names the field and the bound
        first = exc.errors()[0] if hasattr(exc, "errors") else {}
        where = "--" + str(first.get("loc", ["limit"])[0]).replace("_", "-")
        raise ConfigError(str(first.get("msg", exc)), where=where) from None


def _pool(args: argparse.Namespace) -> Any:
    if args.pool:
        from rolepool.pools.config import build_pool

        return build_pool(Path(args.pool))
    from rolepool.pools.default import default_pool

    return default_pool()


def cmd_run(args: argparse.Namespace, out: Console) -> int:
    if not args.task.strip():
        if not args.resume:
            raise UserError('the task is empty; say what to do, e.g. rolepool run "..."')
    elif args.resume:
        raise UserError("give a task or --resume RUN_ID, not both: a resumed run has its task")
    approve = [t.strip() for t in args.approve.split(",") if t.strip()]
    sampling = None if args.pool else Sampling(max_tokens=TINY_MAX_TOKENS)
    flow = Workflow(
        builtin_agents(sampling, decoding=args.decoding),
        concurrency=args.concurrency,
        approve=approve,
        mcp=load_mcp_config(args.mcp) if args.mcp else (),
    )
    err = Console(stderr=True, soft_wrap=True)
    prompter = _Prompter(err, yes=args.yes)
    options: dict[str, Any] = {
        "limits": _limits(args),
        "workspace": Path(args.workspace) if args.workspace else None,
        "approver": prompter.approve,
        "run_id": new_run_id(),
        **({"resume": args.resume} if args.resume else {}),
    }
    if args.db:
        options["store"] = EventStore(Path(args.db))
    pool = _pool(args)
    try:
        result = anyio.run(partial(_run, flow, args.task, pool, prompter, err, options))
    except RolepoolError as exc:
        run_id = options["run_id"]
        if type(exc) is not ResumeError and not isinstance(exc, MCPConnectError):  # no run began
            err.print(f"run id: {run_id}   (rolepool trace show {run_id})", highlight=False)
        raise
    _print_result(result, out, as_json=args.json)
    return 0


async def _run(
    flow: Workflow,
    task: str,
    pool: Any,
    prompter: _Prompter,
    err: Console,
    options: dict[str, Any],
) -> WorkflowResult:
    """Run and watch the workflow, then close the pool (it may hold HTTP clients)."""
    try:
        async with open_servers(flow.mcp), flow.start(task, worker=pool, **options) as run:
            await _watch(run, _Progress(), prompter, err)
        result = await run.result()  # out here, the run's error is raised as itself
    finally:
        close = getattr(pool, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
    assert isinstance(result, WorkflowResult)
    return result


async def _watch(run: Run, view: _Progress, prompter: _Prompter, err: Console) -> None:
    """Follow the run's events: a live table on a terminal, one line per step otherwise."""
    live = (
        Live(view.table(), console=err, transient=False, auto_refresh=False)
        if err.is_terminal
        else None
    )
    prompter.live = live
    if live is not None:
        live.start()
    try:
        async for event in run.events():
            line = view.update(event)
            if live is not None:
                live.update(view.table(), refresh=True)
            elif line:
                err.print(line, highlight=False, markup=False)
    finally:
        if live is not None:
            live.stop()


class _Progress:
    """Agents, calls and tokens so far, built from the event stream."""

    def __init__(self) -> None:
        self.agents: dict[str, dict[str, Any]] = {}
        self.calls = self.invalid = self.tokens = 0

    def update(self, event: Event) -> str | None:
        kind = event.type
        if kind == "agent.started":
            self.agents[event.span_id] = {"agent": event.agent, "status": "running", "turns": 0,
                                          "tokens": 0, "task": event.task}  # fmt: skip
            return f"▶ {event.agent}: {event.task[:100]}"
        if kind == "model.completed":
            self.tokens += event.usage.total_tokens
            row = self.agents.get(event.parent_id or "")
            if row is not None:
                row["turns"] += 1
                row["tokens"] += event.usage.total_tokens
        elif kind == "tool.started":
            self.calls += 1
            return f"  ⚙ {event.agent} → {event.tool}"
        elif kind == "tool.call.invalid":
            self.invalid += 1
            return f"  ✗ {event.agent}: invalid {event.kind} call: {'; '.join(event.errors)[:120]}"
        elif kind == "approval.resolved":
            verdict = "✓ approved" if event.approved else "✗ refused"
            return f"  {verdict}: {event.agent} → {event.tool}"
        elif kind == "agent.finished":
            row = self.agents.get(event.span_id)
            if row is not None:
                row["status"] = "failed" if event.error else "done"
            return f"■ {event.agent}: {(event.error or event.output or '')[:120]}"
        return None

    def table(self) -> Table:
        table = Table(
            title=f"tool calls {self.calls} · invalid {self.invalid} · tokens {self.tokens}"
        )
        for column in ("agent", "status", "turns", "tokens", "task"):
            table.add_column(
                column, overflow="ellipsis", max_width=60 if column == "task" else None
            )
        for row in self.agents.values():
            table.add_row(
                row["agent"], row["status"], str(row["turns"]), str(row["tokens"]), row["task"]
            )
        return table


class _Prompter:
    """Answers approval requests: `--yes`, a y/N prompt on a terminal, else refuses."""

    def __init__(self, err: Console, *, yes: bool) -> None:
        self.err, self.yes = err, yes
        self.lock = anyio.Lock()  # one question at a time, even with parallel steps
        self.live: Live | None = None

    async def approve(self, request: ApprovalRequest) -> Decision:
        if self.yes:
            return Decision(allow_all(request))
        if not sys.stdin.isatty():
            return Decision(False, "nobody to ask (stdin is not a terminal); rerun with --yes")
        async with self.lock:
            if self.live is not None:
                self.live.stop()
            args = json.dumps(request.arguments, ensure_ascii=False)[:500]
            question = f"{request.agent} wants to call {request.tool} {args}"
            self.err.print(question, highlight=False, markup=False)
            answer = await anyio.to_thread.run_sync(_read_answer)
            if self.live is not None:
                self.live.start()
        return Decision(True) if answer else Decision(False, "refused by the user")


def _read_answer() -> bool:
    try:
        return input("allow? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _print_result(result: WorkflowResult, out: Console, *, as_json: bool) -> None:
    if as_json:
        data = {
            "run_id": result.run_id,
            "output": result.output,
            "plan": result.plan,
            "steps": result.model_dump(mode="json", include={"steps"})["steps"],
            "report": str(result.report) if result.report else None,
            "workspace": str(result.workspace) if result.workspace else None,
            "usage": result.usage.model_dump(),
            "duration": result.duration,
        }
        sys.stdout.write(json.dumps(data) + "\n")
        return
    out.print(f"answer: {result.output}", highlight=False, markup=False)
    for step in result.steps:
        said = step.answer if step.error is None else f"failed: {step.error}"
        line = f"  step {step.index + 1} [{step.role}] {step.task} → {said}"
        out.print(line, highlight=False, markup=False)
    out.print(f"run id: {result.run_id}   (rolepool trace show {result.run_id})", highlight=False)
    out.print(f"report: {result.report or 'none written'}", highlight=False)
