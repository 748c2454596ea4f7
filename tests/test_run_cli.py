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
