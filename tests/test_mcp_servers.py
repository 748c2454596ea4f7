"""MCP tools against real servers: `mcp-server-time` and `mcp-server-git` from the package
registry over stdio (the `dev` extra installs them), and a Streamable HTTP server written here
with the SDK's server API. Agent runs use a scripted worker; the answers are the servers' own."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator

import anyio
import pytest
import uvicorn
from mcp.server.mcpserver import Context
from mcp.server.mcpserver import MCPServer as SDKServer

from rolepool import Agent, ScriptedWorker, ToolCall, Workflow
from rolepool.core import ConfigError, ToolError
from rolepool.runtime import EventStore
from rolepool.tools.mcp import MCPServer, mcp_tools

pytestmark = pytest.mark.anyio

needs_servers = pytest.mark.skipif(
    not (shutil.which("mcp-server-time") and shutil.which("mcp-server-git")),
    reason="pip install -e '.[dev]' installs mcp-server-time and mcp-server-git",
)


def _tool_messages(worker: ScriptedWorker) -> list[str]:
    return [m.content for m in worker.requests[-1].messages if m.role == "tool"]


@needs_servers
async def test_an_agent_uses_mcp_server_time(isolated_store):
    async with MCPServer.stdio("time", "mcp-server-time", ["--local-timezone", "Etc/UTC"]) as time:
        assert {t.name for t in time.tools()} == {"time.get_current_time", "time.convert_time"}
        agent = Agent("clock", role="search", mcp=[time])
        worker = ScriptedWorker(
            [
                [ToolCall(id="a", name="time.get_current_time", arguments={"timezone": 9})],
                [
                    ToolCall(
                        id="b", name="time.get_current_time", arguments={"timezone": "Asia/Tokyo"}
                    )
                ],
                [
                    ToolCall(
                        id="c",
                        name="time.convert_time",
                        arguments={
                            "source_timezone": "Europe/Paris",
                            "time": "12:00",
                            "target_timezone": "Asia/Tokyo",
                        },
                    )
                ],
                [
                    ToolCall(
                        id="d", name="time.get_current_time", arguments={"timezone": "Mars/Olympus"}
                    )
                ],
                "It is evening in Tokyo.",
            ]
        )
        result = await agent.run("What time is it in Tokyo?", worker=worker)
    assert result.output == "It is evening in Tokyo."
    invalid, tokyo, converted, unknown = _tool_messages(worker)
    assert "invalid call, not executed" in invalid and "9 is not of type 'string'" in invalid
    assert (
        json.loads(tokyo)["timezone"] == "Asia/Tokyo" and "+09:00" in json.loads(tokyo)["datetime"]
    )
    assert json.loads(converted)["target"]["datetime"].endswith("T20:00:00+09:00")
    assert "Invalid timezone" in unknown
    with EventStore(isolated_store) as store:
        events = store.events(result.run_id)
    started = [e for e in events if e.type == "tool.started"]
    assert [e.server for e in started] == ["time"] * 3
    assert [e.kind for e in events if e.type == "tool.call.invalid"] == ["schema"]
    finished = [e for e in events if e.type == "tool.finished"]
    assert finished[-1].error and "Invalid timezone" in finished[-1].error


@needs_servers
async def test_a_workflow_role_uses_mcp_server_git_on_a_repository(tmp_path, isolated_store):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=T"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "notes.txt").write_text("first\n")
    subprocess.run([*git, "add", "notes.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "add the notes"], check=True)
    (repo / "notes.txt").write_text("first\nsecond\n")
    server = MCPServer.stdio(
        "git",
        "mcp-server-git",
        ["--repository", str(repo)],
        allow={"coder": ["git_status", "git_log", "git_diff_unstaged"]},
    )
    async with server:
        flow = Workflow(mcp=[server])
        coder = {t.name for t in flow.loop_inputs("coder").tools}
        assert {"git.git_status", "git.git_log", "git.git_diff_unstaged"} <= coder
        assert not any(
            name.startswith("git.") for name in (t.name for t in flow.loop_inputs("writer").tools)
        )
        assert "git.git_commit" not in coder
        worker = ScriptedWorker(
            [
                [
                    ToolCall(
                        id="a",
                        name="git.git_log",
                        arguments={"repo_path": str(repo), "max_count": "two"},
                    )
                ],
                [
                    ToolCall(
                        id="b",
                        name="git.git_log",
                        arguments={"repo_path": str(repo), "max_count": 1},
                    )
                ],
                [
                    ToolCall(
                        id="c", name="git.git_diff_unstaged", arguments={"repo_path": str(repo)}
                    )
                ],
                "done",
            ]
        )
        result = await Agent("gitter", role="coder", mcp=[server]).run("log", worker=worker)
    assert result.output == "done"
    invalid, log, diff = _tool_messages(worker)
    assert "'two' is not of type 'integer'" in invalid
    assert "add the notes" in log
    assert "+second" in diff


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_app() -> SDKServer:
    app = SDKServer("calc")

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @app.tool()
    def whoami(ctx: Context) -> str:
        """The Authorization header this call came with."""
        return (ctx.headers or {}).get("authorization", "none")

    @app.tool()
    async def grow(ctx: Context) -> str:
        """Add a tool and say so."""
        app.add_tool(lambda: "new", name="sprouted", description="Added at run time.")
        await ctx.notify_tools_changed()
        return "grown"

    return app


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        _http_app().streamable_http_app(), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.02)
        yield f"http://127.0.0.1:{port}/mcp"
        server.should_exit = True


async def test_streamable_http_server_tools_token_and_list_changes(http_server, monkeypatch):
    monkeypatch.setenv("H7_TOKEN", "s3cret")
    async with MCPServer.http("calc", http_server, bearer_token_env="H7_TOKEN", timeout=10) as calc:
        tools = {t.name: t for t in calc.tools()}
        assert set(tools) == {"calc.add", "calc.whoami", "calc.grow"}
        assert tools["calc.add"].validate({"a": 1, "b": "x"})
        assert json.loads(await tools["calc.add"].call({"a": 2, "b": 40})) == {"result": 42}
        assert json.loads(await tools["calc.whoami"].call({})) == {"result": "Bearer s3cret"}
        assert json.loads(await tools["calc.grow"].call({})) == {"result": "grown"}
        with anyio.fail_after(10):
            while "calc.sprouted" not in {t.name for t in calc.tools()}:
                await anyio.sleep(0.05)
        assert mcp_tools([calc], "coder")[-1].server == "calc"


async def test_http_reconnects_after_the_server_restarts(monkeypatch):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"

    async def serve(ready: anyio.Event, stop: anyio.Event) -> None:
        config = uvicorn.Config(
            _http_app().streamable_http_app(), host="127.0.0.1", port=port, log_level="warning"
        )
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            while not server.started:
                await anyio.sleep(0.02)
            ready.set()
            await stop.wait()
            server.should_exit = True

    async with anyio.create_task_group() as tg:
        ready, stop = anyio.Event(), anyio.Event()
        tg.start_soon(serve, ready, stop)
        await ready.wait()
        async with MCPServer.http("calc", url, timeout=5) as calc:
            add = next(t for t in calc.tools() if t.name == "calc.add")
            assert await add.call({"a": 1, "b": 1}) == '{"result": 2}'
            stop.set()
            await anyio.sleep(0.5)
            with pytest.raises(ToolError):  # the server is gone
                await add.call({"a": 1, "b": 2})
            ready, stop = anyio.Event(), anyio.Event()
            tg.start_soon(serve, ready, stop)
            await ready.wait()
            with anyio.fail_after(20):
                while True:
                    try:
                        assert await add.call({"a": 2, "b": 2}) == '{"result": 4}'
                        break
                    except Exception:  # noqa: BLE001 - the backoff may refuse once more
                        await anyio.sleep(0.2)
            stop.set()


async def test_a_missing_token_variable_is_a_config_error(http_server, monkeypatch):
    monkeypatch.delenv("H7_MISSING", raising=False)
    with pytest.raises(
        ConfigError, match="^MCP server 'calc': environment variable H7_MISSING is not set$"
    ):
        async with MCPServer.http("calc", http_server, bearer_token_env="H7_MISSING"):
            pass
