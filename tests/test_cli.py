"""`rolepool trace` over a real stored run, and the CLI's handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rolepool import Agent, ScriptedWorker, tool
from rolepool.cli import main


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: which key
    """
    return f"value-of-{key}"


@pytest.fixture
def recorded_run():
    worker = ScriptedWorker(
        [
            '{"name": "lookup", "arguments": {"key": 7}}',
            '{"name": "lookup", "arguments": {"key": "alpha"}}',
            "alpha is value-of-alpha",
        ]
    )
    return Agent("finder", role="search", tools=[lookup]).run_sync("find alpha", worker=worker)


def test_trace_show_prints_the_tree(recorded_run, capsys):
    assert main(["trace", "show", recorded_run.run_id[:12]]) == 0
    out = capsys.readouterr().out
    assert f"run {recorded_run.run_id} finished" in out
    assert "agent finder (search)  3 turns" in out
    assert out.count("model turn") == 3
    assert "✗ invalid lookup (schema)" in out and "$.key" in out
    assert 'tool lookup({"key": "alpha"})  ✓' in out and "value-of-alpha" in out
    # nesting: the tool line is drawn one level below the agent line
    lines = out.splitlines()
    agent_line = next(i for i, l in enumerate(lines) if "agent finder" in l)
    tool_line = next(i for i, l in enumerate(lines) if "tool lookup" in l)
    assert lines[tool_line].index("tool") > lines[agent_line].index("agent")


def test_trace_show_json_prints_raw_events(recorded_run, capsys):
    assert main(["trace", "show", recorded_run.run_id, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["type"] == "run.started" and rows[-1]["type"] == "run.finished"
    assert [r["seq"] for r in rows] == list(range(len(rows)))


def test_trace_list(recorded_run, capsys):
    assert main(["trace", "list"]) == 0
    out = capsys.readouterr().out
    assert recorded_run.run_id in out and "finished" in out and "find alpha" in out


def test_unknown_run_is_a_clear_error(recorded_run, capsys):
    assert main(["trace", "show", "run_doesnotexist"]) == 2
    err = capsys.readouterr().err
    assert "no run with id 'run_doesnotexist'" in err and "Traceback" not in err


def test_missing_store_is_a_clear_error(tmp_path, capsys):
    assert main(["trace", "list", "--db", str(tmp_path / "none.db")]) == 2
    assert "no event store at" in capsys.readouterr().err


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "rolepool.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "trace" in out
    bad = subprocess.run(
        [sys.executable, "-m", "rolepool.cli", "trace", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
