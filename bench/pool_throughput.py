"""Tokens/s through TransformersWorker at several concurrencies, against the same requests run
one at a time with plain `generate` (the baseline) and all at once in one padded `generate` (the
ceiling). MoE models are also run with expert telemetry off, to price the telemetry hooks.

    python bench/pool_throughput.py                 # the shipped dense-s1 and moe-s1
    python bench/pool_throughput.py --model DIR     # a local model directory (repeatable)

Modes are run in alternating order within each repetition and reported as medians, so drift in the
machine's speed hits every mode alike. On a shared 2-core box, torch's two OpenMP threads collapse
when another process holds a core (batched decode fell to ~50 tok/s in one measurement);
`--threads 1` keeps the figures stable then. Results go to bench/results/pool_throughput.json.
The default models are the shipped reference models (vocab 1,024, hidden 128, 4 layers; dense
SwiGLU 512; MoE 8 experts x 256, top-2). Greedy decoding gives every mode the same tokens, so the
ratios compare like with like; rows that stop early still ride along in a batched `generate`,
which is part of what batching costs in practice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import torch

from rolepool.core import Message, Request, Sampling
from rolepool.pools.transformers_worker import TransformersWorker
from rolepool.zoo import checkpoint_path

RESULTS = Path(__file__).resolve().parent / "results"
TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
SYLLABLES = ["tra", "ko", "lis", "mun", "ve", "dor", "sai", "clo", "pe", "rin", "zu", "ta", "wof"]


def pseudo_words(rng: random.Random, n: int) -> str:
    return " ".join(
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n)
    )


def make_requests(n: int, max_tokens: int) -> list[Request]:
    """Prompts of 20-100 tokens, like the tool-calling corpus (mean about 90 with the template)."""
    rng = random.Random(1)
    return [
        Request(
            messages=[
                Message(role="system", content="You are the search agent."),
                Message(role="user", content=pseudo_words(rng, rng.randint(8, 40))),
            ],
            sampling=Sampling(max_tokens=max_tokens),
        )
        for _ in range(n)
    ]


def raw_generate(worker: TransformersWorker, prompts: list[list[int]], max_tokens: int) -> int:
    """One left-padded greedy `generate` over `prompts`; returns the tokens generated."""
    width = max(map(len, prompts))
    pad = worker.tokenizer.pad_token_id
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
            max_new_tokens=max_tokens,
            pad_token_id=pad,
        )
    # Rows that stopped early would be over-counted: that can only flatter the baselines.
    return (out.shape[1] - width) * len(prompts)


async def through_worker(worker: TransformersWorker, requests: list[Request], conc: int) -> int:
    """`conc` closed-loop clients share `requests`; returns completion tokens."""
    todo = list(requests)
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        while todo:
            completion = await worker.complete(todo.pop())
            tokens += completion.usage.completion_tokens

    async with anyio.create_task_group() as tg:
        for _ in range(conc):
            tg.start_soon(client)
    return tokens


async def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = await fn()
    return time.perf_counter() - start, tokens


def modes(workers: dict[str, TransformersWorker], requests: list[Request], args) -> dict[str, Any]:
    """name -> async callable returning tokens generated; the first worker is the main one."""
    main = workers["telemetry_on"]
    prompts = [main._prompt_ids(r) for r in requests]

    async def sequential() -> int:
        return sum(raw_generate(main, [p], args.max_tokens) for p in prompts)

    async def ceiling() -> int:
        return raw_generate(main, prompts, args.max_tokens)

    async def chunked() -> int:
        size = args.max_batch_size
        return sum(
            raw_generate(main, prompts[i : i + size], args.max_tokens)
            for i in range(0, len(prompts), size)
        )

    out: dict[str, Any] = {
        "sequential_generate": sequential,
        "one_batched_generate": ceiling,
        f"batched_generate_b{args.max_batch_size}": chunked,
    }
    for c in args.concurrency:
        for label, worker in workers.items():
            suffix = "" if label == "telemetry_on" else "_telemetry_off"
            out[f"worker_c{c}{suffix}"] = lambda w=worker, c=c: through_worker(w, requests, c)
    return out


async def bench_model(path: Path, args) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    main = TransformersWorker(path, max_batch_size=args.max_batch_size)
    workers = {"telemetry_on": main}
    if main.info.architecture == "moe":
        workers["telemetry_off"] = TransformersWorker(
            path, max_batch_size=args.max_batch_size, expert_telemetry=False
        )
    for worker in workers.values():
        await worker.load()
    requests = make_requests(args.requests, args.max_tokens)
    table = modes(workers, requests, args)
    # Warm-up: first calls allocate and pick kernels.
    await table["one_batched_generate"]()
    await through_worker(main, requests[:8], 8)
    samples: dict[str, list[float]] = {name: [] for name in table}
    names = list(table)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order if rep % 2 == 0 else order[::-1]:
            seconds, tokens = await timed(table[name])
            samples[name].append(tokens / seconds)
            print(f"  rep {rep} {name:32s} {tokens / seconds:9.0f} tok/s", flush=True)
    for worker in workers.values():
        await worker.aclose()
    report = summarise(main, samples)
    report["load_average_1m_before_after"] = [load_before, round(os.getloadavg()[0], 2)]
    return report


def summarise(worker: TransformersWorker, samples: dict[str, list[float]]) -> dict[str, Any]:
    medians = {name: statistics.median(v) for name, v in samples.items()}
    base = medians["sequential_generate"]
    report: dict[str, Any] = {
        "info": worker.info.model_dump(),
        "tokens_per_s_median": {k: round(v, 1) for k, v in medians.items()},
        "tokens_per_s_samples": {k: [round(x, 1) for x in v] for k, v in samples.items()},
        "ratio_vs_sequential": {k: round(v / base, 2) for k, v in medians.items()},
        # The same ratio taken within each repetition, then the median: less exposed to the
        # machine's speed drifting between repetitions (other processes on a shared box).
        "ratio_vs_sequential_per_rep_median": {
            k: round(
                statistics.median(
                    x / b for x, b in zip(v, samples["sequential_generate"], strict=True)
                ),
                2,
            )
            for k, v in samples.items()
        },
        "worker_batch_sizes": worker.stats["batch_sizes"],
    }
    off = [k.removesuffix("_telemetry_off") for k in samples if k.endswith("_telemetry_off")]
    if off:
        # Fraction of tokens/s lost with the hooks on, paired within each repetition (on and
        # off run back to back), then the median.
        report["telemetry_cost_tok_s"] = {
            k: round(
                statistics.median(
                    1 - a / b
                    for a, b in zip(samples[k], samples[k + "_telemetry_off"], strict=True)
                ),
                4,
            )
            for k in off
        }
        # The hooks' own time over the generate time that carried them: direct, and far less
        # exposed to other load on the machine than a difference of two throughputs.
        stats = worker.stats
        report["telemetry_cost_direct"] = {
            "telemetry_seconds": stats["telemetry_seconds"],
            "generate_seconds": stats["generate_seconds"],
            "fraction": round(stats["telemetry_seconds"] / stats["generate_seconds"], 5),
        }
    return report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        help="a model dir or a shipped reference model's name; repeatable "
        "(default: the reference models dense-s1 and moe-s1)",
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 32, 64]
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the whole run, baselines included "
        "(default: torch's own choice); 1 keeps figures stable when other "
        "processes load the CPU, where 2 spinning OpenMP threads collapse",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "pool_throughput.json")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "models": {},
    }
    for name in args.model or ["dense-s1", "moe-s1"]:
        path = Path(name) if Path(name).is_dir() else checkpoint_path(name.removeprefix("zoo:"))
        print(f"{path.name}: {path}", flush=True)
        results["models"][path.name] = await bench_model(path, args)
    import transformers

    results["machine"]["transformers"] = transformers.__version__
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for label, model in results["models"].items():
        print(f"\n{label}: median tok/s (x sequential)")
        for name, value in model["tokens_per_s_median"].items():
            print(f"  {name:32s} {value:9.0f}  x{model['ratio_vs_sequential'][name]:.2f}")
        if "telemetry_cost_tok_s" in model:
            print(f"  telemetry cost, tok/s lost: {model['telemetry_cost_tok_s']}")
            print(f"  telemetry cost, direct: {model['telemetry_cost_direct']}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    anyio.run(main)
