"""Zoo training throughput: plain training steps against the fast ones the shipped recipe uses.

    python bench/train_step.py             # 64 steps per arch and mode, 2 repetitions
    python bench/train_step.py --steps 128 --reps 3

All three modes train the shipped recipe (`shipped_recipe`: bf16 autocast, batches of 32, a
512-token vocabulary; the MoE's own steps, without the dense phase its shipped recipe starts with)
from the same seed, on a smaller corpus (8,000 conversations, so the set-up stays short). "plain" is
how the first checkpoints' steps ran: batches length-sorted within windows of 4 batches, SDPA
attention for every batch, transformers' grouped experts (float32 under autocast), glibc's default
heap. "fast" is the shipped `sort_window=16, fast_steps=True, pad_multiple=32` with the tuned heap:
eager attention up to 256 tokens wide, bf16 experts, batches and experts' rows padded to multiples
of 32. "unpadded" is "fast" with `pad_multiple=1`, as the fast steps ran before 2026-12-03: every
batch width a new matmul shape, for which oneDNN builds a bf16 kernel and whose cache churns (memory
grew and steps slowed over a run; the longer the run, the larger the gap, so 64 steps understate
it). Each mode and repetition runs in a fresh interpreter (the heap setting is per process), the
order alternating between repetitions; a run's first 4 steps are discarded. The figure is training
sequences per second, so less padding counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from _common import median, table, write_result

MODES = ("plain", "unpadded", "fast")
WARMUP_STEPS = 4


def child(mode: str, steps: int) -> None:
    """Train each arch for `steps` steps in this process; print {arch: sequences/s} as JSON."""
    import rolepool.zoo.train as zoo_train

    out = {}
    for arch in ("dense", "moe"):
        # upcycle={}: the MoE's own steps (the shipped MoE recipe starts with dense ones)
        recipe = replace(zoo_train.shipped_recipe(arch, seed=1), train_examples=8000, upcycle={})
        if mode == "plain":
            recipe = replace(recipe, sort_window=4, fast_steps=False, pad_multiple=1)
        elif mode == "unpadded":
            recipe = replace(recipe, pad_multiple=1)
        stamps: list[float] = []
        zoo_train.train(
            recipe, progress=False, stop_after=steps + WARMUP_STEPS, on_step=_stamp(stamps)
        )
        seconds = stamps[-1] - stamps[WARMUP_STEPS - 1]
        out[arch] = steps * recipe.batch_size / seconds
    print(json.dumps(out))


def _stamp(stamps: list[float]):
    return lambda *_: stamps.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64, help="timed steps per arch and mode")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.reps < 1:
        parser.error("--steps and --reps must be at least 1")
    if args.child:
        child(args.child, args.steps)
        return
    samples: dict[str, dict[str, list[float]]] = {m: {"dense": [], "moe": []} for m in MODES}
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    for rep in range(args.reps):
        for mode in MODES if rep % 2 == 0 else MODES[::-1]:
            heap = "0" if mode == "plain" else "1"
            env = dict(os.environ, ROLEPOOL_HEAP_TUNING=heap, PYTHONPATH=path)
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--steps", str(args.steps)],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                sys.exit(f"the {mode} run failed ({done.returncode}):\n{done.stderr[-2000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            for arch, rate in figures.items():
                samples[mode][arch].append(rate)
            print(f"rep {rep + 1} {mode}: {figures}", flush=True)
    results = {}
    rows = []
    for arch in ("dense", "moe"):
        prev, mid, new = (median(samples[mode][arch]) for mode in MODES)
        results[arch] = {
            "plain_seq_per_s": round(prev, 1),
            "unpadded_seq_per_s": round(mid, 1),
            "fast_seq_per_s": round(new, 1),
            "ratio": round(new / prev, 2),
            "padding_ratio": round(new / mid, 2),
            "samples": {mode: [round(x, 1) for x in samples[mode][arch]] for mode in MODES},
        }
        rows.append(
            [
                arch,
                f"{prev:.1f}",
                f"{mid:.1f}",
                f"{new:.1f}",
                f"{new / prev:.2f}x",
                f"{new / mid:.2f}x",
            ]
        )
    headers = ["arch", "plain (seq/s)", "unpadded fast (seq/s)", "shipped fast (seq/s)"]
    markdown = table([*headers, "fast / plain", "fast / unpadded"], rows) + (
        f"\n\nMedians of {args.reps} fresh-process runs of {args.steps} timed steps each (bf16, "
        "512-token vocabulary, the shipped batch sizes, seed 1); what differs is listed in "
        "bench/train_step.py."
    )
    write_result("train_step", "Zoo training throughput", results, markdown)


if __name__ == "__main__":
    main()
