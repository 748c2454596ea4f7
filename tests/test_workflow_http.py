"""The same workflow on a pool of OpenAI-compatible workers, against a real `rolepool serve`."""

from __future__ import annotations

import pytest
from serving import running
from workflow_scripts import role_worker

from rolepool import OpenAIWorker, Pool, RolepoolError, RoutingPolicy, Workflow
from rolepool.pools.policy import Choice, Route
from rolepool.runtime import EventStore

pytestmark = pytest.mark.anyio


def remote_pool(url: str, model: str, *, dead_first: bool = False) -> Pool:
    workers = {"remote": OpenAIWorker(url, model, timeout=60, max_retries=0)}
    route = Route(choices=[Choice(worker="remote")])
    if dead_first:  # nothing listens on port 9 of loopback: the pool fails over
        workers["dead"] = OpenAIWorker("http://127.0.0.1:9", model, timeout=5, max_retries=0)
        route = Route(choices=[Choice(worker="dead")], fallbacks=["remote"])
    return Pool(workers, RoutingPolicy(version="http-1", default=route))


async def test_workflow_over_http_with_failover(tmp_path, isolated_store):
    served = role_worker()
    async with running(served) as url:
        pool = remote_pool(url, served.info.name, dead_first=True)
        result = await Workflow().run("Go.", worker=pool, workspace=tmp_path)
    assert [s.role for s in result.steps] == ["coder", "search"]
    assert result.steps[0].answer == "5"
    assert "coder: 5" in result.report.read_text()
    # every role's requests reached the server with their role and the trained tool schemas
    assert {r.role for r in served.requests} == {"planner", "coder", "search", "writer"}
    with EventStore(isolated_store) as store:
        events = store.events(result.run_id)
    failovers = [e for e in events if e.type == "pool.failover"]
    assert failovers and all(e.from_worker == "dead" for e in failovers)
    assert {e.worker for e in events if e.type == "model.completed"} == {"remote"}


@pytest.mark.slow  # loads a shipped checkpoint
async def test_shipped_model_behind_serve_runs_the_workflow(tmp_path, isolated_store):
    from rolepool.pools.transformers_worker import TransformersWorker

    model = TransformersWorker("dense-s1")
    task = "Plan this: have the coder check the cache, and ask the search agent to find batching."
    async with running(model) as url:
        try:
            result = await Workflow().run(task, worker=remote_pool(url, "dense-s1"),
                                          workspace=tmp_path, run_id="run_http_zoo")  # fmt: skip
        except RolepoolError:  # a tiny model may fail; the run must still end with run.failed
            result = None
    with EventStore(isolated_store) as store:
        events = store.events("run_http_zoo")
    assert events[-1].type in ("run.finished", "run.failed")
    executed = [e.tool for e in events if e.type == "tool.started"]
    assert executed.count("assign") >= 2  # the planner's parallel steps ran over HTTP
    if result is not None:
        assert len(result.steps) >= 2
