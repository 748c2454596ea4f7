"""The MCP config file: what it accepts, one message naming the server for what it does not, and
`rolepool run --mcp FILE` giving the agents the servers' tools."""

from __future__ import annotations

import json
import shutil
import sys

import anyio
import pytest
from serving import running
from workflow_scripts import calls, finish, last, role_worker

from rolepool.cli import main
from rolepool.core import ConfigError
from rolepool.runtime import EventStore
from rolepool.tools.mcp import HttpTarget, StdioTarget, load_mcp_config

GOOD = """
[servers.time]
command = "mcp-server-time"
args = ["--local-timezone", "Etc/UTC"]
allow = { search = ["get_*"] }
needs_approval = ["convert_*"]
timeout = 5

[servers.calc]
url = "http://127.0.0.1:8000/mcp"
bearer_token_env = "CALC_TOKEN"
prefix = ""
"""


def test_a_config_file_names_stdio_and_http_servers(tmp_path):
    path = tmp_path / "mcp.toml"
    path.write_text(GOOD)
    time, calc = load_mcp_config(path)
    assert time.name == "time" and time.target == StdioTarget(
        "mcp-server-time", ("--local-timezone", "Etc/UTC")
    )
    assert time.allow == {"search": ("get_*",)} and time.approval == ("convert_*",)
    assert time.timeout == 5 and time.prefix == "time."
    assert calc.target == HttpTarget("http://127.0.0.1:8000/mcp", {}, "CALC_TOKEN")
    assert calc.prefix == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[servers.x]\n", "MCP server 'x': give either command (stdio) or url (HTTP)"),
        ('[servers.x]\ncommand = "a"\nurl = "http://b"\n', "give either command"),
        ('[servers.x]\ncommand = "a"\ntoken = "secret"\n', "servers.x.token: Extra inputs"),
        ('[servers.x]\ncommand = "a"\ntimeout = 0\n', "servers.x.timeout: Input should be greater"),
        ('[servers.x]\nurl = "ftp://b"\n', "MCP server 'x': url must be http(s)://"),
        ('[servers."a b"]\ncommand = "a"\n', "MCP server 'a b': the name must be"),
        ("servers = [", "not valid TOML"),
        ("", "names no server"),
    ],
)
def test_bad_config_files_are_one_config_error(tmp_path, text, message):
    path = tmp_path / "mcp.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_mcp_config(path)


def _pool(tmp_path, url):
    pool = tmp_path / "pool.toml"
    pool.write_text(
        f'[workers.remote]\nbackend = "openai"\nurl = "{url}/v1"\nmodel = "roles"\n'
        '[policy]\nversion = "mcp-1"\n[policy.default]\nchoices = [{ worker = "remote" }]\n'
    )
    return pool


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ('command = "no-such-command-h7"', "error: MCP server 'bad': command not found"),
        ('url = "http://127.0.0.1:9/mcp"', "error: MCP server 'bad': cannot connect"),
        (
            f'command = "{sys.executable}"\nargs = ["-uc", "print(1); import time; time.sleep(9)"]',
            "error: MCP server 'bad': does not speak MCP: it wrote '1'",
        ),
    ],
)
def test_run_with_a_bad_server_is_exit_2_and_one_message(tmp_path, capsys, server, message):
    config = tmp_path / "mcp.toml"
    config.write_text(f"[servers.bad]\n{server}\n")
    pool = _pool(tmp_path, "http://127.0.0.1:9")
    assert main(["run", "Go.", "--pool", str(pool), "--mcp", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1  # one line: no run began


@pytest.mark.anyio
@pytest.mark.skipif(not shutil.which("mcp-server-time"), reason="the dev extra installs it")
async def test_run_gives_the_search_agent_the_time_tools(tmp_path, isolated_store, capsys):
    def search(request):
        if last(request).role == "user":
            return calls(("time.get_current_time", {"timezone": "Asia/Tokyo"}))
        return finish(json.loads(last(request).content)["timezone"])

    config = tmp_path / "mcp.toml"
    config.write_text(
        '[servers.time]\ncommand = "mcp-server-time"\nallow = { search = ["get_*"] }\n'
    )
    async with running(role_worker(search=search)) as url:
        argv = ["run", "Go.", "--pool", str(_pool(tmp_path, url)), "--mcp", str(config),
                "--json", "--workspace", str(tmp_path / "ws")]  # fmt: skip
        code = await anyio.to_thread.run_sync(main, argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    search_step = next(s for s in result["steps"] if s["role"] == "search")
    assert search_step["answer"] == "Asia/Tokyo"
    with EventStore(isolated_store) as store:
        events = store.events(result["run_id"])
    started = [(e.agent, e.tool, e.server) for e in events if e.type == "tool.started"]
    assert ("search", "time.get_current_time", "time") in started
    model_requests = [e for e in events if e.type == "model.requested" and e.agent == "coder"]
    assert all("time.get_current_time" not in e.tools for e in model_requests)  # not allowed
