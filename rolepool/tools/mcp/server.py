"""`MCPServer`: one MCP server's tools as rolepool tools, over stdio or Streamable HTTP.

The server object owns its connection: `async with MCPServer.stdio(...)` starts the process (or
opens the HTTP session), lists the tools, and on exit closes it; the SDK's stdio transport stops
the server's whole process group, shielded from cancellation, so neither an error nor Ctrl-C leaves
a process behind. A call that times out, or a connection that dies, is a `ToolError` for that call;
the next call restarts the process (or reconnects) after a backoff.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from rolepool.core import ConfigError, RolepoolError, ToolError
from rolepool.tools.mcp.convert import (
    MCPTool,
    allowed_roles,
    check_listed,
    exposed_name,
    matches,
    result_text,
)

if TYPE_CHECKING:  # the SDK takes a second to import: loaded when a server is opened
    import mcp_types as types
    from mcp import Client

    from rolepool.tools.mcp.session import Connection

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
_SERVER_ERRORS = {-32602, -32601, -32603}
"""JSON-RPC invalid params, method not found, internal error: the server answered, it is alive."""


class MCPConnectError(ConfigError):
    """A server could not be started or reached, or does not speak MCP (raised on opening it)."""


@dataclass(frozen=True)
class StdioTarget:
    """A server run as a child process speaking MCP on its stdin and stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    stderr_log: Path | None = None
    """Append the server's stderr to this file (default: rolepool's own stderr)."""


@dataclass(frozen=True)
class HttpTarget:
    """A server reached over Streamable HTTP. The bearer token is read from the environment
    variable `bearer_token_env` at connect time; it is never part of the configuration."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token_env: str | None = None


class MCPServer:
    """An MCP server whose tools agents may call, validated and traced like any other tool.

    `prefix`: put before each tool name (default: the server's name and a dot, `time.`).
    `allow`: role -> tool-name patterns (`{"coder": ["git_*"]}`); `None` offers every tool to every
    role, and a tool no pattern matches is not offered at all. `needs_approval`: `True` or name
    patterns of tools that wait for the run's approver. `timeout` bounds each call,
    `connect_timeout` the start and handshake.
    """

    def __init__(
        self,
        name: str,
        target: StdioTarget | HttpTarget,
        *,
        prefix: str | None = None,
        allow: Mapping[str, Sequence[str]] | None = None,
        needs_approval: bool | Iterable[str] = False,
        timeout: float = 30.0,
        connect_timeout: float = 30.0,
    ) -> None:
        where = f"MCP server {name!r}"
        if (
            not isinstance(name, str)
            or not name
            or not name.replace("_", "").replace("-", "").isalnum()
        ):
            raise ConfigError("the name must be letters, digits, '_' or '-'", where=where)
        for label, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{label} must be > 0 seconds, got {value!r}", where=where)
        self.name = name
        self.target = target
        self.prefix = f"{name}." if prefix is None else prefix
        self.allow = {role: tuple(p) for role, p in allow.items()} if allow is not None else None
        self.approval = (
            needs_approval if isinstance(needs_approval, bool) else tuple(needs_approval)
        )
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.skipped: dict[str, str] = {}
        """Tools the server listed that are not offered, with the reason (bad schema, name)."""
        self._tools: dict[str, MCPTool] = {}
        self._tg: TaskGroup | None = None
        self._conn: Connection | None = None
        self._lock = anyio.Lock()
        self._failures = 0
        self._retry_at = 0.0

    @classmethod
    def stdio(
        cls,
        name: str,
        command: str,
        args: Iterable[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stderr_log: str | Path | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server run as `command args...`; environment: a few safe variables and `env`."""
        if isinstance(args, str):
            raise ConfigError("args must be a list of strings", where=f"MCP server {name!r}")
        env = dict(env) if env else None
        target = StdioTarget(command, tuple(args), env, _path(cwd), _path(stderr_log))
        return cls(name, target, **options)

    @classmethod
    def http(
        cls,
        name: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        bearer_token_env: str | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server at a Streamable HTTP endpoint (`http://host:port/mcp`)."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"url must be http(s)://..., got {url!r}", where=f"MCP server {name!r}"
            )
        return cls(name, HttpTarget(url, dict(headers or {}), bearer_token_env), **options)

    def __repr__(self) -> str:
        return f"MCPServer({self.name!r}, {self.target!r})"

    # -- lifetime --------------------------------------------------------------------------------

    async def __aenter__(self) -> MCPServer:
        if self._tg is not None:
            raise ConfigError("is already open", where=f"MCP server {self.name!r}")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await self._open()
        except BaseException as exc:
            from rolepool.tools.mcp.session import describe

            self._tg = None
            await tg.__aexit__(None, None, None)
            if isinstance(exc, Exception):
                raise MCPConnectError(describe(exc), where=f"MCP server {self.name!r}") from None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        if self._conn is not None:
            self._conn.close()
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        self._conn = None

    @property
    def is_open(self) -> bool:
        """Inside `async with` (the connection itself may be down until the next call)."""
        return self._tg is not None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.alive

    # -- tools -----------------------------------------------------------------------------------

    def tools(self) -> list[MCPTool]:
        """The tools as last listed (on connect and on every `tools/list_changed`)."""
        return list(self._tools.values())

    async def call(self, remote: str, arguments: dict[str, Any]) -> str:
        """Call the server's tool `remote` with arguments already validated against its schema."""
        from mcp import MCPError

        from rolepool.tools.mcp.session import describe

        tool = f"{self.prefix}{remote}"
        conn = await self._ready(tool)
        try:
            with anyio.fail_after(self.timeout):
                result = await conn.client.call_tool(remote, arguments)
        except TimeoutError:
            self._broke(conn)
            raise ToolError(
                f"MCP server {self.name!r} gave no answer within {self.timeout:g}s; "
                "it is restarted before the next call",
                tool=tool,
            ) from None
        except MCPError as exc:
            if exc.code in _SERVER_ERRORS and conn.alive:
                raise ToolError(
                    f"MCP server {self.name!r}: {exc.message}"[:2000], tool=tool
                ) from None
            self._broke(conn)
            for _ in range(3):  # the transport's own report of why may still be on its way
                await anyio.lowlevel.checkpoint()
            why = describe(conn.transport_error or exc)
            raise ToolError(f"MCP server {self.name!r}: {why}", tool=tool) from None
        except anyio.get_cancelled_exc_class():
            self._broke(conn)  # the run's own timeout or cancel: the call may still be running
            raise
        except Exception as exc:  # noqa: BLE001 - a dead process, a broken pipe, a bad reply
            self._broke(conn)
            raise ToolError(f"MCP server {self.name!r}: {describe(exc)}", tool=tool) from None
        self._failures = 0
        return result_text(result, tool)

    # -- connection ------------------------------------------------------------------------------

    async def _ready(self, tool: str) -> Connection:
        async with self._lock:
            if self._tg is None:
                raise ToolError(
                    f"MCP server {self.name!r} is not open (use `async with`)", tool=tool
                )
            if self._conn is not None and self._conn.usable():
                return self._conn
            if self._conn is not None:
                self._conn.close()
            await anyio.sleep(max(0.0, self._retry_at - anyio.current_time()))
            try:
                await self._open()
            except Exception as exc:  # noqa: BLE001 - reported to the model, retried later
                from rolepool.tools.mcp.session import describe

                self._note_failure()
                raise ToolError(
                    f"MCP server {self.name!r} could not be restarted: {describe(exc)}", tool=tool
                ) from None
            return self._conn  # type: ignore[return-value]

    def _broke(self, conn: Connection) -> None:
        conn.close()
        self._note_failure()

    def _note_failure(self) -> None:
        self._failures += 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** (self._failures - 1))
        self._retry_at = anyio.current_time() + delay

    async def _open(self) -> None:
        from rolepool.tools.mcp.session import Connection

        assert self._tg is not None
        conn = Connection()
        await self._tg.start(self._hold, conn)
        self._conn = conn

    async def _hold(self, conn: Connection, *, task_status: TaskStatus[None]) -> None:
        """Own one connection from its handshake to its close; every failure after the start is
        recorded on `conn` (the next call reconnects), never raised into the task group."""
        from rolepool.tools.mcp.session import describe, list_all

        started = False
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self.connect_timeout) as scope:
                conn.connect_scope = scope
                async with self._client(conn) as client:
                    listing = await list_all(client)
                    scope.deadline = math.inf
                    conn.client = client
                    self._absorb(listing)
                    task_status.started()
                    started = True
                    await self._serve(conn, client)
            if not started:
                raise conn.protocol_error or TimeoutError(
                    f"no MCP handshake within {self.connect_timeout:g}s"
                )
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if not started:
                raise
            log.warning("MCP server %r: connection lost: %s", self.name, describe(exc))
        finally:
            conn.alive = False

    async def _serve(self, conn: Connection, client: Client) -> None:
        """Keep the tool list current until the connection is closed."""
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.refresh_when_changed, client, self._absorb)
            modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS
            capability = client.server_capabilities.tools
            if modern and capability is not None and capability.list_changed:
                tg.start_soon(conn.listen, client)
            await conn.closing.wait()
            tg.cancel_scope.cancel()

    def _client(self, conn: Connection) -> Client:
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        from rolepool.tools.mcp.stdio import bounded_stdio

        target = self.target
        if isinstance(target, StdioTarget):
            command = [target.command, *target.args]
            server: Any = bounded_stdio(command, target.env, target.cwd, target.stderr_log)
        else:
            headers = dict(target.headers)
            if target.bearer_token_env:
                token = os.environ.get(target.bearer_token_env)
                if not token:
                    raise RolepoolError(
                        f"environment variable {target.bearer_token_env} is not set"
                    )
                headers["Authorization"] = f"Bearer {token}"
            http = create_mcp_http_client(headers=headers)
            server = streamable_http_client(target.url, http_client=http)
        return Client(server, cache=None, message_handler=conn.on_message)

    def _absorb(self, listing: list[types.Tool]) -> None:
        tools: dict[str, MCPTool] = {}
        skipped: dict[str, str] = {}
        for listed in listing:
            try:
                tool = self._tool(listed)
            except ConfigError as exc:
                skipped[listed.name[:80]] = str(exc)
                continue
            if tool is not None and tool.name not in tools:
                tools[tool.name] = tool
        if skipped:
            log.warning("MCP server %r: tools left out: %s", self.name, skipped)
        self._tools, self.skipped = tools, skipped

    def _tool(self, listed: types.Tool) -> MCPTool | None:
        roles = allowed_roles(listed.name, self.allow)
        if roles is False:
            return None
        check_listed(listed)
        approval = self.approval
        name = exposed_name(self.prefix, listed.name)
        if not isinstance(approval, bool):
            approval = matches(listed.name, approval) or matches(name, approval)
        return MCPTool(
            name,
            listed,
            self.call,
            server=self.name,
            roles=roles if roles is not None else None,
            timeout=self.timeout + 1.0,  # our own timeout answers first, with a clearer message
            needs_approval=approval,
        )


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None
