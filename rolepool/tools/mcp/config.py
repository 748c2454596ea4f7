"""The MCP config file `rolepool run --mcp FILE` and `rolepool mcp serve --mcp FILE` read (TOML).

One table per server under `servers`; the table's name is the server's name (and its tools'
prefix). A server has either `command` (stdio) or `url` (Streamable HTTP):

    [servers.time]
    command = "mcp-server-time"
    args = ["--local-timezone", "Europe/Paris"]
    allow = { search = ["get_*"], coder = ["*"] }   # role -> tool-name patterns (default: all)
    needs_approval = ["convert_*"]                 # or true

    [servers.calc]
    url = "http://127.0.0.1:8000/mcp"
    bearer_token_env = "CALC_TOKEN"                # the variable's name, never the token

A TOML file, like the pool config, rather than the JSON `mcpServers` of desktop clients: it has
comments, and rolepool's own keys (allow, needs_approval, timeout) sit beside the command.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rolepool.core import ConfigError
from rolepool.tools.mcp.server import MCPServer


class ServerConfig(BaseModel):
    """One `[servers.NAME]` table."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    command: str | None = None
    """The program to start (stdio)."""
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Added to the few variables a server inherits (PATH, HOME, ...; not API keys)."""
    cwd: Path | None = None
    stderr_log: Path | None = None
    """Append the server's stderr to this file rather than rolepool's (keeps a live view clean)."""
    url: str | None = None
    """A Streamable HTTP endpoint, `http(s)://host:port/mcp`."""
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_env: str | None = None
    prefix: str | None = None
    allow: dict[str, list[str]] | None = None
    needs_approval: bool | list[str] = False
    timeout: float = Field(default=30.0, gt=0, le=86_400)
    connect_timeout: float = Field(default=30.0, gt=0, le=3_600)


class MCPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    servers: dict[str, ServerConfig] = Field(default_factory=dict)


def load_mcp_config(path: str | Path) -> list[MCPServer]:
    """The servers a config file names, not yet started (`async with` each, or `open_servers`)."""
    where = f"MCP config {path}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        config = MCPConfig.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", where=where) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=where) from None
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        place = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"{place}: {error['msg']}", where=where) from None
    if not config.servers:
        raise ConfigError("names no server; add a [servers.NAME] table", where=where)
    return [_server(name, server) for name, server in config.servers.items()]


def _server(name: str, config: ServerConfig) -> MCPServer:
    if (config.command is None) == (config.url is None):
        raise ConfigError("give either command (stdio) or url (HTTP)", where=f"MCP server {name!r}")
    options = {
        "prefix": config.prefix,
        "allow": config.allow,
        "needs_approval": config.needs_approval,
        "timeout": config.timeout,
        "connect_timeout": config.connect_timeout,
    }
    if config.command is not None:
        return MCPServer.stdio(
            name,
            config.command,
            config.args,
            env=config.env,
            cwd=config.cwd,
            stderr_log=config.stderr_log,
            **options,
        )
    assert config.url is not None
    return MCPServer.http(
        name,
        config.url,
        headers=config.headers,
        bearer_token_env=config.bearer_token_env,
        **options,
    )
