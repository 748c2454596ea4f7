"""SECURITY.md, promise 6 (runs): kill -9 mid-way, reopen, and every event emitted before the
kill is in the store, readable, in order, with no gap; the store takes new runs afterwards.

tests/test_store.py kills one sequential run at a chosen point. Here a process runs many agents
at once (with parallel tool calls and a live subscriber) and is killed at an arbitrary moment,
while commits are in flight from every run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest
from rel_support import check_run_log

from rolepool import Agent, FunctionWorker
from rolepool.cli import main
from rolepool.runtime import EventStore

pytestmark = pytest.mark.reliability

CHILD = textwrap.dedent(
    """
    import json, sys, anyio
    from rolepool import Agent, FunctionWorker, tool
    from rolepool.runtime import EventStore, Limits

    store = EventStore(sys.argv[1], durability=sys.argv[2])

    @tool
    async def step(n: int) -> str:
        "One step of work."
        await anyio.sleep(0.001 * (n % 5))
        return "ok " * n

    def model(request):
        turns = sum(m.role == "assistant" for m in request.messages)
        if turns >= 40:
            return "finished"
        calls = [{"name": "step", "arguments": {"n": turns + i}} for i in range(2)]
        return json.dumps(calls)

    def printer(event):  # listeners run after the store committed the event
        print("EMITTED", event.run_id, event.seq, event.type, flush=True)

    async def one(i):
        agent = Agent(f"agent{i}", tools=[step], max_turns=100)
        async with agent.start("work", worker=FunctionWorker(model), store=store,
                               limits=Limits(max_turns=100)) as run:
            run.scope.stream.add_listener(printer)
            async for _ in run.events():  # a live subscriber as well
                pass

    async def main():
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, i)

    anyio.run(main)
    """
)


@pytest.mark.parametrize("kill_after,durability", [(150, "normal"), (1500, "full")])
def test_kill_9_among_concurrent_runs_loses_no_emitted_event(
    tmp_path, capsys, kill_after, durability
):
    db = tmp_path / "events.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), durability], stdout=subprocess.PIPE, text=True
    )
    emitted: dict[str, list[tuple[int, str]]] = defaultdict(list)
    count = 0
    try:
        for line in proc.stdout:
            _, run_id, seq, kind = line.split()
            emitted[run_id].append((int(seq), kind))
            count += 1
            if count == kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
        else:
            pytest.fail(f"child ended before the kill with {proc.wait()}")
        for line in proc.stdout:  # lines printed between the kill and the death also count
            if not line.endswith("\n"):
                break  # the kill cut this line short: its event was committed, but unreadable
            _, run_id, seq, kind = line.split()
            emitted[run_id].append((int(seq), kind))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    store = EventStore(db)  # reopening recovers the WAL
    assert len(emitted) == 12  # every run was under way
    for run_id, seen in emitted.items():
        stored = store.events(run_id)  # parsed back into typed events: readable
        pairs = [(e.seq, e.type) for e in stored]
        assert pairs[: len(seen)] == seen  # everything emitted is there, in order
        assert [s for s, _ in pairs] == list(range(len(pairs)))  # no gap, no duplicate
    statuses = {r.run_id: r.status for r in store.runs(limit=50)}
    # the owner is dead: interrupted, not "running" for ever (issue 28.10)
    assert set(statuses) == set(emitted) and set(statuses.values()) == {"interrupted"}

    # The CLI reads the recovered store, and new runs append to it.
    assert main(["trace", "list", "--db", str(db)]) == 0
    assert main(["trace", "show", next(iter(emitted)), "--db", str(db)]) == 0
    capsys.readouterr()
    result = Agent("after").run_sync("again", worker=FunctionWorker(lambda r: "fine"), store=store)
    check_run_log(store.events(result.run_id))
    store.close()
