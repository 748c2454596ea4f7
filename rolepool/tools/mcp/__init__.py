"""Tools from MCP servers: `MCPServer.stdio(...)`, `MCPServer.http(...)`, and config files."""

from rolepool.tools.mcp.attach import check_servers, mcp_tools, open_servers
from rolepool.tools.mcp.config import load_mcp_config
from rolepool.tools.mcp.convert import MCPTool
from rolepool.tools.mcp.server import HttpTarget, MCPConnectError, MCPServer, StdioTarget

__all__ = [
    "HttpTarget",
    "MCPConnectError",
    "MCPServer",
    "MCPTool",
    "StdioTarget",
    "check_servers",
    "load_mcp_config",
    "mcp_tools",
    "open_servers",
]
