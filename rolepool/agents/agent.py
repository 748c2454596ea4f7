"""`Agent`: a named role with instructions and tools, run by the runtime's loop."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio

from rolepool.core import ConfigError, Decoding, Sampling, UserError
from rolepool.pools.worker import Worker
from rolepool.runtime import (
    Limits,
    LoopInputs,
    Run,
    RunResult,
    execute,
    new_scope,
    run_agent,
    start,
)
from rolepool.runtime.approval import Approver
from rolepool.runtime.run import Body, BodyResult, RunScope, StoreOption
from rolepool.tools.mcp import MCPServer, check_servers, mcp_tools
from rolepool.tools.tool import Tool
from rolepool.tools.tool import tool as make_tool

R = TypeVar("R")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Agent:
    """An agent: `role` decides which tools it may hold and which workers a pool routes it to.

    `tools` may be `Tool`s or plain typed functions (wrapped with `@tool`). A tool restricted to
    other roles is refused here, at definition time, rather than at the first call.
    `max_turns` / `max_retries` default to the run's `Limits`. `mcp`: servers whose tools (as
    they list them when a run starts, for this role) the agent may call; open them first.
    `decoding`: what an in-process worker may constrain (`"auto"`: calls the model opens are held
    to their tools' schemas; `"required"`: every reply is a call; or a `Decoding`); "free" by
    default, and a pool's route for the role may set it (`Route.decoding`).
    """

    def __init__(
        self,
        name: str,
        role: str = "assistant",
        instructions: str = "",
        tools: Iterable[Tool | Callable[..., Any]] = (),
        *,
        max_turns: int | None = None,
        max_retries: int | None = None,
        sampling: Sampling | None = None,
        mcp: Iterable[MCPServer] = (),
        decoding: Decoding | str = "free",
    ) -> None:
        if not _NAME.match(name):
            raise ConfigError(
                "use 1-64 letters, digits, '_', '.' or '-'", where=f"agent name {name!r}"
            )
        if max_turns is not None and max_turns < 1:
            raise ConfigError("must be at least 1", where=f"agent {name!r}: max_turns")
        if max_retries is not None and max_retries < 0:
            raise ConfigError("must be 0 or more", where=f"agent {name!r}: max_retries")
        self.name = name
        self.role = role
        self.instructions = instructions
        self.tools = _check_tools(name, role, tools)
        self.max_turns = max_turns
        self.max_retries = max_retries
        self.sampling = sampling or Sampling()
        self.decoding = _decoding(name, decoding)
        self.mcp = check_servers(mcp, f"agent {name!r}: mcp")

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, role={self.role!r}, tools={[t.name for t in self.tools]})"

    def loop_inputs(self) -> LoopInputs:
        return LoopInputs(
            name=self.name,
            role=self.role,
            instructions=self.instructions,
            tools=(*self.tools, *mcp_tools(self.mcp, self.role, [t.name for t in self.tools])),
            max_turns=self.max_turns,
            max_retries=self.max_retries,
            sampling=self.sampling,
            decoding=self.decoding,
        )

    def _body(self, task: str, worker: Worker) -> Body:
        async def body(scope: RunScope) -> BodyResult:
            return await run_agent(self.loop_inputs(), task, worker, scope)

        return body

    async def run(
        self,
        task: str,
        *,
        worker: Worker,
        limits: Limits | None = None,
        store: StoreOption = None,
        workspace: Path | None = None,
        deps: Any = None,
        run_id: str | None = None,
        approver: Approver | None = None,
        tenant: str | None = None,
    ) -> RunResult:
        """Run to a final answer. Events go to the default store unless `store` says otherwise
        (`False` = none); the run's errors are `RolepoolError`s and end with `run.failed`.
        `approver` answers for tools that need approval (none: such calls are refused).
        `tenant` labels the run's events and requests (quotas apply where a pool has them)."""
        scope = new_scope(
            store=store,
            limits=limits,
            run_id=run_id,
            workspace=workspace,
            deps=deps,
            approver=approver,
            tenant=tenant,
        )
        return await execute(scope, task, self._body(task, worker), label=self.name)

    def run_sync(self, task: str, **kwargs: Any) -> RunResult:
        """`run` for code that has no event loop of its own."""
        return sync_run(self.run, task, **kwargs)

    @asynccontextmanager
    async def start(
        self,
        task: str,
        *,
        worker: Worker,
        limits: Limits | None = None,
        store: StoreOption = None,
        workspace: Path | None = None,
        deps: Any = None,
        run_id: str | None = None,
        approver: Approver | None = None,
        tenant: str | None = None,
    ) -> AsyncIterator[Run]:
        """Start the run in the background to watch it: `async for event in run.events()`."""
        scope = new_scope(
            store=store,
            limits=limits,
            run_id=run_id,
            workspace=workspace,
            deps=deps,
            approver=approver,
            tenant=tenant,
        )
        async with start(scope, task, self._body(task, worker), label=self.name) as run:
            yield run


def sync_run(run: Callable[..., Awaitable[R]], task: str, **kwargs: Any) -> R:
    """Call an async `run(task, **kwargs)` from code without an event loop of its own."""
    try:
        asyncio.get_running_loop()  # also sees a loop outside any task; see docs/design-notes.md
    except RuntimeError:
        return anyio.run(partial(run, task, **kwargs))
    raise UserError("run_sync() was called inside a running event loop; use `await ....run(...)`")


def _decoding(name: str, decoding: Decoding | str) -> Decoding:
    if isinstance(decoding, Decoding):
        return decoding
    if decoding in ("free", "auto", "required", "json_object"):
        return Decoding(mode=decoding)
    raise ConfigError(
        "use 'free', 'auto', 'required', 'json_object' or a Decoding",
        where=f"agent {name!r}: decoding {decoding!r}",
    )


def _check_tools(agent: str, role: str, tools: Iterable[Tool | Callable[..., Any]]) -> list[Tool]:
    out: list[Tool] = []
    for item in tools:
        t = item if isinstance(item, Tool) else make_tool(item)
        if not t.allowed_for(role):
            raise ConfigError(
                f"tool {t.name!r} is for roles {sorted(t.roles or [])}, not {role!r}",
                where=f"agent {agent!r}: tools",
            )
        if any(o.name == t.name for o in out):
            raise ConfigError(f"two tools are named {t.name!r}", where=f"agent {agent!r}: tools")
        out.append(t)
    return out
