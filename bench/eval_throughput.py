"""Cases/s of `rolepool eval` on the `roles` suite, per shipped model, against the raw ceiling for
the same prompts: one left-padded greedy `model.generate` of every case's prompt at once.

    python bench/eval_throughput.py                  # all shipped models, 3 repetitions
    python bench/eval_throughput.py --models dense-s1 --reps 5

The eval mode is what `rolepool eval --workers MODEL` does after loading: every case through the
agent loop (chat template, batching queue, parsing, validation, retries of invalid turns, events
to a store, scoring, one fsynced line per case). The ceiling does only the first turn's generation,
so the ratio prices everything the eval adds, retries included. Modes alternate within each
repetition (eval first on even ones) and the report gives medians, so drift in the machine's speed
hits both alike; the load average before and after is recorded because the machine is shared.
Results go to bench/results/eval_throughput.json (with a markdown table under "markdown").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import torch
from _common import padded_generate

from rolepool import __version__
from rolepool.core import Request
from rolepool.evals.results import ResultsFile
from rolepool.evals.runner import Target, case_tools, run_eval
from rolepool.evals.suites import load_suite
from rolepool.pools import compute
from rolepool.pools.transformers_worker import TransformersWorker
from rolepool.runtime import EventStore
from rolepool.zoo import list_checkpoints

RESULTS = Path(__file__).resolve().parent / "results" / "eval_throughput.json"
MAX_NEW_TOKENS = 256  # the agent loop's default Sampling.max_tokens


def prompt_ids(worker: TransformersWorker, case: Any) -> list[int]:
    """Exactly the tokens the worker feeds for the case's first turn."""
    tools = [t.spec() for t in case_tools(case)]
    return worker._prompt_ids(Request(messages=case.messages, tools=tools))


def raw_generate(worker: TransformersWorker, prompts: list[list[int]]) -> None:
    padded_generate(worker, prompts, MAX_NEW_TOKENS)


async def eval_once(worker: TransformersWorker, name: str, cases: list[Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = EventStore(Path(tmp) / "events.db")
        with ResultsFile(tmp) as results:
            start = time.perf_counter()
            await run_eval(cases, [Target(name, worker)], results, store=store)
            seconds = time.perf_counter() - start
            turns = sum(r.turns for r in results.records)
        store.close()
    return {"seconds": seconds, "model_calls": turns}


async def bench_model(name: str, cases: list[Any], reps: int, budget: float) -> dict[str, Any]:
    """`reps` alternating repetitions, or fewer (never under 2) once `budget` seconds are spent,
    so the whole script stays within its time on a busy machine; the JSON says how many ran."""
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    worker = TransformersWorker(name, name=name)
    await worker.load()
    prompts = [prompt_ids(worker, c) for c in cases]
    # The raw baseline runs on the worker's compute thread (`rolepool/pools/compute.py`): torch
    # work on other threads would slow both modes.
    await compute.run_sync(raw_generate, worker, prompts[:4])  # warm-up of both paths
    await eval_once(worker, name, cases[:8])
    eval_s, raw_s, calls = [], [], []
    for rep in range(reps):
        if rep >= 2 and time.perf_counter() - started > budget:
            break
        order = ("eval", "raw") if rep % 2 == 0 else ("raw", "eval")
        for mode in order:
            if mode == "eval":
                run = await eval_once(worker, name, cases)
                eval_s.append(run["seconds"])
                calls.append(run["model_calls"])
            else:
                start = time.perf_counter()
                await compute.run_sync(raw_generate, worker, prompts)
                raw_s.append(time.perf_counter() - start)
    await worker.aclose()
    n = len(cases)
    eval_rate, raw_rate = n / statistics.median(eval_s), n / statistics.median(raw_s)
    return {
        "model": name,
        "architecture": worker.info.architecture,
        "cases": n,
        "reps": len(eval_s),
        "model_calls_per_eval": calls,
        "eval_seconds": [round(s, 3) for s in eval_s],
        "raw_seconds": [round(s, 3) for s in raw_s],
        "eval_cases_per_s": round(eval_rate, 2),
        "raw_cases_per_s": round(raw_rate, 2),
        "eval_over_raw": round(eval_rate / raw_rate, 3),
        "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | arch | cases | eval cases/s | raw generate cases/s | eval / raw | "
        "model calls per eval |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['architecture']} | {r['cases']} | {r['eval_cases_per_s']} | "
            f"{r['raw_cases_per_s']} | {r['eval_over_raw']:.2f} | "
            f"{statistics.median(r['model_calls_per_eval']):.0f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated shipped models (default: all)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per mode (default 3)")
    parser.add_argument("--limit", type=int, help="cases of the roles suite (default: all)")
    parser.add_argument(
        "--budget",
        type=float,
        default=100.0,
        help="seconds for all models; repetitions past the second stop when spent (default 100)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


async def main() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args = parse_args()
    names = args.models.split(",") if args.models else [c["name"] for c in list_checkpoints()]
    cases = load_suite("roles", limit=args.limit).cases
    started = time.perf_counter()
    results = []
    for name in names:
        results.append(await bench_model(name, cases, args.reps, args.budget / len(names)))
        print(json.dumps(results[-1]), flush=True)
    import transformers

    report = {
        "title": "rolepool eval throughput vs one raw batched generate (roles suite)",
        "command": "python bench/eval_throughput.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": {
            "rolepool": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "settings": {
            "reps": args.reps,
            "budget_s": args.budget,
            "max_new_tokens": MAX_NEW_TOKENS,
            "greedy": True,
            "eval_concurrency": 64,
        },
        "results": results,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "markdown": markdown(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(report["markdown"])
    print(f"wrote {args.out} in {report['wall_seconds']} s")


if __name__ == "__main__":
    anyio.run(main)
