"""`kill -9` a `rolepool run` on the shipped models after N events have reached the store, then
`rolepool run --resume`: the resumed run reaches the uninterrupted run's answer and report, and no
tool call ran twice (counted from the stored events of both runs: a call that ran has a
`tool.started`; a replayed one only a `tool.finished` marked `replayed`)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from rolepool.runtime import EventStore
from rolepool.runtime.replay import SpanKeys

pytestmark = pytest.mark.slow

TASK = (
    "Plan this: have the coder test the parser, and ask the search agent to find the routing "
    "policy."
)
RUN = [sys.executable, "-c", "import sys; from rolepool.cli import main; sys.exit(main())", "run"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*RUN, *args], capture_output=True, text=True, env=_env(), timeout=600, check=False
    )
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def _events_in(db) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _kill_after(n: int, db, workspace) -> int:
    """Start a run, SIGKILL it once `n` events are stored; returns how many were stored."""
    proc = subprocess.Popen(
        [*RUN, TASK, "--json", "--yes", "--db", str(db), "--workspace", str(workspace)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 300
        while _events_in(db) < n:
            assert proc.poll() is None, f"the run ended before {n} events"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _events_in(db)


def _executions(events) -> Counter[str]:
    """How often each tool call (by its resume key) really ran in these runs; a workflow step
    (`assign`) runs again by design, its agent's own calls are what must not."""
    ran: Counter[str] = Counter()
    for run in events:
        keys = SpanKeys()
        for event in run:
            key = keys.see(event)
            if event.type == "tool.started" and event.tool != "assign":
                ran[key] += 1
    return ran


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    done = _run(TASK, "--json", "--yes", "--db", str(tmp / "e.db"), "--workspace", str(tmp / "ws"))
    return json.loads(done.stdout), (tmp / "ws" / "report.md").read_text()


@pytest.mark.parametrize("n", [4, 12, 22, 31, 44])
def test_kill_9_then_resume_matches_the_uninterrupted_run(tmp_path, uninterrupted, n):
    full, report = uninterrupted
    db, workspace = tmp_path / "e.db", tmp_path / "ws"
    stored = _kill_after(n, db, workspace)
    listing = _run("--db", str(db), "--json", check=False)  # `run` needs a task or --resume
    assert listing.returncode == 2 and "task is empty" in listing.stderr
    with EventStore(db) as store:
        (summary,) = store.runs()
        assert summary.status == "interrupted", stored
        killed = store.events(summary.run_id)
    assert killed[-1].type != "run.finished"
    done = _run("--resume", summary.run_id, "--json", "--yes", "--db", str(db))
    resumed = json.loads(done.stdout)
    assert resumed["workspace"] == str(workspace)
    with EventStore(db) as store:
        again = store.events(resumed["run_id"])
        assert store.status(summary.run_id) == "interrupted"
        assert store.resumed_by(summary.run_id) == resumed["run_id"]
    assert again[0].resumed_from == summary.run_id
    ran = _executions([killed, again])
    assert ran and max(ran.values()) == 1, (stored, ran)  # no call ran twice
    in_flight = {e.span_id for e in killed if e.type == "tool.started"} - {
        e.span_id for e in killed if e.type == "tool.finished"
    }
    cut_tools = {e.tool for e in killed if e.span_id in in_flight and e.type == "tool.started"}
    if cut_tools <= {"assign"}:  # no call was cut off mid-way: the very same run
        assert resumed["output"] == full["output"], stored
        assert resumed["plan"] == full["plan"], stored
        assert (workspace / "report.md").read_text() == report, stored
    # a finished run is not resumed: one message, exit 2
    refused = _run("--resume", resumed["run_id"], "--db", str(db), check=False)
    assert refused.returncode == 2 and "cannot be resumed: it has finished" in refused.stderr
    assert "Traceback" not in refused.stderr
