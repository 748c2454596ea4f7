"""`rolepool mcp serve`: rolepool as an MCP server, so other agents can use it as a tool.

The command only parses its arguments; the server (`rolepool.evals.mcp_app`) and the MCP SDK are
imported when it runs, so every other `rolepool` command starts without them. It lives beside the
evals because its `run_eval` tool runs them.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import anyio

from rolepool.cli_args import TEXT_FILE, Int, OutputDir
from rolepool.core import ConfigError


def add_mcp_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `mcp serve` on the `rolepool` command's subparsers."""
    parser = subparsers.add_parser("mcp", help="rolepool as an MCP server")
    commands = parser.add_subparsers(dest="mcp_command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve run_workflow and run_eval to MCP clients (stdio or Streamable HTTP)",
        description="Serve two MCP tools, run_workflow(task) and run_eval(suite, workers, "
        "limit), with progress notifications. Offline on the shipped models unless --pool.",
    )
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (127.0.0.1)")
    serve.add_argument("--port", type=Int(1, 65535), default=8765, help="HTTP port (8765)")
    serve.add_argument(
        "--token-env", metavar="NAME", help="HTTP: require a bearer token, read from $NAME"
    )
    serve.add_argument("--pool", type=TEXT_FILE, metavar="FILE", help="pool config (TOML)")
    serve.add_argument("--mcp", type=TEXT_FILE, metavar="FILE", help="MCP servers for the agents")
    serve.add_argument("--approve", default="run_python", metavar="TOOLS", help="need approval")
    serve.add_argument("--yes", action="store_true", help="approve every tool call")
    serve.add_argument(
        "--out", type=OutputDir(), metavar="DIR", help="where run_eval writes results (tmp)"
    )
    serve.set_defaults(handler=cmd_mcp_serve)
    return parser


def cmd_mcp_serve(args: argparse.Namespace, out: Any) -> int:
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ConfigError(
                f"environment variable {args.token_env} is not set", where="--token-env"
            )
    from rolepool.evals.mcp_app import serve

    anyio.run(serve, args, token)
    return 0
