"""Event stream throughput: events/s from `emit` to a subscriber, in memory and durable in SQLite.

    python bench/event_stream.py                 # 20,000 events per measurement, 7 repetitions
    python bench/event_stream.py --events 50000 --reps 11

A producer task emits prebuilt `ToolFinished` events (building a pydantic event is the emitter's
cost, timed separately below) and yields to the event loop every `per_tick` events, as a run does
between awaits; one subscriber task reads them all. Throughput = events / time until the
subscriber has the last one.

Baselines, in the same process, alternating: in memory, an `asyncio.Queue` per subscriber (the
plain way to fan out); durable, the store's previous behaviour, one committed transaction per
event before publication (`EventStore.append`, still what an emit outside an event loop does).
rolepool's durable stream commits all events emitted in one loop iteration in one transaction
before publishing them, so its rate depends on how many events a tick holds: the table shows
1 (the worst case), 3 (about what the run loop emits per iteration) and 50.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _common import Budget, add_budget_arg, alternate_async, median, table, write_result

from rolepool.core.events import ToolFinished
from rolepool.runtime import EventStore, EventStream

Measure = Callable[[], Awaitable[float]]


def make_events(run_id: str, n: int) -> list[ToolFinished]:
    return [
        ToolFinished(
            run_id=run_id, agent="bench", call_id=f"c{i}", tool="step", result=f"step {i} done"
        )
        for i in range(n)
    ]


async def through_stream(stream: EventStream, events: list[ToolFinished], per_tick: int) -> float:
    """Events/s from the first emit until one subscriber has read them all."""
    sub = stream.subscribe()
    got = 0

    async def consume() -> None:
        nonlocal got
        async for _ in sub:
            got += 1

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    started = time.perf_counter()
    for i, event in enumerate(events, 1):
        stream.emit(event)
        if i % per_tick == 0:
            await asyncio.sleep(0)
    stream.close()
    await consumer
    elapsed = time.perf_counter() - started
    assert got == len(events), (got, len(events))
    return len(events) / elapsed


async def through_queue(events: list[ToolFinished], per_tick: int) -> float:
    """The baseline fan-out: put into one asyncio.Queue per subscriber; None ends it."""
    queue: asyncio.Queue[ToolFinished | None] = asyncio.Queue()
    got = 0

    async def consume() -> None:
        nonlocal got
        while await queue.get() is not None:
            got += 1

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    started = time.perf_counter()
    for i, event in enumerate(events, 1):
        event.seq = i - 1
        queue.put_nowait(event)
        if i % per_tick == 0:
            await asyncio.sleep(0)
    queue.put_nowait(None)
    await consumer
    assert got == len(events)
    return len(events) / (time.perf_counter() - started)


async def commit_each(store: EventStore, events: list[ToolFinished], per_tick: int) -> float:
    """The previous durable path: commit each event, then publish it to a memory stream."""
    stream = EventStream(events[0].run_id, store=None)
    sub = stream.subscribe()
    got = 0

    async def consume() -> None:
        nonlocal got
        async for _ in sub:
            got += 1

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    started = time.perf_counter()
    for i, event in enumerate(events, 1):
        event.seq = i - 1
        store.append(event)
        stream.emit(event)
        if i % per_tick == 0:
            await asyncio.sleep(0)
    stream.close()
    await consumer
    assert got == len(events)
    return len(events) / (time.perf_counter() - started)


def build_modes(n: int, db: Path) -> dict[str, Measure]:
    store = EventStore(db)
    counter = iter(range(10**9))

    def fresh() -> tuple[str, list[ToolFinished]]:
        run_id = f"run_bench{next(counter)}"
        return run_id, make_events(run_id, n)

    def memory(per_tick: int) -> Measure:
        async def run() -> float:
            run_id, events = fresh()
            return await through_stream(EventStream(run_id, store=None), events, per_tick)

        return run

    def durable(per_tick: int) -> Measure:
        async def run() -> float:
            run_id, events = fresh()
            rate = await through_stream(EventStream(run_id, store=store), events, per_tick)
            assert len(store.events(run_id)) == n
            return rate

        return run

    def queue(per_tick: int) -> Measure:
        return lambda: through_queue(fresh()[1], per_tick)

    def each(per_tick: int) -> Measure:
        return lambda: commit_each(store, fresh()[1], per_tick)

    modes: dict[str, Measure] = {}
    for per_tick in (1, 3, 50):
        modes[f"memory|{per_tick}|rolepool"] = memory(per_tick)
        modes[f"memory|{per_tick}|asyncio.Queue"] = queue(per_tick)
        modes[f"durable|{per_tick}|rolepool"] = durable(per_tick)
        modes[f"durable|{per_tick}|commit per event"] = each(per_tick)
    return modes


def event_cost(n: int = 20_000) -> float:
    started = time.perf_counter()
    make_events("run_cost", n)
    return (time.perf_counter() - started) / n * 1e6


def report(samples: dict[str, list[float]], args: argparse.Namespace) -> tuple[dict, str]:
    med = {k: median(v) for k, v in samples.items()}
    reps = min(len(v) for v in samples.values())
    rows, results = [], {}
    for key, rate in med.items():
        kind, per_tick, who = key.split("|")
        if who != "rolepool":
            continue
        base_name = "asyncio.Queue" if kind == "memory" else "commit per event"
        base = med[f"{kind}|{per_tick}|{base_name}"]
        goal = 200_000 if kind == "memory" else 50_000
        rows.append(
            [kind, per_tick, f"{rate:,.0f}", f"{base:,.0f} ({base_name})", f"{rate / base:.2f}"]
            + ["yes" if rate >= goal else "no"]
        )
        results[key] = {"events_per_s": round(rate), "baseline": base_name}
        results[f"{kind}|{per_tick}|{base_name}"] = {"events_per_s": round(base)}
    cost = event_cost()
    markdown = (
        table(
            [
                "sink",
                "events per loop tick",
                "rolepool events/s",
                "baseline events/s",
                "ratio",
                "goal met",
            ],
            rows,
        )
        + f"\n\n{args.events:,} events per measurement, one subscriber, {reps} repetitions,"
        " medians. Goals: 200k/s in memory, 50k/s durable. Events are prebuilt; building one "
        f"`ToolFinished` costs {cost:.1f} µs more (not included)."
    )
    results["event_construction_us"] = round(cost, 2)
    results["samples"] = {k: [round(x) for x in v] for k, v in samples.items()}
    return results, markdown


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        modes = build_modes(args.events, Path(tmp) / "events.db")
        samples = await alternate_async(modes, args.reps, budget=Budget(args.budget))
    results, markdown = report(samples, args)
    write_result("event_stream", "Event stream throughput", results, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per measurement")
    parser.add_argument("--reps", type=int, default=7, help="repetitions (medians over these)")
    add_budget_arg(parser)
    asyncio.run(main(parser.parse_args()))
