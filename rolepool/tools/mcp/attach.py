"""The MCP tools an agent of one role sees, with every name unique.

Each server's tools carry its prefix (`time.` by default), so names from two servers, or from a
server and a built-in, do not meet. Where they still would (a server configured with `prefix=""`),
the later tool gets its server's name as the prefix, the same in the schema the model reads and in
the call it makes; a tool whose name is taken even then is left out, with a warning.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

from rolepool.core import ConfigError
from rolepool.tools.mcp.convert import MCPTool, exposed_name
from rolepool.tools.mcp.server import MCPServer

log = logging.getLogger(__name__)


def check_servers(servers: Iterable[MCPServer], where: str) -> tuple[MCPServer, ...]:
    """The servers as a tuple, refusing anything else and two servers of one name."""
    found = tuple(servers)
    names: set[str] = set()
    for server in found:
        if not isinstance(server, MCPServer):
            raise ConfigError(f"expected MCPServer, got {type(server).__name__}", where=where)
        if server.name in names:
            raise ConfigError(f"two MCP servers are named {server.name!r}", where=where)
        names.add(server.name)
    return found


def mcp_tools(servers: Iterable[MCPServer], role: str, taken: Iterable[str] = ()) -> list[MCPTool]:
    """The tools of `servers` that `role` may call, as currently listed by each server."""
    names = set(taken)
    out: list[MCPTool] = []
    for server in servers:
        if not server.is_open:
            message = "is not open: run the agent inside `async with server:` (or open_servers)"
            raise ConfigError(message, where=f"MCP server {server.name!r}")
        for tool in server.tools():
            if not tool.allowed_for(role):
                continue
            if tool.name in names:
                tool = _renamed(server, tool, names)
                if tool is None:
                    continue
            names.add(tool.name)
            out.append(tool)
    return out


def _renamed(server: MCPServer, tool: MCPTool, names: set[str]) -> MCPTool | None:
    try:
        name = exposed_name(f"{server.name}.", tool.remote_name)
    except ConfigError:
        name = tool.name
    if name in names:
        log.warning("MCP server %r: tool %r left out, its name is taken", server.name, tool.name)
        return None
    clone = copy.copy(tool)
    clone.name = name
    return clone


@asynccontextmanager
async def open_servers(servers: Iterable[MCPServer]) -> AsyncIterator[list[MCPServer]]:
    """Open every server (in order; a failure closes those already open) for a block."""
    found = list(servers)
    async with AsyncExitStack() as stack:
        for server in found:
            await stack.enter_async_context(server)
        yield found
