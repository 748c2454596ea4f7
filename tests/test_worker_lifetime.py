"""An in-process worker's lifetime: `async with` (the worker's own, or a pool's) owns the batching
loop and closing fails what is in flight; a worker nobody entered serves from a detached loop;
either way the loop runs outside the emitter of whoever started or entered it."""

from __future__ import annotations

import anyio
import pytest
from test_transformers_worker import PROMPTS, _relive, answer_or_error, req

from rolepool.core import WorkerError
from rolepool.core.emit import current_emitter, emitting
from rolepool.pools.transformers_worker import TransformersWorker

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def lively_dense_dir(tiny_dense_dir, tmp_path_factory):
    return _relive(tiny_dense_dir, tmp_path_factory.mktemp("lifetime") / "lively-dense")


async def test_batching_task_runs_outside_the_callers_emitter(lively_dense_dir):
    worker = TransformersWorker(lively_dense_dir)
    await worker.load()
    seen: list = []
    real = worker._batcher._run_batch

    async def spy(batch):  # runs in the batching loop's task (decoder.run in the compute thread)
        seen.append(current_emitter())
        return await real(batch)

    worker._batcher._run_batch = spy
    events: list = []
    with emitting(events.append):
        await worker.complete(req("plan"))
    assert seen == [None] and events == []
    await worker.aclose()


async def test_async_with_owns_the_batching_loop_and_closing_fails_what_is_in_flight(
    lively_dense_dir,
):
    worker = TransformersWorker(lively_dense_dir, max_wait_ms=0)
    await worker.load()
    expected = (await worker.complete(req("plan"))).text  # serving detached (never entered)
    await worker.aclose()
    outcome: list = []
    events: list = []
    async with anyio.create_task_group() as callers:
        with emitting(events.append):
            async with worker as entered:
                assert entered is worker and worker._batcher.serving
                assert worker._batcher._detached.done(), "the detached loop stayed stopped"
                assert (await worker.complete(req("plan"))).text == expected
                callers.start_soon(
                    answer_or_error, worker, req(PROMPTS[1], max_tokens=1000), outcome
                )
                with anyio.fail_after(30):
                    while worker._decoder.active == 0:
                        await anyio.sleep(0.001)
        assert not worker._batcher.serving and worker._batcher._owner is None
    assert isinstance(outcome[0], WorkerError) and "closed" in str(outcome[0])
    assert worker._decoder.active == 0 and events == []


async def test_the_entered_loop_runs_outside_the_emitter_of_whoever_entered(lively_dense_dir):
    worker = TransformersWorker(lively_dense_dir)
    await worker.load()
    seen: list = []
    real = worker._batcher._run_batch

    async def spy(batch):  # runs in the batching loop's task
        seen.append(current_emitter())
        return await real(batch)

    worker._batcher._run_batch = spy
    events: list = []
    with emitting(events.append):
        async with worker:
            await worker.complete(req("plan"))
    assert seen == [None] and events == []


async def test_a_pool_entered_with_async_with_owns_its_workers_batching_loops(lively_dense_dir):
    from rolepool.pools.policy import Choice, Route, RoutingPolicy
    from rolepool.pools.pool import Pool

    worker = TransformersWorker(lively_dense_dir, name="local")
    route = Route(choices=[Choice(worker="local")])
    pool = Pool({"local": worker, "again": worker}, RoutingPolicy(version="v", default=route))
    async with pool:
        owner = worker._batcher._owner
        assert worker._batcher.serving and owner.depth == 1, "entered once, though named twice"
        assert (await pool.complete(req("plan"))).usage.completion_tokens >= 1
        assert worker._batcher._detached is None, "served by the pool's task group"
    assert not worker._batcher.serving and worker._batcher._owner is None
    async with worker, pool:  # the worker's own block owns the loop; the pool's entry does not
        assert worker._batcher._owner.depth == 2  # the pool entered it in the owner's task
        assert (await pool.complete(req("plan"))).usage.completion_tokens >= 1
    assert not worker._batcher.serving
