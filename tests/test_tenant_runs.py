"""Issue 25.1: `tenant=` on a run or workflow labels every event of the run and every request it
makes, and `rolepool trace list --tenant` shows that tenant's runs only."""

from __future__ import annotations

import json

import pytest
from workflow_scripts import role_worker

from rolepool import Agent, FunctionWorker, Workflow
from rolepool.cli import main
from rolepool.runtime import EventStore

pytestmark = pytest.mark.anyio


async def test_every_event_and_request_of_a_run_carries_its_tenant(tmp_path, isolated_store):
    seen = []
    worker = FunctionWorker(lambda r: seen.append(r.tenant) or "done", name="w")
    agent = Agent("a", role="writer", instructions="x", tools=[])
    mine = await agent.run("go", worker=worker, tenant="team-a")
    other = await agent.run("go", worker=worker)
    flow = await Workflow().run("Go.", worker=role_worker(), workspace=tmp_path, tenant="team-b")
    with EventStore(isolated_store) as store:
        assert {e.tenant for e in store.events(mine.run_id)} == {"team-a"}
        assert {e.tenant for e in store.events(other.run_id)} == {None}
        assert {e.tenant for e in store.events(flow.run_id)} == {"team-b"}
    assert seen == ["team-a", None]


async def test_trace_list_shows_one_tenants_runs(isolated_store, capsys):
    worker = FunctionWorker(lambda r: "done", name="w")
    agent = Agent("a", role="writer", instructions="x", tools=[])
    a = await agent.run("go", worker=worker, tenant="team-a")
    b = await agent.run("go", worker=worker, tenant="team-b")
    await agent.run("go", worker=worker)
    capsys.readouterr()
    assert main(["trace", "list", "--json", "--tenant", "team-a"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run_id"], r["tenant"]) for r in rows] == [(a.run_id, "team-a")]
    assert main(["trace", "list", "--json"]) == 0
    every = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["run_id"] for r in every} >= {a.run_id, b.run_id} and len(every) == 3
