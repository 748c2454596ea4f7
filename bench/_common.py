"""What every bench script shares: versions, machine, medians, alternating repetitions, results.

Each script measures rolepool and its baseline in the same process, alternating the order within
every repetition (so drift in the machine's speed hits both alike), reports medians and the ratio,
and writes bench/results/<name>.json with the keys `title`, `command`, `date`, `versions`,
`machine`, `results` and `markdown` (the table run_all.py puts into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = (
    "rolepool",
    "torch",
    "transformers",
    "pydantic",
    "pydantic-ai-slim",
    "openai-agents",
    "opentelemetry-sdk",
    "anyio",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["sqlite"] = __import__("sqlite3").sqlite_version
    return out


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(load[0], 2),
    }


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class Budget:
    """Seconds a bench may spend: repetitions stop once it is spent (after `min_reps`), so a
    slow or busy machine still gets figures, from fewer repetitions, instead of a timeout."""

    def __init__(self, seconds: float | None, min_reps: int = 3) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.min_reps = min_reps

    def allows(self, done_reps: int) -> bool:
        if done_reps < self.min_reps or self.deadline is None:
            return True
        return time.monotonic() < self.deadline


async def alternate_async(
    modes: dict[str, Callable[[], Awaitable[float]]],
    reps: int,
    *,
    warmup: int = 1,
    budget: Budget | None = None,
) -> dict[str, list[float]]:
    """Run every mode `reps` times (fewer if `budget` runs out), rotating the order each
    repetition; each call returns one measurement. Warm-up rounds are discarded."""
    names = list(modes)
    for _ in range(warmup):
        for name in names:
            await modes[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        if budget is not None and not budget.allows(rep):
            break
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            gc.collect()
            samples[name].append(await modes[name]())
    return samples


def add_budget_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds to spend at most: stop repeating once spent (run_all.py sets it)",
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, results: Any, markdown: str) -> Path:
    """bench/results/<name>.json in the shape run_all.py reads."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {
        "title": title,
        "command": "python " + " ".join([f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "versions": versions(),
        "machine": machine(),
        "results": results,
        "markdown": markdown,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown)
    print(f"\nwrote {path}")
    return path


def padded_generate(worker: Any, prompts: list[list[int]], max_new_tokens: int) -> tuple[Any, int]:
    """One left-padded greedy `model.generate` over `prompts` on a loaded TransformersWorker's
    model (the baseline the worker's own engine is measured against): (output ids, prompt width).
    """
    import torch

    width = max(map(len, prompts))
    pad = worker._pad
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.inference_mode():
        out = worker._model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=worker._eos,
            pad_token_id=pad,
            use_cache=True,
        )
    return out, width
