"""`rolepool run`: errors are one message and exit 2; the default pool runs end to end offline."""

from __future__ import annotations

import json

import pytest

from rolepool.cli import main
from rolepool.runtime import EventStore


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "   "], "the task is empty"),
        (["run", "x", "--pool", "nope.toml"], "--pool: no such file: nope.toml"),
        (["run", "x", "--max-turns", "0"], "--max-turns"),
        (["run", "x", "--concurrency", "0"], "--concurrency: must be at least 1"),
        (["run", "x", "--approve", "rm_rf"], "no agent has the tools ['rm_rf']"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow  # loads the shipped checkpoints
def test_default_pool_end_to_end_on_the_shipped_models(tmp_path, capsys, isolated_store):
    task = "Plan this: have the coder test the parser, and ask the search agent to find the routing policy."
    code = main(["run", task, "--yes", "--json", "--workspace", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert len(result["steps"]) >= 2 and result["report"] == str(tmp_path / "report.md")
    with EventStore(isolated_store) as store:
        events = store.events(result["run_id"])
    assert events[-1].type == "run.finished"
    started = [e for e in events if e.type == "agent.started"]
    assert started[0].agent == "planner" and started[-1].agent == "writer"
    executed = [(e.agent, e.tool) for e in events if e.type == "tool.started"]
    assert executed.count(("planner", "assign")) >= 2
    assert ("writer", "write_section") in executed
    # the steps ran at the same time: both started before either finished
    steps = [e for e in events if e.type in ("agent.started", "agent.finished")
             and e.agent not in ("planner", "writer")]  # fmt: skip
    assert [e.type for e in steps[:2]] == ["agent.started", "agent.started"]
    assert main(["trace", "show", result["run_id"]]) == 0
    shown = capsys.readouterr().out
    assert "assign" in shown and "write_section" in shown


@pytest.mark.anyio
async def test_pool_file_of_openai_workers_and_approval_without_a_terminal(
    tmp_path, isolated_store, capsys
):
    """`--pool` with an OpenAI-compatible worker (a real `rolepool serve` over a role-scripted
    worker); `run_python` needs approval by default and, with no terminal and no --yes, is
    refused while the run goes on."""
    import anyio
    from serving import running
    from workflow_scripts import role_worker

    served = role_worker()
    async with running(served) as url:
        pool = tmp_path / "pool.toml"
        pool.write_text(
            f'[workers.remote]\nbackend = "openai"\nurl = "{url}/v1"\nmodel = "roles"\n'
            '[policy]\nversion = "cli-1"\n[policy.default]\nchoices = [{ worker = "remote" }]\n'
        )
        argv = ["run", "Go.", "--pool", str(pool), "--json", "--workspace", str(tmp_path / "ws")]
        code = await anyio.to_thread.run_sync(main, argv)
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    coder = next(s for s in result["steps"] if s["role"] == "coder")
    assert "nobody to ask" in coder["answer"] and "--yes" in coder["answer"]
    with EventStore(isolated_store) as store:
        events = store.events(result["run_id"])
    refused = [e for e in events if e.type == "approval.resolved"]
    assert [(e.tool, e.approved) for e in refused] == [("run_python", False)]
    assert not any(e.type == "tool.started" and e.tool == "run_python" for e in events)
    assert {e.worker for e in events if e.type == "model.completed"} == {"remote"}


@pytest.mark.anyio
async def test_progress_counts_agents_calls_and_tokens(tmp_path):
    from rich.console import Console
    from workflow_scripts import role_worker

    from rolepool import Workflow
    from rolepool.agents.run_cli import _Progress

    view = _Progress()
    lines = []
    async with Workflow().start("Go.", worker=role_worker(), workspace=tmp_path) as run:
        async for event in run.events():
            lines.append(view.update(event))
    assert [r["agent"] for r in view.agents.values()] == ["planner", "coder", "search", "writer"]
    assert all(r["status"] == "done" for r in view.agents.values())
    assert view.calls == sum(1 for line in lines if line and "⚙" in line) >= 8
    assert view.tokens > 0 and view.invalid == 0
    console = Console(width=120, record=True)
    console.print(view.table())
    shown = console.export_text()
    assert "tool calls" in shown
    assert "writer" in shown


@pytest.mark.anyio
async def test_prompter_asks_on_a_terminal(monkeypatch):
    from rich.console import Console

    from rolepool import ApprovalRequest
    from rolepool.agents import run_cli

    request = ApprovalRequest("run_x", "coder", "coder", "run_python", "c1", {"code": "[b]x"})
    err = Console(record=True, width=200)
    assert (await run_cli._Prompter(err, yes=True).approve(request)).approved
    monkeypatch.setattr(run_cli.sys.stdin, "isatty", lambda: True)
    answers = iter(["y", "n"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    prompter = run_cli._Prompter(err, yes=False)
    assert (await prompter.approve(request)).approved
    refused = await prompter.approve(request)
    assert not refused.approved and refused.reason == "refused by the user"
    assert 'coder wants to call run_python {"code": "[b]x"}' in err.export_text()
