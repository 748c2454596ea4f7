"""SECURITY.md, promise 7: load. 1,000 concurrent runs on a test worker and 200 concurrent
requests against `rolepool serve` on loopback: no deadlock, no lost or duplicated events or
answers, bounded memory.

The bounds are generous and machine-independent (the machine may be slow and shared): every test
is bounded by a wall-clock limit far above its normal time, and memory is judged by growth from a
second wave of the same load after a first one (a leak grows with every wave) and by whether
per-run objects are freed. The figures themselves are measured by bench/ scripts, not here.
"""

from __future__ import annotations

import gc
import json
import re
import weakref
from collections import Counter

import anyio
import httpx
import pytest
from rel_support import check_run_log, server_process

from rolepool import Agent, FunctionWorker, tool
from rolepool.core import Request
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.runtime import Limits
from rolepool.runtime.run import resolve_store

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

RUNS = 1000


def rss_kb(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: first
        b: second
    """
    await anyio.sleep(0)
    return a + b


def model(request: Request) -> str:
    """Two parallel calls, then the answer: about a dozen events per run."""
    if request.messages[-1].role == "tool":
        return "sum " + request.messages[-1].content
    n = int(request.messages[-1].content.split()[-1])
    return json.dumps([{"name": "add", "arguments": {"a": n, "b": 1}}] * 2)


async def wave(pool: Pool, offset: int, streams: list) -> list[tuple[str, int, list]]:
    """RUNS concurrent runs, each with a live subscriber; returns (run_id, n, events seen) and
    adds a weak reference to each run's stream to `streams`."""
    out: list[tuple[str, int, list]] = []

    async def one(n: int) -> None:
        agent = Agent(f"load{n}", tools=[add])
        async with agent.start(f"add {n}", worker=pool, limits=Limits(deadline=120)) as run:
            streams.append(weakref.ref(run.scope.stream))
            seen = [event async for event in run.events()]
            result = await run.result()
        assert result.output == f"sum {n + 1}"
        out.append((run.run_id, n, seen))

    async with anyio.create_task_group() as tg:
        for n in range(offset, offset + RUNS):
            tg.start_soon(one, n)
    return out


async def test_a_thousand_concurrent_runs_lose_nothing_and_leak_nothing():
    routes = {"assistant": Route(choices=[Choice(worker="test")])}
    worker = FunctionWorker(model, name="test")
    pool = Pool(
        {"test": worker}, RoutingPolicy(version="load.1", routes=routes), max_concurrency=64
    )
    store = resolve_store(None)
    gc.collect()
    before = rss_kb()

    with anyio.fail_after(240):  # a deadlock fails here instead of hanging CI
        runs = await wave(pool, 0, streams := [])
    grew = rss_kb() - before

    assert len({run_id for run_id, _, _ in runs}) == RUNS
    for run_id, _, seen in runs:
        check_run_log(seen)  # what the live subscriber saw: whole, in order, once
        stored = [(e.seq, e.type) for e in store.events(run_id)]
        assert stored == [(e.seq, e.type) for e in seen]  # the store holds exactly the same
        assert Counter(e.type for e in seen)["tool.finished"] == 2
    stats = pool.stats["test"]
    assert stats["successes"] == 2 * RUNS and stats["failures"] == 0  # two model calls a run
    assert stats["max_in_flight"] <= 64  # the concurrency limit held under the burst

    # Bounded memory: the whole burst, with every event held by its subscriber, stays far
    # below what a copy per event or per subscriber would cost, and nothing of a run outlives it.
    assert grew < 300_000, grew  # KiB
    del runs, seen
    gc.collect()
    alive = [ref for ref in streams if ref() is not None]
    # A few of the last ones are still referenced by the event loop's own bookkeeping until it
    # turns again; a leak would keep all 1,000.
    assert len(alive) <= 50, len(alive)


ECHO_SERVER = """
import anyio
state = {"now": 0, "max": 0}

async def echo(request):
    state["now"] += 1
    state["max"] = max(state["max"], state["now"])
    try:
        await anyio.sleep(0.3)
        return f"echo {request.messages[-1].content} max={state['max']}"
    finally:
        state["now"] -= 1

worker = FunctionWorker(echo, name="echo")
"""


async def test_200_concurrent_requests_against_serve_each_get_their_own_answer():
    with server_process(ECHO_SERVER) as server:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

            async def ask(nonce: str, answers: dict[str, httpx.Response]) -> None:
                body = {"model": "echo", "messages": [{"role": "user", "content": nonce}]}
                answers[nonce] = await client.post("/v1/chat/completions", json=body)

            async def burst(tag: str) -> dict[str, httpx.Response]:
                answers: dict[str, httpx.Response] = {}
                with anyio.fail_after(120):
                    async with anyio.create_task_group() as tg:
                        for i in range(200):
                            tg.start_soon(ask, f"{tag}-{i}", answers)
                return answers

            first = await burst("a")
            rss_first = server.rss_kb()
            second = await burst("b")
            rss_second = server.rss_kb()
            metrics = (await client.get("/metrics")).text

    highest = 0
    ids = set()
    for answers in (first, second):
        assert len(answers) == 200
        for nonce, response in answers.items():
            assert response.status_code == 200, response.text
            data = response.json()
            text = data["choices"][0]["message"]["content"]
            assert text.startswith(f"echo {nonce} max=")  # its own answer, no cross-talk
            highest = max(highest, int(text.rsplit("=", 1)[1]))
            ids.add(data["id"])
    assert len(ids) == 400  # no answer delivered twice
    assert highest >= 20  # the requests really overlapped in the worker
    served = re.search(
        r'rolepool_requests_total\{role="none",status="ok",worker="echo"\} (\S+)', metrics
    )
    assert served and float(served.group(1)) == 400.0
    assert rss_second - rss_first < 50_000, (rss_first, rss_second)  # KiB: no per-request leak
