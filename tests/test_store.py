"""The SQLite event store: round trips, run listing, default path, and crash durability."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from rolepool.core import ConfigError
from rolepool.core.events import ModelRequested, RunFinished, RunStarted, ToolFinished
from rolepool.runtime import EventStore, default_store_path


def test_round_trip_and_listing(tmp_path):
    store = EventStore(tmp_path / "e.db")
    store.append(RunStarted(run_id="run_a", seq=0, task="alpha", agent="x", ts=100.0))
    store.append(
        ToolFinished(
            run_id="run_a", seq=1, agent="x", call_id="c1", tool="t", result="ok", ts=100.5
        )
    )
    store.append(RunFinished(run_id="run_a", seq=2, output="done", ts=101.0))
    store.append(RunStarted(run_id="run_b", seq=0, task="beta", ts=200.0))
    events = store.events("run_a")
    assert [e.type for e in events] == ["run.started", "tool.finished", "run.finished"]
    assert isinstance(events[1], ToolFinished) and events[1].result == "ok"
    assert [e.seq for e in store.events("run_a", after_seq=0)] == [1, 2]
    runs = store.runs()
    assert [(r.run_id, r.status, r.events) for r in runs] == [
        ("run_b", "unknown", 1),  # no end and no owner recorded: cannot tell running from dead
        ("run_a", "finished", 3),
    ]
    assert runs[1].ended == 101.0 and runs[1].task == "alpha"
    assert sorted(store.find_run("run_")) == ["run_a", "run_b"]
    assert store.find_run("run_b") == ["run_b"]
    assert store.find_run("nope") == []
    # WAL, so readers in other processes never block the writer
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_events_stored_before_a_field_rename_still_load(tmp_path):
    """`ModelRequested.messages` (a count) became `message_count`; stored rows keep the old name."""
    path = tmp_path / "e.db"
    store = EventStore(path)
    old_body = json.dumps(
        {
            "type": "model.requested",
            "run_id": "run_old",
            "span_id": "s1",
            "seq": 0,
            "ts": 1.0,
            "agent": "a",
            "role": "coder",
            "turn": 1,
            "messages": 3,
            "tools": ["add"],
        }
    )
    store._db.execute(
        "INSERT INTO events (run_id, seq, type, ts, span_id, parent_id, body)"
        " VALUES ('run_old', 0, 'model.requested', 1.0, 's1', NULL, ?)",
        (old_body,),
    )
    store.append(
        ModelRequested(run_id="run_new", seq=0, agent="a", role="coder", turn=1, message_count=5)
    )
    old, new = store.events("run_old")[0], store.events("run_new")[0]
    assert isinstance(old, ModelRequested) and old.message_count == 3 and old.tools == ["add"]
    assert isinstance(new, ModelRequested) and new.message_count == 5
    assert '"message_count":5' in new.model_dump_json()


def test_default_path_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ROLEPOOL_EVENTS_DB", str(tmp_path / "x.db"))
    assert default_store_path() == tmp_path / "x.db"
    monkeypatch.delenv("ROLEPOOL_EVENTS_DB")
    monkeypatch.setenv("ROLEPOOL_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "events.db"
    monkeypatch.delenv("ROLEPOOL_HOME")
    assert default_store_path().name == "events.db" and "rolepool" in str(default_store_path())


def test_unopenable_store_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot open the event store"):
        EventStore(blocker / "events.db")


CHILD = textwrap.dedent(
    """
    import json, sys, time, anyio
    from rolepool import Agent, FunctionWorker, tool
    from rolepool.runtime import EventStore, new_scope
    from rolepool.runtime.run import execute
    from rolepool.runtime.loop import run_agent

    calls = 0

    @tool
    def step(n: int) -> str:
        "A step; the fourth one hangs so the parent can kill us mid-run."
        global calls
        calls += 1
        if calls == 4:
            time.sleep(600)
        return f"step {n} done"

    worker = FunctionWorker(lambda req: json.dumps({"name": "step", "arguments": {"n": len(req.messages)}}))
    agent = Agent("crashy", tools=[step], max_turns=100)

    async def main():
        scope = new_scope(store=EventStore(sys.argv[1]))
        scope.stream.add_listener(lambda e: print("EMITTED", e.seq, e.type, flush=True))
        await execute(scope, "crash me", lambda s: run_agent(agent.loop_inputs(), "crash me", worker, s))

    anyio.run(main)
    """
)


def _observe_then_kill(script, db, stop) -> list[tuple[int, str]]:
    """Run the child, collect the events its listener saw, SIGKILL it once `stop(observed)`."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True
    )
    observed: list[tuple[int, str]] = []
    try:
        for line in proc.stdout:
            _, seq, kind = line.split()
            observed.append((int(seq), kind))
            if stop(observed):
                break
        else:
            pytest.fail(f"child ended early with {proc.wait()}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return observed


def test_events_survive_a_killed_process(tmp_path):
    """Killed right after its listener saw the fourth `tool.started` (the tool then hangs):
    the store holds exactly what was observed, and the run reads as still running."""
    db, script = tmp_path / "crash.db", tmp_path / "child.py"
    script.write_text(CHILD)
    observed = _observe_then_kill(
        script, db, lambda seen: sum(kind == "tool.started" for _, kind in seen) == 4
    )
    assert len(observed) > 10  # several turns happened before the kill
    store = EventStore(db)
    run_id = store.runs()[0].run_id
    stored = [(e.seq, e.type) for e in store.events(run_id)]
    assert stored == observed
    assert stored[-1][1] == "tool.started"  # the run died inside its fourth tool call
    assert store.runs()[0].status == "interrupted"


FLOOD = textwrap.dedent(
    """
    import sys, time, anyio
    from rolepool.core.events import RunStarted
    from rolepool.runtime import EventStore, EventStream

    def listener(e):
        print("EMITTED", e.seq, e.type, flush=True)
        if e.seq == 3000:  # mid-batch: stall the process right after this event was published
            time.sleep(600)

    async def main():
        stream = EventStream("run_flood", store=EventStore(sys.argv[1]))
        stream.add_listener(listener)
        for i in range(10_000_000):  # many events per loop iteration: group commits
            stream.emit(RunStarted(run_id="run_flood", task=str(i)))
            if i % 37 == 0:
                await anyio.sleep(0)

    anyio.run(main)
    """
)


def test_group_commit_loses_nothing_observed_on_kill(tmp_path):
    """Killed mid-flood, right after a listener saw an event in the middle of a group: every event
    observed is stored, in order; the store may hold a few more (committed, not yet published)."""
    db, script = tmp_path / "flood.db", tmp_path / "flood.py"
    script.write_text(FLOOD)
    observed = _observe_then_kill(script, db, lambda seen: seen[-1][0] == 3000)
    stored = [(e.seq, e.type) for e in EventStore(db).events("run_flood")]
    assert len(observed) == 3001 and stored[: len(observed)] == observed
    assert [seq for seq, _ in stored] == list(range(len(stored)))
