"""One live connection to an MCP server, and the helpers around the SDK's `Client`.

A `Connection` is owned by the task that opened it (`MCPServer._hold`): calls from other tasks use
its client, and anyone may `close()` it; the owner then leaves the client's context, which stops
the server process. Tool-list changes are coalesced: a flood of `tools/list_changed`
notifications sets one flag, and one task re-lists when it is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import mcp_types as types
import pydantic
from mcp import Client, MCPError

from rolepool.core import RolepoolError
from rolepool.tools.mcp.stdio import MessageTooLarge

log = logging.getLogger(__name__)

MAX_LIST_PAGES = 50
"""A server whose `tools/list` never stops paginating is cut off here."""
RELIST_TIMEOUT = 30.0
_COALESCE = 0.05


@dataclass
class Connection:
    """The state of one connection, shared between its owner task and the callers."""

    client: Client = field(init=False)
    alive: bool = True
    closing: anyio.Event = field(default_factory=anyio.Event)
    changed: anyio.Event = field(default_factory=anyio.Event)
    connect_scope: anyio.CancelScope | None = None
    protocol_error: Exception | None = None
    """Set when the server wrote something that is not MCP before the handshake finished."""
    transport_error: Exception | None = None
    """The last transport fault after it (a message too large, a line that is not JSON-RPC)."""

    def close(self) -> None:
        self.alive = False
        self.closing.set()

    def usable(self) -> bool:
        """Alive and its session still open (a server that exited while idle is not)."""
        if not self.alive or not hasattr(self, "client"):
            return False
        dispatcher = getattr(self.client.session, "_dispatcher", None)
        return not getattr(dispatcher, "_closed", False)

    async def on_message(self, message: types.ServerNotification | Exception) -> None:
        """The SDK's message handler: notifications and transport errors arrive here."""
        if isinstance(message, Exception):
            if not hasattr(self, "client") and self.connect_scope is not None:
                self.protocol_error = message
                self.connect_scope.cancel()  # not MCP: fail the connect now, not at its timeout
            else:
                self.transport_error = message
                log.warning("MCP transport error: %s", describe(message))
        elif isinstance(message, types.ToolListChangedNotification):
            self.changed.set()
        await anyio.lowlevel.checkpoint()

    async def listen(self, client: Client) -> None:
        """Receive list changes on a 2026-07-28 connection (they come on a `listen` stream)."""
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self.changed.set()
        except Exception as exc:  # noqa: BLE001 - list changes stop; calls still work
            log.warning("MCP tools/list_changed subscription ended: %s", describe(exc))

    async def refresh_when_changed(
        self, client: Client, absorb: Callable[[list[types.Tool]], None]
    ) -> None:
        while True:
            await self.changed.wait()
            await anyio.sleep(_COALESCE)
            self.changed = anyio.Event()
            try:
                with anyio.fail_after(RELIST_TIMEOUT):
                    absorb(await list_all(client))
            except Exception as exc:  # noqa: BLE001 - keep the old list; the next change retries
                log.warning("MCP tools/list after a change failed: %s", describe(exc))


async def list_all(client: Client) -> list[types.Tool]:
    """Every tool, following `nextCursor` up to `MAX_LIST_PAGES` pages."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor, cache_mode="refresh")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def describe(exc: BaseException) -> str:
    """One line for the first real cause inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, (MessageTooLarge, RolepoolError)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    if isinstance(exc, MCPError) and exc.code == types.CONNECTION_CLOSED:
        return "the server closed the connection (did the process exit? see its stderr)"
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"[:500]
    if isinstance(exc, TimeoutError) and str(exc):
        return str(exc)
    text = str(exc) or type(exc).__name__
    if "ConnectError" in type(exc).__name__ or "ConnectTimeout" in type(exc).__name__:
        return f"cannot connect: {text}"[:500]
    if isinstance(exc, pydantic.ValidationError) and exc.errors():
        first = exc.errors()[0]
        envelope = str(first["loc"][0]).startswith("JSONRPC") if first["loc"] else True
        if first["type"] == "json_invalid" or envelope:  # a line that is no JSON-RPC at all
            return f"does not speak MCP: it wrote {str(first['input'])[:120]!r}, not JSON-RPC"
        where = ".".join(str(part) for part in first["loc"])
        return f"sent an MCP message that breaks the protocol's schema at {where}: {first['msg']}"
    return f"{type(exc).__name__}: {text}"[:500]
