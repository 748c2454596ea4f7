"""The family table in docs/families.md: for each registered family, a tiny random model
(`rolepool.pools.families_tiny`) served by TransformersWorker, its decode path and expert telemetry
as the worker reports them, and decode tokens/s at concurrency 32 against one padded
`model.generate` over the same 32 prompts. Writes the table between the markers in
docs/families.md.

    OMP_WAIT_POLICY=PASSIVE python bench/families.py [--reps 3] [--max-tokens 32]

The models are tiny (hidden 64, 2 layers), so the numbers measure per-step overhead (where the
decode paths differ), not the arithmetic a real checkpoint spends its time on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import torch
from _common import padded_generate

from rolepool.core import Message, Request, Sampling
from rolepool.pools.families import FAMILIES, shared_experts
from rolepool.pools.families_tiny import build_tiny_family
from rolepool.pools.generate_fallback import cut_row
from rolepool.pools.transformers_worker import TransformersWorker

DOC = Path(__file__).resolve().parent.parent / "docs" / "families.md"
START, END = "<!-- family-table:start -->", "<!-- family-table:end -->"
WORDS = "plan the work search docs for mixture of experts write tests assign a coder".split()


def prompts(n: int) -> list[str]:
    return [" ".join(WORDS[i % 7 : i % 7 + 2 + i % 9]) for i in range(n)]


async def worker_rate(worker: TransformersWorker, texts: list[str], max_tokens: int) -> float:
    requests = [
        Request(
            messages=[Message(role="user", content=t)], sampling=Sampling(max_tokens=max_tokens)
        )
        for t in texts
    ]
    tokens = 0

    async def one(request: Request) -> None:
        nonlocal tokens
        completion = await worker.complete(request)  # awaited first: `+=` would read a stale count
        tokens += completion.usage.completion_tokens

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(one, request)
    return tokens / (time.perf_counter() - start)


def generate_rate(worker: TransformersWorker, texts: list[str], max_tokens: int) -> float:
    """One left-padded greedy `model.generate` over every prompt: useful tokens / second."""
    ids = [worker._prompt_ids(Request(messages=[Message(role="user", content=t)])) for t in texts]
    start = time.perf_counter()
    out, width = padded_generate(worker, ids, max_tokens)
    seconds = time.perf_counter() - start

    class _Job:  # cut_row reads max_tokens and the stop strings
        def __init__(self) -> None:
            self.max_tokens = max_tokens
            self.request = Request(messages=[Message(role="user", content="x")])

    kept = [cut_row(out[i, width:].tolist(), _Job(), worker._eos, str)[0] for i in range(len(ids))]
    return sum(map(len, kept)) / seconds


async def measure(family: str, root: Path, reps: int, max_tokens: int) -> dict:
    path = build_tiny_family(family, root / family)
    worker = TransformersWorker(path, max_wait_ms=20, max_batch_size=32)
    await worker.load()
    texts = prompts(32)
    await worker_rate(worker, texts, 4)  # warm-up
    ours, theirs = [], []
    for rep in range(reps):  # alternate the order, so drift hits both alike
        if rep % 2:
            theirs.append(generate_rate(worker, texts, max_tokens))
        ours.append(await worker_rate(worker, texts, max_tokens))
        if not rep % 2:
            theirs.append(generate_rate(worker, texts, max_tokens))
    recorder = worker._recorder
    await worker.aclose()
    return {
        "family": family,
        "path": worker.stats["decode_path"],
        "telemetry": _telemetry(worker, recorder),
        "ours": statistics.median(ours),
        "generate": statistics.median(theirs),
    }


def _telemetry(worker: TransformersWorker, recorder) -> str:
    if recorder is None:
        return "n/a (dense)" if worker._architecture == "dense" else "none"
    layers = len(recorder.modules)
    text = f"{layers} layer{'s' * (layers != 1)} x {recorder.num_experts} experts"
    text += f", top-{recorder.top_k}"
    shared = shared_experts(worker.config)
    return text + (f"; {shared} shared, reported apart" if shared else "")


def table(rows: list[dict], note: str) -> str:
    lines = [
        "| family | model_type | decode path | expert telemetry | tok/s (rolepool, c=32) "
        "| tok/s (`generate`) | ratio |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        family = FAMILIES[row["family"]]
        lines.append(
            f"| {family.label} | `{row['family']}` | {row['path']} | {row['telemetry']} "
            f"| {row['ours']:.0f} | {row['generate']:.0f} | {row['ours'] / row['generate']:.2f}x |"
        )
    return "\n".join(lines) + "\n\n" + note


def others_running() -> str:
    """Other processes using CPU while this ran (a shared machine): their names, for the notes."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[1:8]
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    busy = [line.split(None, 1) for line in out]
    return ", ".join(f"{name} {cpu}%" for cpu, name in busy if float(cpu) >= 5) or "nothing busy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    families = args.only or list(FAMILIES)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            rows.append(anyio.run(measure, family, Path(tmp), args.reps, args.max_tokens))
            print(rows[-1], file=sys.stderr, flush=True)
    cpu = platform.processor() or platform.machine()
    note = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, CPU float32, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; median of {args.reps} alternating "
        f"repetitions, 32 concurrent greedy requests of up to {args.max_tokens} tokens. "
        f"Load average {load_before:.2f} at the start; other processes busy at the end: "
        f"{others_running()}. On a shared, loaded machine the absolute tokens/s move with the "
        "load between families (each family ran at a different moment); the ratio within a row "
        "is the comparison (same process, alternating repetitions). Command: "
        "`OMP_WAIT_POLICY=PASSIVE python bench/families.py`.\n"
    )
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{table(rows, note)}{END}{tail}")


if __name__ == "__main__":
    main()
