"""MCP servers that misbehave: each ends in a typed error or a cut result, never a hang, a crashed
run or a process left behind. The server here is a hand-written JSON-RPC loop (handshake-era
protocol), so it can do what no SDK server would: exit mid-call, never answer, flood."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from rolepool import Agent, ScriptedWorker, ToolCall
from rolepool.core import ConfigError, ToolError
from rolepool.runtime import EventStore
from rolepool.tools.mcp import MCPServer, mcp_tools

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

HOSTILE = textwrap.dedent(
    r"""
    import json, os, sys, time

    with open(os.environ["PIDFILE"], "a") as f:
        f.write(f"{os.getpid()}\n")
    sys.stderr.write("hostile: up\n")
    sys.stderr.flush()

    def send(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def obj(props=None):
        return {"type": "object", "properties": props or {}}

    TOOLS = [
        {"name": "echo", "description": "Echo the text.", "inputSchema": obj({"text": {"type": "string"}}) | {"required": ["text"]}},
        {"name": "big", "inputSchema": obj()},
        {"name": "large", "inputSchema": obj()},
        {"name": "env", "inputSchema": obj()},
        {"name": "hang", "inputSchema": obj()},
        {"name": "die", "inputSchema": obj()},
        {"name": "flood", "inputSchema": obj()},
        {"name": "image", "inputSchema": obj()},
        {"name": "fail", "inputSchema": obj()},
        {"name": "run_python", "inputSchema": obj({"code": {"type": "string"}})},
        {"name": "broken_schema", "inputSchema": obj({"x": {"type": "nonsense"}})},
        {"name": "dangling_ref", "inputSchema": obj({"x": {"$ref": "#/$defs/missing"}})},
        {"name": "huge_schema", "inputSchema": obj({f"p{i}": {"type": "string", "description": "x" * 50} for i in range(5000)})},
        {"name": "bad name!", "inputSchema": obj()},
    ]
    if os.environ.get("BAD_LISTING"):
        TOOLS.append({"name": "not_a_schema", "inputSchema": "nope"})
    listed = 0

    for line in sys.stdin:
        msg = json.loads(line)
        mid, method = msg.get("id"), msg.get("method")
        if mid is None:
            continue
        if method == "initialize":
            version = msg["params"]["protocolVersion"]
            send({"jsonrpc": "2.0", "id": mid, "result": {"protocolVersion": version,
                  "capabilities": {"tools": {"listChanged": True}},
                  "serverInfo": {"name": "hostile", "version": "0"}}})
        elif method == "tools/list":
            listed += 1
            tools = TOOLS + [{"name": f"added_{listed}", "inputSchema": obj()}]
            send({"jsonrpc": "2.0", "id": mid, "result": {"tools": tools}})
        elif method == "tools/call":
            name, args = msg["params"]["name"], msg["params"].get("arguments", {})
            result = None
            if name == "echo":
                result = {"content": [{"type": "text", "text": "echo: " + args["text"]}]}
            elif name == "big":
                result = {"content": [{"type": "text", "text": "y" * 50_000_000}]}
            elif name == "env":
                result = {"content": [{"type": "text", "text": json.dumps(sorted(os.environ))}]}
            elif name == "large":
                result = {"content": [{"type": "text", "text": "z" * 2_000_000}]}
            elif name == "hang":
                time.sleep(3600)
            elif name == "die":
                os._exit(3)
            elif name == "flood":
                note = json.dumps({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                sys.stdout.write((note + "\n") * 20_000)
                result = {"content": [{"type": "text", "text": "flooded"}]}
            elif name == "image":
                result = {"content": [{"type": "image", "data": "QUJD" * 1000, "mimeType": "image/png"}],
                          "structuredContent": {"width": 3}}
            elif name == "fail":
                result = {"content": [{"type": "text", "text": "disk on fire"}], "isError": True}
            else:
                result = {"content": [{"type": "text", "text": f"ran {name}"}]}
            send({"jsonrpc": "2.0", "id": mid, "result": result})
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "no " + str(method)}})
    """
)


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """A factory of hostile servers; yields it and then checks every process it started is gone."""
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    pidfile = tmp_path / "pids"
    pidfile.touch()

    def make(**options) -> MCPServer:
        options.setdefault("timeout", 3)
        options.setdefault("connect_timeout", 20)
        env = {"PIDFILE": str(pidfile), **options.pop("extra_env", {})}
        return MCPServer.stdio("hostile", sys.executable, [str(script)], env=env, **options)

    make.pids = lambda: [int(p) for p in pidfile.read_text().split()]  # type: ignore[attr-defined]
    yield make
    assert [p for p in make.pids() if _alive(p)] == []  # type: ignore[attr-defined]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _tool(server: MCPServer, remote: str):
    return next(t for t in server.tools() if t.remote_name == remote)


async def test_bad_schemas_and_names_are_left_out_with_the_reason(hostile):
    async with hostile() as server:
        names = {t.name for t in server.tools()}
        assert "hostile.echo" in names and "hostile.added_1" in names
        assert set(server.skipped) == {"broken_schema", "dangling_ref", "huge_schema", "bad name!"}
        assert "not a valid JSON Schema" in server.skipped["broken_schema"]
        assert "cannot be resolved" in server.skipped["dangling_ref"]
        assert "inputSchema is" in server.skipped["huge_schema"]
        assert "letters, digits" in server.skipped["bad name!"]


async def test_stderr_can_go_to_a_log_file(hostile, tmp_path):
    log = tmp_path / "logs" / "hostile.log"
    with pytest.raises(
        ConfigError,
        match="MCP server 'hostile': stderr_log: cannot open .*: No such file or directory",
    ):
        async with hostile(stderr_log=log):
            pass
    log.parent.mkdir()
    async with hostile(stderr_log=log) as server:
        await _tool(server, "echo").call({"text": "x"})
    assert log.read_text() == "hostile: up\n"


async def test_a_server_inherits_no_secrets_from_the_environment(hostile, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-servers")
    async with hostile() as server:
        names = json.loads(await _tool(server, "env").call({}))
    assert "PIDFILE" in names and "PATH" in names
    assert "OPENAI_API_KEY" not in names


async def test_a_listing_that_breaks_the_protocol_is_one_config_error(hostile):
    with pytest.raises(ConfigError) as caught:
        async with hostile(extra_env={"BAD_LISTING": "1"}):
            pass
    assert str(caught.value).startswith(
        "MCP server 'hostile': sent an MCP message that breaks the protocol's schema at "
        "tools.14.inputSchema: Input should be a valid dictionary"
    )


async def test_results_map_to_text_placeholders_and_tool_errors(hostile):
    async with hostile() as server:
        assert await _tool(server, "echo").call({"text": "hi"}) == "echo: hi"
        image = await _tool(server, "image").call({})
        assert image.splitlines() == ['{"width": 3}', "[image: image/png, 3,000 bytes]"]
        with pytest.raises(ToolError, match="disk on fire"):
            await _tool(server, "fail").call({})
        large = await _tool(server, "large").call({})
        assert len(large) < 1_100_000 and large.endswith(
            "[truncated: 2,000,000 chars from the server]"
        )
        with pytest.raises(ToolError, match="over 16,777,216 bytes"):
            await _tool(server, "big").call({})  # 50 MB: refused by the transport, not read whole
        assert await _tool(server, "echo").call({"text": "after"}) == "echo: after"


async def test_a_call_that_never_answers_times_out_and_the_server_is_restarted(hostile):
    async with hostile(timeout=1) as server:
        started = time.monotonic()
        with pytest.raises(ToolError, match="no answer within 1s"):
            await _tool(server, "hang").call({})
        assert time.monotonic() - started < 5
        assert await _tool(server, "echo").call({"text": "back"}) == "echo: back"
        assert len(hostile.pids()) == 2  # the hung process was replaced


async def test_a_server_that_exits_mid_call_is_a_tool_error_then_restarted(hostile):
    async with hostile() as server:
        with pytest.raises(ToolError, match="closed the connection"):
            await _tool(server, "die").call({})
        assert await _tool(server, "echo").call({"text": "again"}) == "echo: again"
        assert len(hostile.pids()) == 2


async def test_a_server_that_died_while_idle_is_restarted_before_the_next_call(hostile):
    async with hostile() as server:
        os.kill(hostile.pids()[0], signal.SIGKILL)
        await anyio.sleep(0.3)
        assert await _tool(server, "echo").call({"text": "fresh"}) == "echo: fresh"


async def test_restarts_back_off(hostile, monkeypatch):
    async with hostile(timeout=1) as server:
        for _ in range(2):
            with pytest.raises(ToolError):
                await _tool(server, "die").call({})
        started = time.monotonic()
        await _tool(server, "echo").call({"text": "x"})
        assert time.monotonic() - started >= 0.9  # the second failure waits 1 s before a restart


async def test_a_flood_of_list_changed_notifications_is_coalesced(hostile):
    # 20,000 notifications take the SDK about 4.5 s to read here; rolepool re-lists a few times.
    async with hostile(timeout=60) as server:
        assert await _tool(server, "flood").call({}) == "flooded"
        with anyio.fail_after(10):
            while "hostile.added_1" in {t.name for t in server.tools()}:
                await anyio.sleep(0.05)
        await anyio.sleep(0.5)
        [listed] = [t.name for t in server.tools() if t.name.startswith("hostile.added_")]
        assert 2 <= int(listed.rsplit("_", 1)[1]) < 500
        assert await _tool(server, "echo").call({"text": "still here"}) == "echo: still here"


async def test_names_that_collide_with_builtins_get_the_server_prefix(hostile):
    async with hostile(prefix="") as server:
        tools = {t.name: t for t in mcp_tools([server], "coder", taken={"run_python", "finish"})}
        assert "run_python" not in tools and "echo" in tools
        assert await tools["hostile.run_python"].call({"code": "1"}) == "ran run_python"


async def test_a_server_that_is_not_open_is_a_config_error_at_the_run(hostile):
    server = hostile()
    agent = Agent("early", role="coder", mcp=[server])
    with pytest.raises(ConfigError, match="MCP server 'hostile': is not open"):
        await agent.run("go", worker=ScriptedWorker(["done"]), store=False)


async def test_allowlist_per_role_and_approval_by_pattern(hostile):
    async with hostile(
        allow={"coder": ["echo", "f*"], "writer": ["echo"]}, needs_approval=["f*"]
    ) as s:
        coder = {t.name: t for t in mcp_tools([s], "coder")}
        assert set(coder) == {"hostile.echo", "hostile.fail", "hostile.flood"}
        assert coder["hostile.fail"].needs_approval and not coder["hostile.echo"].needs_approval
        assert [t.name for t in mcp_tools([s], "writer")] == ["hostile.echo"]
        assert mcp_tools([s], "search") == []


async def test_an_agent_run_validates_calls_and_names_the_server_in_events(hostile, isolated_store):
    async with hostile() as server:
        agent = Agent("echoer", role="coder", mcp=[server])
        worker = ScriptedWorker(
            [
                [
                    ToolCall(id="a", name="hostile.echo", arguments={"text": 5})
                ],  # invalid: never sent
                [ToolCall(id="b", name="hostile.echo", arguments={"text": "ok"})],
                [ToolCall(id="c", name="hostile.hang", arguments={})],
                [ToolCall(id="d", name="hostile.echo", arguments={"text": "after"})],
                "done",
            ]
        )
        result = await agent.run("echo", worker=worker)
    assert result.output == "done"
    tool_messages = [m.content for m in worker.requests[-1].messages if m.role == "tool"]
    assert "5 is not of type 'string'" in tool_messages[0]
    assert tool_messages[1] == "echo: ok"
    assert "no answer within 3s" in tool_messages[2]
    assert tool_messages[3] == "echo: after"
    with EventStore(isolated_store) as store:
        events = store.events(result.run_id)
    started = [e for e in events if e.type == "tool.started"]
    assert [(e.tool, e.server) for e in started] == [
        ("hostile.echo", "hostile"), ("hostile.hang", "hostile"), ("hostile.echo", "hostile"),
    ]  # fmt: skip
    assert [e.kind for e in events if e.type == "tool.call.invalid"] == ["schema"]


async def test_bad_configurations_are_one_config_error_naming_the_server(tmp_path):
    bad = [
        (MCPServer.stdio("ghost", "no-such-command-h7"), "MCP server 'ghost': command not found"),
        (
            MCPServer.stdio(
                "chatty", sys.executable, ["-uc", "print('hello'); import time; time.sleep(30)"]
            ),
            "MCP server 'chatty': does not speak MCP: it wrote 'hello', not JSON-RPC",
        ),
        (
            MCPServer.stdio("quits", sys.executable, ["-c", "pass"]),
            "MCP server 'quits': the server closed",
        ),
        (
            MCPServer.http("nowhere", "http://127.0.0.1:9/mcp"),
            "MCP server 'nowhere': cannot connect",
        ),
        (
            MCPServer.stdio(
                "mute", sys.executable, ["-c", "import time; time.sleep(30)"], connect_timeout=1
            ),
            "MCP server 'mute': no MCP handshake within 1s",
        ),
    ]
    for server, message in bad:
        with anyio.fail_after(15):
            with pytest.raises(ConfigError) as caught:
                async with server:
                    pass
        assert str(caught.value).startswith(message), str(caught.value)
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        MCPServer.stdio("t", "x", timeout=0)
    with pytest.raises(ConfigError, match="url must be"):
        MCPServer.http("u", "ftp://x")


CTRL_C = textwrap.dedent(
    """
    import os, sys, anyio
    from rolepool.tools.mcp import MCPServer

    async def main():
        env = {"PIDFILE": os.environ["PIDFILE"]}
        async with MCPServer.stdio("hostile", sys.executable, [sys.argv[1]], env=env, timeout=600) as s:
            tool = next(t for t in s.tools() if t.remote_name == "hang")
            print("calling", flush=True)
            await tool.call({})

    anyio.run(main)
    """
)


def test_ctrl_c_leaves_no_server_process(tmp_path):
    (tmp_path / "hostile.py").write_text(HOSTILE)
    (tmp_path / "main.py").write_text(CTRL_C)
    pidfile = tmp_path / "pids"
    env = {**os.environ, "PIDFILE": str(pidfile)}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "main.py"), str(tmp_path / "hostile.py")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "calling"
    time.sleep(0.3)  # the call is in flight
    [pid] = [int(p) for p in pidfile.read_text().split()]
    assert _alive(pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


async def test_spans_name_the_server_and_approval_patterns_hold_calls(hostile, isolated_store):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from rolepool import ApprovalRequest, Decision
    from rolepool.runtime.otel import disable_otel, enable_otel

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    enable_otel(provider)
    asked: list[str] = []

    async def approver(request: ApprovalRequest) -> Decision:
        asked.append(request.tool)
        return Decision(False, "not today")

    try:
        async with hostile(needs_approval=["f*"]) as server:
            worker = ScriptedWorker(
                [
                    [ToolCall(id="a", name="hostile.fail", arguments={})],
                    [ToolCall(id="b", name="hostile.echo", arguments={"text": "hi"})],
                    "done",
                ]
            )
            agent = Agent("echoer", role="coder", mcp=[server])
            await agent.run("go", worker=worker, approver=approver)
    finally:
        disable_otel()
    assert asked == ["hostile.fail"]  # only the pattern's tools wait for the approver
    refused, echoed = _tool_messages(worker)
    assert "refused (not today)" in refused and echoed == "echo: hi"
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert spans["execute_tool hostile.echo"].attributes["rolepool.mcp.server"] == "hostile"


def _tool_messages(worker: ScriptedWorker) -> list[str]:
    return [m.content for m in worker.requests[-1].messages if m.role == "tool"]
