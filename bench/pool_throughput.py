"""Tokens/s through TransformersWorker at several concurrencies, against the same requests run
one at a time with plain `generate` (the baseline) and all at once in one padded `generate` (the
ceiling). MoE models are also run with expert telemetry off, to price the telemetry hooks.

    python bench/pool_throughput.py                 # the shipped dense-s1 and moe-s1
    python bench/pool_throughput.py --model DIR     # a local model directory (repeatable)

Modes are run in alternating order within each repetition and reported as medians; ratios are
taken within each repetition (then the median), so drift in the machine's speed hits every mode
alike. On a shared 2-core box, torch's two OpenMP threads collapse when another process holds a
core; `--threads 1` keeps the figures stable then. Results go to
bench/results/pool_throughput.json (keys title, command, date, versions, results, markdown).
The default models are the shipped reference models (vocab 1,024, hidden 128, 4 layers; dense
SwiGLU 512; MoE 8 experts x 256, top-2). Greedy decoding gives every mode the same tokens, and
every mode counts the tokens a caller gets (up to a row's EOS), so a padded `generate` is not
credited for rows that stopped early. The worker decodes with its own engine
(`rolepool/pools/decode.py`), not `generate`, which is why it can beat the "ceiling".

`--prompts role` sends what the search role's agents send: its system prompt and its three tool
schemas before each user message (the shared prefix a prefix cache serves); `plain` (the default,
as before) a short system prompt and no tools. Where the worker keeps a prefix cache
(`rolepool/pools/prefix_cache.py`), its cache is emptied before each timed run, so only sharing
within a run counts, and `worker_c32_prefix_cache_off` runs the same requests without it;
`prefix_cache` in the results gives the share of prompt tokens served from the cache at
concurrency 32 (prefill tokens saved).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import torch
from _common import padded_generate

from rolepool.core import Message, Request, Sampling, ToolSpec
from rolepool.pools import compute
from rolepool.pools.transformers_worker import TransformersWorker
from rolepool.zoo import checkpoint_path

RESULTS = Path(__file__).resolve().parent / "results"
CEILING = "one_batched_generate"
TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
SYLLABLES = ["tra", "ko", "lis", "mun", "ve", "dor", "sai", "clo", "pe", "rin", "zu", "ta", "wof"]


def pseudo_words(rng: random.Random, n: int) -> str:
    return " ".join(
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(n)
    )


def make_requests(n: int, max_tokens: int, prompts: str = "plain") -> list[Request]:
    """Prompts of 20-100 tokens, like the tool-calling corpus (mean about 90 with the template);
    with `prompts="role"`, after the search role's instructions and tool schemas."""
    rng = random.Random(1)
    system, tools = "You are the search agent.", []
    if prompts == "role":
        from rolepool.agents.roles import builtin_agent

        agent = builtin_agent("search")
        system = agent.instructions
        tools = [
            ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
            for t in agent.tools
        ]
    return [
        Request(
            messages=[
                Message(role="system", content=system),
                Message(role="user", content=pseudo_words(rng, rng.randint(8, 40))),
            ],
            tools=tools,
            sampling=Sampling(max_tokens=max_tokens),
        )
        for _ in range(n)
    ]


def useful_tokens(generated: torch.Tensor, eos: list[int], max_tokens: int) -> int:
    """Tokens a caller gets from one row: up to and including its first EOS. A padded batched
    `generate` keeps rows that stopped early in the output; counting them would flatter it."""
    row = generated[:max_tokens].tolist()
    for i, token in enumerate(row):
        if token in eos:
            return i + 1
    return len(row)


def raw_generate(worker: TransformersWorker, prompts: list[list[int]], max_tokens: int) -> int:
    """One left-padded greedy `generate` over `prompts`; returns the useful tokens generated."""
    out, width = padded_generate(worker, prompts, max_tokens)
    return sum(useful_tokens(row[width:], worker._eos, max_tokens) for row in out)


async def through_worker(worker: TransformersWorker, requests: list[Request], conc: int) -> int:
    """`conc` closed-loop clients share `requests`, the worker's prefix cache (if any) emptied
    first; returns completion tokens."""
    if worker._decoder is not None and worker._decoder.prefix_cache is not None:
        worker._decoder.prefix_cache.clear()
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


async def timed(fn) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, tokens)."""
    start, cpu = time.perf_counter(), time.process_time()
    tokens = await fn()
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def modes(workers: dict[str, TransformersWorker], requests: list[Request], args) -> dict[str, Any]:
    """name -> async callable returning tokens generated; the first worker is the main one."""
    main = workers["telemetry_on"]
    prompts = [main._prompt_ids(r) for r in requests]

    # The baselines run on the thread the worker runs its torch work on (`pools/compute.py`):
    # torch work on a second thread would slow every mode that follows it (see that module).
    async def sequential() -> int:
        return await compute.run_sync(
            lambda: sum(raw_generate(main, [p], args.max_tokens) for p in prompts)
        )

    async def ceiling() -> int:
        return await compute.run_sync(raw_generate, main, prompts, args.max_tokens)

    async def chunked() -> int:
        size = args.max_batch_size
        return await compute.run_sync(
            lambda: sum(
                raw_generate(main, prompts[i : i + size], args.max_tokens)
                for i in range(0, len(prompts), size)
            )
        )

    out: dict[str, Any] = {
        "sequential_generate": sequential,
        "one_batched_generate": ceiling,
        f"batched_generate_b{args.max_batch_size}": chunked,
    }
    for c in args.concurrency:
        for label, worker in workers.items():
            if label == "telemetry_off" and c < 16:
                continue  # the hooks' price matters where batches are large; saves time
            if label == "prefix_cache_off" and c != 32:
                continue
            suffix = "" if label == "telemetry_on" else f"_{label}"
            out[f"worker_c{c}{suffix}"] = lambda w=worker, c=c: through_worker(w, requests, c)
    return out


async def bench_model(path: Path, args) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    main = TransformersWorker(path, max_batch_size=args.max_batch_size)
    workers = {"telemetry_on": main}
    if main.info.architecture == "moe":
        workers["telemetry_off"] = TransformersWorker(
            # No prefix cache either, as the telemetry-on worker has none: only the hooks differ.
            path,
            max_batch_size=args.max_batch_size,
            expert_telemetry=False,
            prefix_cache_tokens=0,
        )
    if main.prefix_cache_tokens:
        workers["prefix_cache_off"] = TransformersWorker(
            path, max_batch_size=args.max_batch_size, prefix_cache_tokens=0
        )
    for worker in workers.values():
        await worker.load()
    requests = make_requests(args.requests, args.max_tokens, args.prompts)
    table = modes(workers, requests, args)
    # Warm-up: first calls allocate and pick kernels.
    await table["one_batched_generate"]()
    await through_worker(main, requests[:8], 8)
    samples: dict[str, list[float]] = {name: [] for name in table}
    cpu_samples: dict[str, list[float]] = {name: [] for name in table}
    names = list(table)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order if rep % 2 == 0 else order[::-1]:
            seconds, cpu, tokens = await timed(table[name])
            samples[name].append(tokens / seconds)
            cpu_samples[name].append(tokens / max(cpu, 1e-9))
            print(f"  rep {rep} {name:32s} {tokens / seconds:9.0f} tok/s", flush=True)
    saved = await prefix_cache_saving(main, requests)
    for worker in workers.values():
        await worker.aclose()
    report = summarise(main, samples)
    report["prefix_cache"] = saved
    # Tokens per CPU-second of this process: with --threads 1 this is the work each mode needs,
    # far less exposed than wall time to other processes taking the CPU away.
    report["cpu_tokens_per_s_median"] = {
        k: round(statistics.median(v), 1) for k, v in cpu_samples.items()
    }
    report["cpu_ratio_vs_sequential"] = paired(cpu_samples, "sequential_generate")
    report["cpu_ratio_vs_ceiling"] = paired(cpu_samples, CEILING)
    report["load_average_1m_before_after"] = [load_before, round(os.getloadavg()[0], 2)]
    return report


async def prefix_cache_saving(worker: TransformersWorker, requests: list[Request]) -> Any:
    """One more run at concurrency 32 from an empty cache: prompt tokens, and how many the
    cache served (not prefilled); None without a cache."""
    if not worker.prefix_cache_tokens:
        return None
    before = worker.stats
    await through_worker(worker, requests, 32)
    after = worker.stats
    prompt = after["prompt_tokens"] - before["prompt_tokens"]
    hits = after["prefix_cache_hit_tokens"] - before["prefix_cache_hit_tokens"]
    return {"prompt_tokens": prompt, "cached_tokens": hits, "saved": round(hits / prompt, 3)}


def paired(samples: dict[str, list[float]], base: str) -> dict[str, float]:
    """Each mode's tok/s over `base`'s in the same repetition, then the median: ratios taken
    this way are far less exposed to the machine's speed drifting between repetitions."""
    return {
        k: round(statistics.median(x / b for x, b in zip(v, samples[base], strict=True)), 3)
        for k, v in samples.items()
    }


def summarise(worker: TransformersWorker, samples: dict[str, list[float]]) -> dict[str, Any]:
    stats = worker.stats
    vs_seq, vs_ceiling = paired(samples, "sequential_generate"), paired(samples, CEILING)
    report: dict[str, Any] = {
        "info": worker.info.model_dump(),
        "tokens_per_s_median": {k: round(statistics.median(v), 1) for k, v in samples.items()},
        "tokens_per_s_samples": {k: [round(x, 1) for x in v] for k, v in samples.items()},
        "ratio_vs_sequential": vs_seq,
        "ratio_vs_ceiling": vs_ceiling,
        "targets": {
            "c32_vs_sequential": vs_seq.get("worker_c32"),
            "c32_vs_sequential_met": (vs_seq.get("worker_c32") or 0) >= 6,
            "c32_vs_ceiling": vs_ceiling.get("worker_c32"),
            "c32_vs_ceiling_met": (vs_ceiling.get("worker_c32") or 0) >= 0.8,
            "c32_vs_sequential_8x_met": (vs_seq.get("worker_c32") or 0) >= 8,
        },
        # Admissions: requests prefilled together; the decode batch is what each step served.
        "worker_admission_sizes": stats["batch_sizes"],
        "worker_mean_decode_batch": round(
            stats["decode_row_steps"] / max(stats["decode_steps"], 1), 2
        ),
    }
    off = [k.removesuffix("_telemetry_off") for k in samples if k.endswith("_telemetry_off")]
    if off:
        # Fraction of tokens/s lost with the hooks on, paired within each repetition.
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
        # The hooks' and the counting's own time over the decode time that carried them.
        report["telemetry_cost_direct"] = {
            "telemetry_seconds": stats["telemetry_seconds"],
            "generate_seconds": stats["generate_seconds"],
            "fraction": round(stats["telemetry_seconds"] / stats["generate_seconds"], 5),
        }
    return report


def markdown(results: dict[str, Any], args) -> str:
    lines = []
    for label, model in results.items():
        lines += [
            f"**{label}** ({args.requests} requests, prompts {args.prompts}, "
            f"{args.max_tokens} new tokens max, greedy; "
            f"medians of {args.reps} alternating repetitions; {torch.get_num_threads()} torch "
            f"thread(s); load average "
            f"{model['load_average_1m_before_after'][0]} -> "
            f"{model['load_average_1m_before_after'][1]})",
            "",
            "| mode | tok/s | x sequential | of ceiling | per CPU-s: x sequential | of ceiling |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, value in model["tokens_per_s_median"].items():
            lines.append(
                f"| {name} | {value:.0f} | {model['ratio_vs_sequential'][name]:.2f} | "
                f"{model['ratio_vs_ceiling'][name]:.0%} | "
                f"{model['cpu_ratio_vs_sequential'][name]:.2f} | "
                f"{model['cpu_ratio_vs_ceiling'][name]:.0%} |"
            )
        t = model["targets"]
        if t["c32_vs_sequential"] is not None:
            lines += [
                "",
                f"Concurrency 32: {t['c32_vs_sequential']:.2f}x sequential (target 6x: "
                f"{'met' if t['c32_vs_sequential_met'] else 'not met'}; issue 25's 8x: "
                f"{'met' if t.get('c32_vs_sequential_8x_met') else 'not met'}), "
                f"{t['c32_vs_ceiling']:.0%} of one batched generate (target 80%: "
                f"{'met' if t['c32_vs_ceiling_met'] else 'not met'}).",
            ]
        saved = model.get("prefix_cache")
        if saved:
            off = model["ratio_vs_sequential"].get("worker_c32_prefix_cache_off")
            lines += [
                "",
                f"Prefix cache: {saved['cached_tokens']} of {saved['prompt_tokens']} prompt tokens "
                f"({saved['saved']:.0%}) served from the cache at concurrency 32, not prefilled; "
                f"the same run with the cache off: {off:.2f}x sequential.",
            ]
        lines.append("")
    return "\n".join(lines)


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
        "--prompts",
        choices=["plain", "role"],
        default="plain",
        help="plain: a short system prompt, no tools; role: the search role's system prompt "
        "and tool schemas before each user message (the shared prefix)",
    )
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
    import transformers

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in args.model or ["dense-s1", "moe-s1"]:
        path = Path(name) if Path(name).is_dir() else checkpoint_path(name.removeprefix("zoo:"))
        print(f"{path.name}: {path}", flush=True)
        results[path.name] = await bench_model(path, args)
    report = {
        "title": "Pool batching: tokens/s through TransformersWorker vs sequential and one "
        "batched generate",
        "command": " ".join(["python", "bench/pool_throughput.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "markdown": markdown(results, args),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + report["markdown"])
    for label, model in results.items():
        if "telemetry_cost_tok_s" in model:
            print(f"{label} telemetry cost, tok/s lost: {model['telemetry_cost_tok_s']}")
            print(f"{label} telemetry cost, direct: {model['telemetry_cost_direct']}")
    print(f"\nwrote {args.out} in {report['seconds']} s")


if __name__ == "__main__":
    anyio.run(main)
