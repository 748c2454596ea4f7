"""Priority and fair sharing under a batch flood, on a shipped checkpoint in-process.

    python bench/fairness.py                 # dense-s1, 3 repetitions
    python bench/fairness.py --model moe-s1 --reps 1

Tenant `app` sends interactive requests from 4 closed-loop clients; tenant `evals` floods the same
TransformersWorker with 200 concurrent batch requests (each finished one is replaced, so 200 wait
or decode throughout). Four runs per repetition, in alternating order:

* `interactive_alone`: app alone: its p95 latency is the reference;
* `batch_alone`: evals alone: its tokens/s is the worker's capacity for this load;
* `mixed_priorities`: both at once, each request carrying its tenant and priority class
  (`rolepool.pools.admission`: interactive first, then fair share between tenants);
* `mixed_fifo`: both at once with neither (one tenant, one class): first come, first served.

Goals (issue 25): in `mixed_priorities`, app's p95 at most 1.5x its p95 alone, and evals' tokens/s
at least 80% of the throughput left over (batch alone's tokens/s minus app's tokens/s in the same
mixed run). Results go to bench/results/fairness.json.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

import anyio
import torch
from _common import median, table, write_result
from pool_throughput import pseudo_words

from rolepool.core import Message, Request, Sampling
from rolepool.pools.transformers_worker import TransformersWorker

MODES = ("interactive_alone", "batch_alone", "mixed_priorities", "mixed_fifo")


def make_request(rng: random.Random, tenant: str | None, priority: str, max_tokens: int) -> Request:
    return Request(
        messages=[
            Message(role="system", content="You are the search agent."),
            Message(role="user", content=pseudo_words(rng, rng.randint(8, 40))),
        ],
        sampling=Sampling(max_tokens=max_tokens),
        tenant=tenant,
        priority=priority,
    )


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def run_mode(worker: TransformersWorker, mode: str, args) -> dict[str, Any]:
    """One run: app's latencies and tokens/s, evals' tokens/s over the same window."""
    rng = random.Random(7)
    tagged = mode != "mixed_fifo"
    app = ("app" if tagged else None), ("interactive" if tagged else "interactive")
    evals = ("evals" if tagged else None), ("batch" if tagged else "interactive")
    latencies: list[float] = []
    tokens = {"app": 0, "evals": 0}
    window = anyio.Event()

    async def interactive_client() -> None:
        for _ in range(args.interactive_requests // args.interactive_concurrency):
            start = time.perf_counter()
            done = await worker.complete(make_request(rng, *app, args.max_tokens))
            latencies.append(time.perf_counter() - start)
            tokens["app"] += done.usage.completion_tokens

    async def batch_client() -> None:
        while not window.is_set():
            done = await worker.complete(make_request(rng, *evals, args.max_tokens))
            if not window.is_set():
                tokens["evals"] += done.usage.completion_tokens

    start = time.perf_counter()
    before = worker.stats
    async with anyio.create_task_group() as tg:
        if mode != "interactive_alone":
            for _ in range(args.flood):
                tg.start_soon(batch_client)
            await anyio.sleep(args.warmup)  # the flood fills the batch and the queue first
            start = time.perf_counter()
        if mode == "batch_alone":
            await anyio.sleep(args.batch_seconds)
        else:
            async with anyio.create_task_group() as clients:
                for _ in range(args.interactive_concurrency):
                    clients.start_soon(interactive_client)
        seconds = time.perf_counter() - start
        window.set()
        tg.cancel_scope.cancel()
    out: dict[str, Any] = {"seconds": round(seconds, 3), **engine_load(before, worker.stats)}
    if latencies:
        out |= {"app_p95_s": round(p95(latencies), 4), "app_p50_s": round(median(latencies), 4)}
        out["app_tokens_per_s"] = round(tokens["app"] / seconds, 1)
    if mode != "interactive_alone":
        out["evals_tokens_per_s"] = round(tokens["evals"] / seconds, 1)
    return out


def engine_load(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Rows per decode step and milliseconds per step (prefills included) over a run: what an
    interactive row's tokens cost when it shares the batch."""
    steps = max(after["decode_steps"] - before["decode_steps"], 1)
    rows = after["decode_row_steps"] - before["decode_row_steps"]
    seconds = after["generate_seconds"] - before["generate_seconds"]
    return {
        "rows_per_step": round(rows / steps, 1),
        "ms_per_step": round(1000 * seconds / steps, 2),
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    alone_p95, capacity = (
        med("interactive_alone", "app_p95_s"),
        med("batch_alone", "evals_tokens_per_s"),
    )
    out: dict[str, Any] = {
        "interactive_alone_p95_s": alone_p95,
        "batch_alone_tokens_per_s": capacity,
    }
    for mode in ("mixed_priorities", "mixed_fifo"):
        ratio = med(mode, "app_p95_s") / alone_p95
        left_over = capacity - med(mode, "app_tokens_per_s")
        share = med(mode, "evals_tokens_per_s") / left_over
        out[mode] = {
            "app_p95_s": med(mode, "app_p95_s"),
            "app_p95_vs_alone": round(ratio, 2),
            "evals_tokens_per_s": med(mode, "evals_tokens_per_s"),
            "left_over_tokens_per_s": round(left_over, 1),
            "evals_share_of_left_over": round(share, 3),
            "p95_goal_met": ratio <= 1.5,
            "throughput_goal_met": share >= 0.8,
        }
    return out


def markdown(summary: dict[str, Any], runs: dict[str, list[dict[str, Any]]], args) -> str:
    rows = []
    for mode in MODES:
        rs = runs[mode]
        p95s = [r["app_p95_s"] for r in rs if "app_p95_s" in r]
        evals = [r["evals_tokens_per_s"] for r in rs if "evals_tokens_per_s" in r]
        rows.append(
            [
                mode,
                f"{statistics.median(p95s) * 1000:.0f}" if p95s else "",
                f"{statistics.median(evals):.0f}" if evals else "",
                f"{statistics.median(r['rows_per_step'] for r in rs):.1f}",
                f"{statistics.median(r['ms_per_step'] for r in rs):.1f}",
            ]
        )
    lines = [
        f"**{args.model}**: app at concurrency {args.interactive_concurrency} "
        f"({args.interactive_requests} interactive requests per run), evals flooding with "
        f"{args.flood} concurrent batch requests, {args.max_tokens} new tokens max, greedy, "
        f"max_batch_size {args.max_batch_size}; medians of {args.reps} repetitions; "
        f"{torch.get_num_threads()} torch thread(s); load average before/after "
        f"{args.load_before} -> {round(os.getloadavg()[0], 2)}",
        "",
        table(["run", "app p95 (ms)", "evals tokens/s", "rows per step", "ms per step"], rows),
        "",
    ]
    for mode in ("mixed_priorities", "mixed_fifo"):
        m = summary[mode]
        lines.append(
            f"- {mode}: app p95 {m['app_p95_vs_alone']:.2f}x alone (goal 1.5x: "
            f"{'met' if m['p95_goal_met'] else 'not met'}); evals got "
            f"{m['evals_share_of_left_over']:.0%} of the "
            f"{m['left_over_tokens_per_s']:.0f} tokens/s "
            f"left over (goal 80%: {'met' if m['throughput_goal_met'] else 'not met'})"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dense-s1")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--flood", type=int, default=200)
    parser.add_argument("--interactive-concurrency", type=int, default=4)
    parser.add_argument("--interactive-requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    args.load_before = round(os.getloadavg()[0], 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    async with TransformersWorker(args.model, max_batch_size=args.max_batch_size) as worker:
        await worker.load()
        await run_mode(worker, "interactive_alone", args)  # warm-up
        for rep in range(args.reps):
            order = MODES if rep % 2 == 0 else MODES[::-1]
            for mode in order:
                result = await run_mode(worker, mode, args)
                runs[mode].append(result)
                print(f"rep {rep} {mode:18s} {result}", flush=True)
    summary = summarise(runs)
    write_result(
        "fairness",
        "Priority and fair sharing: interactive latency and batch throughput under a batch flood",
        {"summary": summary, "runs": runs, "settings": vars(args)},
        markdown(summary, runs, args),
    )


if __name__ == "__main__":
    anyio.run(main)
