"""Priority and fair sharing where requests wait (`rolepool.pools.admission`): the batcher's queue
and a pool's concurrency slots. Interactive work goes first, tenants share by weight, an idle
tenant earns no burst and its share goes to the others, and a batch tenant alone is never held
back (no starvation, no reserved room)."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from rolepool.core import Completion, Message, Request, Usage
from rolepool.pools.admission import FairQueue, FairSlots
from rolepool.pools.batching import Batcher, Job
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.pools.testing import FunctionWorker

pytestmark = pytest.mark.anyio


def _request(tenant: str | None = None, priority: str = "interactive", text: str = "") -> Request:
    return Request(messages=[Message(role="user", content=text)], tenant=tenant, priority=priority)


def _queue(weights: dict[str, float] | None = None) -> FairQueue[Request]:
    return FairQueue(lambda r: r, weights)


def test_interactive_goes_before_batch_that_waited_longer():
    queue = _queue()
    batch = [_request("evals", "batch", str(i)) for i in range(5)]
    for r in batch:
        queue.push(r)
    urgent = _request("app", "interactive")
    queue.push(urgent)
    assert queue.pop() is urgent
    assert queue.take(10) == batch, "the batch class keeps its own arrival order"
    assert not queue


def test_tenants_share_by_weight_not_by_arrival():
    queue = _queue({"a": 2.0})
    for i in range(30):
        queue.push(_request("a", "batch", f"a{i}"))
    for i in range(30):
        queue.push(_request("b", "batch", f"b{i}"))
    first = Counter(r.tenant for r in queue.take(30))
    assert first == {"a": 20, "b": 10}, "a flood that arrived first does not take it all"


def test_an_idle_tenant_earns_no_burst_and_its_share_goes_to_the_others():
    queue = _queue()
    for i in range(20):
        queue.push(_request("a", "batch", str(i)))
    assert {r.tenant for r in queue.take(10)} == {"a"}, "alone, a takes everything"
    for i in range(10):
        queue.push(_request("b", "batch", str(i)))
    # b was idle while a was served: it joins at the current virtual time, so the two alternate
    # instead of b taking its 10 back to back.
    order = [r.tenant for r in queue.take(6)]
    assert Counter(order) == {"a": 3, "b": 3}
    assert order[:2] != ["b", "b"] and order[1:3] != ["b", "b"]


def test_remove_and_clear():
    queue = _queue()
    a, b = _request("a"), _request("b", "batch")
    queue.push(a)
    queue.push(b)
    assert queue.remove(a) and not queue.remove(a)
    assert len(queue) == 1
    assert queue.clear() == [b] and not queue
    with pytest.raises(IndexError):
        queue.pop()


async def _hold_all(slots: FairSlots, requests: list[Request], order: list[str], gate) -> None:
    async def one(r: Request) -> None:
        async with slots.hold(r):
            order.append(r.messages[0].content)
            await gate.wait()

    async with anyio.create_task_group() as tg:
        for r in requests:
            tg.start_soon(one, r)
            await anyio.sleep(0)


async def test_slots_admit_interactive_before_a_batch_flood():
    slots = FairSlots(2)
    order: list[str] = []
    gate = anyio.Event()
    flood = [_request("evals", "batch", f"b{i}") for i in range(8)]
    urgent = _request("app", "interactive", "i0")
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold_all, slots, flood, order, gate)
        await anyio.wait_all_tasks_blocked()
        assert slots.in_use == 2 and slots.waiting == 6
        tg.start_soon(_hold_all, slots, [urgent], order, gate)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert order[:3] == ["b0", "b1", "i0"], order
    assert slots.in_use == 0 and slots.waiting == 0


async def test_a_batch_tenant_alone_gets_every_slot():
    slots = FairSlots(4)
    order: list[str] = []
    gate = anyio.Event()
    flood = [_request("evals", "batch", f"b{i}") for i in range(4)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold_all, slots, flood, order, gate)
        await anyio.wait_all_tasks_blocked()
        assert slots.in_use == 4 and slots.waiting == 0, "no room kept back for others"
        gate.set()


async def test_a_waiter_that_gives_up_leaves_no_slot_behind():
    slots = FairSlots(1)
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold_all, slots, [_request(text="holder")], [], gate)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.01):
            async with slots.hold(_request(text="impatient")):
                pytest.fail("got a slot that was held")
        assert slots.waiting == 0
        gate.set()
    assert slots.in_use == 0
    async with slots.hold(_request()):
        assert slots.in_use == 1


class _Engine:
    """A run_batch that records what it was handed and finishes it."""

    def __init__(self) -> None:
        self.batches: list[list[Job]] = []

    async def run_batch(self, batch: list[Job]) -> None:
        self.batches.append(batch)
        for job in batch:
            job.finish(Completion(text="", usage=Usage(), worker="w"))


def _job(tenant: str, priority: str, text: str) -> Job:
    return Job(_request(tenant, priority, text), [1, 2, 3], 4)


async def test_the_batcher_admits_interactive_first_then_shares_between_tenants():
    engine = _Engine()
    batcher = Batcher(engine.run_batch, max_batch_size=4, max_wait_s=0.05)
    jobs = [_job("evals", "batch", f"e{i}") for i in range(6)]
    jobs += [_job("other", "batch", f"o{i}") for i in range(2)]
    jobs.append(_job("app", "interactive", "i0"))
    async with batcher:
        for job in jobs:
            batcher.submit(job)
        for job in jobs:
            await job.wait()
    first = [job.request.messages[0].content for job in engine.batches[0]]
    assert first[0] == "i0"
    assert Counter(t[0] for t in first[1:]) == {"e": 2, "o": 1}, first


async def test_the_batcher_serves_a_batch_tenant_alone_at_full_width():
    engine = _Engine()
    batcher = Batcher(engine.run_batch, max_batch_size=4, max_wait_s=0.05)
    jobs = [_job("evals", "batch", str(i)) for i in range(8)]
    async with batcher:
        for job in jobs:
            batcher.submit(job)
        for job in jobs:
            await job.wait()
    assert [len(b) for b in engine.batches] == [4, 4]


async def test_a_pools_slots_serve_interactive_work_before_a_queued_batch_flood():
    gate = anyio.Event()
    served: list[str] = []

    async def fn(request: Request) -> str:
        served.append(request.messages[0].content)
        await gate.wait()
        return "ok"

    worker = FunctionWorker(fn, name="w")
    pool = Pool(
        [worker],
        RoutingPolicy(version="v1", default=Route(choices=[Choice(worker="w")])),
        max_concurrency=1,
    )
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(pool.complete, _request("evals", "batch", f"b{i}"))
            await anyio.sleep(0)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(pool.complete, _request("app", "interactive", "i0"))
        await anyio.wait_all_tasks_blocked()
        assert pool._router.busy("w") == 6
        gate.set()
    assert served[:2] == ["b0", "i0"], served


async def test_tenant_weights_reach_the_pools_slots_and_the_batchers_queue():
    gate = anyio.Event()
    served: list[str] = []

    async def fn(request: Request) -> str:
        served.append(request.tenant or "")
        await gate.wait()
        return "ok"

    route = Route(choices=[Choice(worker="w")])
    pool = Pool(
        [FunctionWorker(fn, name="w")],
        RoutingPolicy(version="v1", default=route),
        max_concurrency=1,
        tenant_weights={"a": 3.0},
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.complete, _request("first", "batch"))
        await anyio.wait_all_tasks_blocked()
        for i in range(8):
            tg.start_soon(pool.complete, _request("a", "batch", str(i)))
            tg.start_soon(pool.complete, _request("b", "batch", str(i)))
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert Counter(served[1:9]) == {"a": 6, "b": 2}, served
    batcher = Batcher(_Engine().run_batch, max_batch_size=4, max_wait_s=0, tenant_weights={"b": 2})
    assert batcher._queue.weight("b") == 2.0 and batcher._queue.weight("a") == 1.0
