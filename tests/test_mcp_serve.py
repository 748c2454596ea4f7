"""`rolepool mcp serve`, tested with the official `mcp` client over stdio and Streamable HTTP: the
workflow and eval tools answer, progress arrives while they run, approval is refused without
--yes, and a wrong token is refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from serving import running
from workflow_scripts import role_worker

from rolepool.cli import main
from rolepool.runtime import EventStore

pytestmark = pytest.mark.anyio


def _pool_file(tmp_path: Path, url: str) -> Path:
    pool = tmp_path / "pool.toml"
    pool.write_text(
        f'[workers.remote]\nbackend = "openai"\nurl = "{url}/v1"\nmodel = "roles"\n'
        '[policy]\nversion = "mcp-1"\n[policy.default]\nchoices = [{ worker = "remote" }]\n'
    )
    return pool


async def test_run_workflow_over_stdio_with_progress(tmp_path, isolated_store):
    async with running(role_worker()) as url:
        pool = _pool_file(tmp_path, url)
        command = [sys.executable, "-m", "rolepool.cli", "mcp", "serve", "--pool", str(pool)]
        env = {"ROLEPOOL_EVENTS_DB": str(isolated_store)}
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # the rolepool these tests import
        params = StdioServerParameters(command=command[0], args=command[1:], env=env)
        progress: list[tuple[float, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, message))

        async with Client(params) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            assert listed == {"run_workflow", "run_eval"}
            with anyio.fail_after(60):
                result = await client.call_tool(
                    "run_workflow", {"task": "Go."}, progress_callback=on_progress
                )
    assert not result.is_error, result.content
    answer = result.structured_content
    assert answer["output"] and answer["run_id"].startswith("run_")
    coder = next(s for s in answer["steps"] if s["role"] == "coder")
    assert "approves no tool without --yes" in coder["answer"]  # run_python was refused
    assert ("planner started") in [m for _, m in progress]
    assert [d for d, _ in progress] == sorted(d for d, _ in progress) and len(progress) >= 6
    with EventStore(isolated_store) as store:
        events = store.events(answer["run_id"])
    assert events[-1].type == "run.finished"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_run_eval_over_http_with_a_token(tmp_path):
    async with running(role_worker()) as url:
        pool = _pool_file(tmp_path, url)
        port = _free_port()
        env = {**os.environ, "H7_MCP_TOKEN": "tok-123"}
        argv = [sys.executable, "-m", "rolepool.cli", "mcp", "serve", "--transport", "http",
                "--port", str(port), "--token-env", "H7_MCP_TOKEN", "--pool", str(pool),
                "--out", str(tmp_path / "evals")]  # fmt: skip
        log = (tmp_path / "serve.log").open("w")
        server = subprocess.Popen(argv, env=env, stderr=log)
        try:
            _wait_for_port(port)
            endpoint = f"http://127.0.0.1:{port}/mcp"
            progress: list[float] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(done)

            http = create_mcp_http_client(headers={"Authorization": "Bearer tok-123"})
            async with Client(streamable_http_client(endpoint, http_client=http)) as client:
                with anyio.fail_after(60):
                    result = await client.call_tool(
                        "run_eval", {"suite": "roles", "limit": 2}, progress_callback=on_progress
                    )
                bad = await client.call_tool("run_eval", {"suite": "/etc/passwd"})
            assert bad.is_error and "suite must be one of" in bad.content[0].text
            wrong = create_mcp_http_client(headers={"Authorization": "Bearer nope"})
            with pytest.raises(Exception):  # noqa: B017 - refused with 401 before any MCP
                async with Client(streamable_http_client(endpoint, http_client=wrong)):
                    pass
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()
    assert not result.is_error, result.content
    summary = result.structured_content
    assert summary["results"] == 2 and list(summary["workers"]) == ["remote"]
    assert Path(summary["results_dir"]).parent == tmp_path / "evals"
    assert progress == [1, 2]


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 60  # a loaded CI machine starts python slowly
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")  # see serve.log


def test_bad_mcp_config_is_exit_2_naming_the_server(tmp_path, capsys):
    config = tmp_path / "mcp.toml"
    config.write_text('[servers.ghost]\ncommand = "no-such-command-h7"\n')
    pool = _pool_file(tmp_path, "http://127.0.0.1:9")
    assert main(["mcp", "serve", "--pool", str(pool), "--mcp", str(config)]) == 2
    err = capsys.readouterr().err
    assert "MCP server 'ghost': command not found: no-such-command-h7" in err
    assert "Traceback" not in err
