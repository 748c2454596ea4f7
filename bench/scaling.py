"""Scaling: per-turn overhead and memory with 1, 100 and 1,000 concurrent runs on the test worker.

    python bench/scaling.py                       # 10 turns per run, 5 repetitions
    python bench/scaling.py --sizes 1 100 1000 10000 --turns 10 --reps 5

Each run is the tool-calling loop of bench/overhead.py (instant `FunctionWorker`, async tool) with
the durable SQLite store on, as in the product. For every size N the same N runs go once all at
once (`N concurrent`) and once one after another (`N sequential`, the baseline), alternating, so
the ratio shows what concurrency itself costs per turn. Memory: the process's resident set size
before a round, its peak during the round (sampled every 2 ms), and after the round once garbage
is collected. Leak check: the number of live Python objects (after a full collection) after every
concurrent round of the largest size, against the count after a warm-up round of that size; a
leak grows it round after round. (RSS alone moves with the allocator's whims.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Budget, add_budget_arg, median, rss_mb, table, write_result

from rolepool import Agent, EventStore, FunctionWorker, ToolCall

TASK = "Take the steps, then say done."


async def step(n: int) -> str:
    """Take step n of the task."""
    await asyncio.sleep(0)  # a real tool awaits something: lets the runs interleave
    return f"step {n} done"


def make_agent(turns: int) -> tuple[Agent, FunctionWorker]:
    def reply(request: Any) -> Any:
        done = sum(1 for m in request.messages if m.role == "tool")
        if done < turns - 1:
            return ToolCall(id=f"c{done}", name="step", arguments={"n": done})
        return "done"

    worker = FunctionWorker(reply)
    worker.requests = _Discard()  # the test worker keeps every request; 10k runs would pile up
    return Agent("bench", tools=[step], max_turns=turns + 1), worker


class _Discard(list):
    def append(self, item: object) -> None:
        pass


class PeakRss:
    """Samples RSS every 2 ms while a round runs; `peak` is the largest seen."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await asyncio.sleep(0.002)

    async def __aenter__(self) -> PeakRss:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, rss_mb())


async def round_of(
    n: int, concurrent: bool, agent: Agent, worker: FunctionWorker, store: EventStore, turns: int
) -> dict[str, float]:
    gc.collect()
    before = rss_mb()

    async def one() -> None:
        result = await agent.run(TASK, worker=worker, store=store)
        assert result.turns == turns and result.output == "done"

    async with PeakRss() as peak:
        started = time.perf_counter()
        if concurrent:
            async with asyncio.TaskGroup() as tg:
                for _ in range(n):
                    tg.create_task(one())
        else:
            for _ in range(n):
                await one()
        elapsed = time.perf_counter() - started
    gc.collect()
    return {
        "live_objects": live_objects(),
        "us_per_turn": elapsed / (n * turns) * 1e6,
        "rss_before_mb": before,
        "rss_peak_mb": peak.peak,
        "rss_after_mb": rss_mb(),
    }


def live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def main(args: argparse.Namespace) -> None:
    agent, worker = make_agent(args.turns)
    budget = Budget(args.budget, min_reps=1)
    results: dict[str, Any] = {"turns": args.turns, "reps": args.reps, "sizes": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(Path(tmp) / "events.db")
        warm = await round_of(args.sizes[-1], True, agent, worker, store, args.turns)  # warm-up
        objects = [warm["live_objects"]]
        for n in args.sizes:
            conc, seq = [], []
            for rep in range(args.reps):
                if not budget.allows(rep):
                    break
                for concurrent in (True, False) if rep % 2 == 0 else (False, True):
                    out = await round_of(n, concurrent, agent, worker, store, args.turns)
                    (conc if concurrent else seq).append(out)
            c_turn = median([r["us_per_turn"] for r in conc])
            s_turn = median([r["us_per_turn"] for r in seq])
            growth = median([r["rss_peak_mb"] - r["rss_before_mb"] for r in conc])
            after = [round(r["rss_after_mb"], 1) for r in conc]
            if n == args.sizes[-1]:
                objects += [r["live_objects"] for r in conc]
            results["sizes"][str(n)] = {
                "reps": len(conc),
                "concurrent": conc,
                "sequential": seq,
                "us_per_turn_concurrent": round(c_turn, 1),
                "us_per_turn_sequential": round(s_turn, 1),
                "peak_rss_growth_mb": round(growth, 1),
                "rss_after_each_concurrent_round_mb": after,
            }
            rows.append(
                [
                    n,
                    f"{c_turn:.0f}",
                    f"{s_turn:.0f}",
                    f"{c_turn / s_turn:.2f}",
                    f"{growth:.1f}",
                    f"{growth * 1024 / n:.0f}",
                    " → ".join(f"{a:.0f}" for a in after),
                ]
            )
    results["live_objects_after_rounds"] = objects
    drift = objects[-1] - objects[0]
    rounds = len(objects) - 1
    markdown = (
        table(
            [
                "concurrent runs",
                "µs/turn concurrent",
                "µs/turn sequential",
                "ratio",
                "peak RSS growth (MiB)",
                "KiB per run",
                "RSS after each round (MiB)",
            ],
            rows,
        )
        + f"\n\n{args.turns} turns per run, durable store on, up to {args.reps} repetitions per "
        "size (medians). "
        f"Leak check: live Python objects after a warm-up round and each measured round of "
        f"{args.sizes[-1]:,} concurrent runs: "
        + " → ".join(f"{k:,}" for k in objects)
        + f" ({drift:+,} over {rounds} rounds, "
        f"{drift / max(1, args.sizes[-1] * rounds):+.3f} per run)."
    )
    write_result("scaling", "Scaling with concurrent runs", results, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--turns", type=int, default=10, help="model calls per run")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (medians over these)")
    add_budget_arg(parser)
    asyncio.run(main(parser.parse_args()))
