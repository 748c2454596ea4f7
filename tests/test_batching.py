"""`Batcher`'s lifetime and a `Job`'s states, without a model: the loop runs in a task group its
`async with` block owns (or, for workers nobody entered, in a detached task), a second entry does
not take it over, `stop()` ends it from any task, and a job is in exactly one state at a time."""

from __future__ import annotations

import anyio
import pytest

from rolepool.core import Completion, Message, Request, Usage, WorkerError
from rolepool.pools.batching import Batcher, Job

pytestmark = pytest.mark.anyio


def _job(text: str = "hi") -> Job:
    return Job(Request(messages=[Message(role="user", content=text)]), [1, 2, 3], 4)


def _completion(job: Job) -> Completion:
    return Completion(text=job.request.messages[0].content, usage=Usage(), worker="w")


class _Engine:
    """A run_batch that finishes each job with its own text, or holds them until released."""

    def __init__(self) -> None:
        self.batches: list[list[Job]] = []
        self.release = anyio.Event()
        self.hold = False
        self.stops = 0

    async def run_batch(self, batch: list[Job]) -> None:
        self.batches.append(batch)
        assert all(job.state in ("running", "abandoned") for job in batch)
        if self.hold:
            await self.release.wait()
        for job in batch:
            job.finish(_completion(job))

    def on_stop(self) -> None:
        self.stops += 1


def _batcher(engine: _Engine, **kwargs) -> Batcher:
    kwargs.setdefault("max_wait_s", 0.01)
    return Batcher(engine.run_batch, max_batch_size=4, on_stop=engine.on_stop, **kwargs)


async def test_the_loop_runs_in_its_owners_task_group_and_ends_with_the_block():
    engine = _Engine()
    batcher = _batcher(engine)
    assert not batcher.serving
    async with batcher:
        assert batcher.serving
        async with batcher:  # nested: the outer block keeps the loop
            pass
        assert batcher.serving
        jobs = [_job(str(i)) for i in range(3)]
        for job in jobs:
            assert job.state == "queued"
            batcher.submit(job)
        assert [(await job.wait()).text for job in jobs] == ["0", "1", "2"]
        assert [job.state for job in jobs] == ["finished"] * 3
        assert engine.batches == [jobs], "gathered into one batch"

        async def other_task_enters() -> None:
            async with batcher:
                assert batcher.serving

        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task_enters)
        assert batcher.serving, "an entry from another task did not take the loop over"
        assert batcher._detached is None
    assert not batcher.serving and engine.stops == 1


async def test_stop_from_another_task_fails_what_is_queued_and_running():
    engine = _Engine()
    engine.hold = True
    batcher = _batcher(engine, max_wait_s=0)
    outcomes: list = []

    async def ask(job: Job) -> None:
        try:
            outcomes.append(await job.wait())
        except WorkerError as exc:
            outcomes.append(exc)

    async with batcher:
        running, queued = _job("running"), _job("queued")
        batcher.submit(running)
        async with anyio.create_task_group() as callers:
            callers.start_soon(ask, running)
            with anyio.fail_after(5):
                while not engine.batches:
                    await anyio.sleep(0.001)
            batcher.submit(queued)
            callers.start_soon(ask, queued)

            async def closer() -> None:
                await batcher.stop()

            callers.start_soon(closer)  # not the owner's task
        assert not batcher.serving and engine.stops == 1
    assert running.state == queued.state == "finished"
    texts = sorted(str(exc) for exc in outcomes)
    assert all(isinstance(exc, WorkerError) for exc in outcomes)
    assert "closed before the request ran" in texts[0] and "closed while" in texts[1]


async def test_a_caller_giving_up_abandons_its_job():
    engine = _Engine()
    batcher = _batcher(engine, max_wait_s=10)  # nothing runs: the gather window is long
    async with batcher:
        job = _job()
        batcher.submit(job)
        await anyio.sleep(0)
        batcher.abandon(job)
        assert job.state == "abandoned" and batcher.queue_depth == 0
        running = _job()
        running.state = "running"
        batcher.abandon(running)  # taken by a batch: the engine drops it at its next step
        assert running.state == "abandoned"
        running.finish(WorkerError("first"))
        running.finish(WorkerError("second"))  # the first outcome wins
        assert running.state == "finished" and str(running.outcome) == "first"
        batcher.abandon(running)
        assert running.state == "finished"
    assert engine.batches == []


async def test_a_detached_loop_serves_callers_that_never_entered_and_stop_ends_it():
    engine = _Engine()
    batcher = _batcher(engine)
    batcher.ensure_serving()
    batcher.ensure_serving()  # serving already: a no-op
    job = _job("alone")
    batcher.submit(job)
    assert (await job.wait()).text == "alone"
    assert batcher.serving and not batcher._detached.done()
    async with batcher:  # serving already (detached): this block does not own it
        pass
    assert batcher.serving
    await batcher.stop()
    assert not batcher.serving and engine.stops == 1 and batcher._detached.done()
    await batcher.stop()  # stopping twice is fine
