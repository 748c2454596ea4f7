"""The MCP server behind `rolepool mcp serve`: rolepool's workflow and evals as MCP tools.

Two tools, on the official SDK's server: `run_workflow(task)` runs the default workflow on the
configured pool and answers with its output, steps and run id; `run_eval(suite, workers, limit)`
runs an eval and answers with its summary. Both send progress notifications while they run (an
agent started or finished, a tool called; a case scored). A tool that needs approval is refused
unless `--yes` is given: there is nobody to ask. Over stdio the client starts this process; over
Streamable HTTP it listens on 127.0.0.1 unless told otherwise, and `--token-env NAME` makes every
request carry `Authorization: Bearer <$NAME>`.
"""

from __future__ import annotations

import argparse
import hmac
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver import MCPServer as SDKServer
from mcp.server.mcpserver.exceptions import ToolError

from rolepool.agents.roles import builtin_agents
from rolepool.agents.run_cli import TINY_MAX_TOKENS, TINY_RESULT_CHARS
from rolepool.agents.workflow import Workflow
from rolepool.core import Event, RolepoolError, Sampling, UserError
from rolepool.runtime import Limits
from rolepool.runtime.approval import ApprovalRequest, Decision, allow_all
from rolepool.tools.mcp import load_mcp_config, open_servers

PROGRESS_EVENTS = {"agent.started", "agent.finished", "tool.started"}


class Service:
    """What the tools run on: the pool, the workflow, the eval options. One per process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tiny = not args.pool
        approve = [t.strip() for t in args.approve.split(",") if t.strip()]
        sampling = Sampling(max_tokens=TINY_MAX_TOKENS) if self.tiny else None
        mcp = load_mcp_config(args.mcp) if args.mcp else ()
        self.flow = Workflow(builtin_agents(sampling), approve=approve, mcp=mcp)
        self.pool: Any = None

    def worker(self) -> Any:
        if self.pool is None:
            if self.args.pool:
                from rolepool.pools.config import build_pool

                self.pool = build_pool(Path(self.args.pool))
            else:
                from rolepool.pools.default import default_pool

                self.pool = default_pool()
        return self.pool

    async def approve(self, request: ApprovalRequest) -> Decision:
        if self.args.yes:
            return Decision(allow_all(request))
        return Decision(False, "refused: `rolepool mcp serve` approves no tool without --yes")

    async def run_workflow(self, task: str, ctx: Context) -> dict[str, Any]:
        if not task.strip():
            raise UserError("the task is empty")
        limits = Limits(max_result_chars=TINY_RESULT_CHARS) if self.tiny else None
        seen = 0
        options = {"limits": limits, "approver": self.approve}
        async with self.flow.start(task, worker=self.worker(), **options) as run:
            async for event in run.events():
                if event.type in PROGRESS_EVENTS:
                    seen += 1
                    await ctx.report_progress(seen, None, _progress_line(event))
        result = await run.result()
        return {
            "run_id": result.run_id,
            "output": result.output,
            "steps": [
                {"role": s.role, "task": s.task, "answer": s.answer, "error": s.error}
                for s in result.steps  # type: ignore[attr-defined]
            ],
            "report": str(result.report) if result.report else None,  # type: ignore[attr-defined]
        }

    async def run_eval(
        self, suite: str, workers: list[str] | None, limit: int, ctx: Context
    ) -> dict[str, Any]:
        from rolepool.evals.cli import select_targets
        from rolepool.evals.results import ResultsFile
        from rolepool.evals.runner import check_cases, run_eval
        from rolepool.evals.suites import SUITES, load_suite
        from rolepool.evals.summary import build_summary

        if suite not in SUITES:
            raise UserError(f"suite must be one of {list(SUITES)}, got {suite!r}")
        if not 1 <= limit <= 10_000:
            raise UserError(f"limit must be 1-10000, got {limit}")
        cases = load_suite(suite, limit=limit).cases
        check_cases(cases)
        choice = argparse.Namespace(pool=self.args.pool, workers=",".join(workers or []))
        targets = select_targets(choice)
        total, done = len(cases) * len(targets), 0
        root = Path(self.args.out) if self.args.out else Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        outdir = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=root))
        with ResultsFile(outdir) as results:
            async with anyio.create_task_group() as tg:

                def scored(line: Any) -> None:
                    nonlocal done
                    done += 1
                    message = f"{line.worker}: {line.case}"
                    tg.start_soon(ctx.report_progress, done, total, message)

                await run_eval(cases, targets, results, store=None, on_result=scored)
            lines = results.latest()
        summary = build_summary(lines, suites=[suite])
        return {"results_dir": str(outdir), **summary.model_dump(mode="json", by_alias=True)}


def _progress_line(event: Event) -> str:
    if event.type == "tool.started":
        return f"{event.agent} -> {event.tool}"  # type: ignore[union-attr]
    verb = "started" if event.type == "agent.started" else "finished"
    return f"{event.agent} {verb}"  # type: ignore[union-attr]


@contextmanager
def _told_to_client() -> Iterator[None]:
    """rolepool's errors are written for the one who caused them: the client sees the message
    (the SDK shows only "Error executing tool" for other exceptions, keeping crashes private)."""
    try:
        yield
    except RolepoolError as exc:
        raise ToolError(str(exc)) from None


def build_server(service: Service) -> SDKServer:
    app = SDKServer(
        "rolepool",
        instructions="Run rolepool workflows (planner, coder, search, writer) and evals.",
        log_level="WARNING",  # INFO would log every HTTP request the pool's workers make
    )

    @app.tool()
    async def run_workflow(task: str, ctx: Context) -> dict[str, Any]:
        """Run TASK through rolepool's workflow (a planner assigns steps to coder, search and
        writer agents on the configured pool) and return the answer, the steps and the run id."""
        with _told_to_client():
            return await service.run_workflow(task, ctx)

    @app.tool()
    async def run_eval(
        ctx: Context, suite: str = "roles", workers: list[str] | None = None, limit: int = 20
    ) -> dict[str, Any]:
        """Run a built-in eval suite (e.g. roles) on the pool's workers (all, or those named),
        at most LIMIT cases, and return the summary: tool-call accuracy per worker and role."""
        with _told_to_client():
            return await service.run_eval(suite, workers, limit, ctx)

    return app


async def serve(args: argparse.Namespace, token: str | None) -> None:
    """Serve until the client goes away (stdio) or the process is stopped (HTTP)."""
    service = Service(args)
    app = build_server(service)
    async with open_servers(service.flow.mcp):
        try:
            if args.transport == "stdio":
                await app.run_stdio_async()
            else:
                await _serve_http(app, args.host, args.port, token)
        finally:
            close = getattr(service.pool, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


async def _serve_http(app: SDKServer, host: str, port: int, token: str | None) -> None:
    import uvicorn

    asgi = app.streamable_http_app(host=host)
    if token is not None:
        asgi = _require_token(asgi, token)
    config = uvicorn.Config(asgi, host=host, port=port, log_level="warning")
    await uvicorn.Server(config).serve()


def _require_token(asgi: Any, token: str) -> Any:
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"missing or wrong token"})
                return
        await asgi(scope, receive, send)

    return guarded
