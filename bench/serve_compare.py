"""`rolepool serve` beside `transformers serve --continuous-batching` on the same checkpoint.

    python bench/serve_compare.py                     # dense-s1, concurrency 1, 8, 32, 3 reps
    python bench/serve_compare.py --model moe-s1 --max-tokens 64 --reps 5

Starts both real servers as subprocesses with the same thread settings (`rolepool serve --model
NAME`, and `transformers serve --continuous-batching --device cpu --dtype float32 DIR` offline
on the checkpoint's directory), then per concurrency level and repetition, alternating which
server goes first, sends the same prompts to each as `stream: true` chat completions, all at
once, greedy, with the same `max_tokens`. Per request it notes the time to the first content
delta (TTFT), the time to the end (latency) and the completion tokens (the server's usage where
it streams one, else the text re-tokenized with the checkpoint's tokenizer: the same count for
both since greedy outputs agree). Reports per server and level the median over repetitions of
completion tokens/s (all requests' tokens over the round's wall time), TTFT p50/p95 and latency
p95, and whether the goal holds: at least 3x transformers serve's tokens/s at concurrency 32 and
a TTFT p95 no worse at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import Budget, add_budget_arg, median, table, write_result
from serve_load import free_port, percentile, prompts, wait_healthy

from rolepool.zoo import checkpoint_path

GOAL_SPEEDUP = 3.0


def start(command: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("ROLEPOOL_SERVE_API_KEY", None)
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Server:
    def __init__(self, name: str, base: str, model: str, count_tokens) -> None:
        self.name, self.base, self.model, self.count_tokens = name, base, model, count_tokens

    async def one(self, client: httpx.AsyncClient, text: str, max_tokens: int) -> dict[str, Any]:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first, pieces, usage = None, [], None
        try:
            async with client.stream("POST", f"{self.base}/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    return {"error": f"HTTP {r.status_code}"}
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            first = first or time.perf_counter()
                            pieces.append(content)
        except httpx.HTTPError as exc:
            return {"error": type(exc).__name__}
        end = time.perf_counter()
        text = "".join(pieces)
        tokens = (usage or {}).get("completion_tokens") or self.count_tokens(text)
        ttft = (first or end) - started
        return {"error": None, "ttft": ttft, "latency": end - started, "tokens": tokens}

    async def round(self, texts: list[str], max_tokens: int) -> dict[str, Any]:
        limits = httpx.Limits(max_connections=len(texts) + 4)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:
            started = time.perf_counter()
            outs = await asyncio.gather(*(self.one(client, t, max_tokens) for t in texts))
            wall = time.perf_counter() - started
        ok = [o for o in outs if o["error"] is None]
        ttft = sorted(o["ttft"] for o in ok)
        latency = sorted(o["latency"] for o in ok)
        return {
            "ok": len(ok),
            "errors": [o["error"] for o in outs if o["error"] is not None],
            "tokens_per_s": sum(o["tokens"] for o in ok) / wall,
            "ttft_p50_s": percentile(ttft, 50),
            "ttft_p95_s": percentile(ttft, 95),
            "latency_p95_s": percentile(latency, 95),
        }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("tokens_per_s", "ttft_p50_s", "ttft_p95_s", "latency_p95_s")
    out = {k: median([r[k] for r in rounds if r[k] is not None] or [float("nan")]) for k in keys}
    out["errors"] = sum(len(r["errors"]) for r in rounds)
    out["reps"] = len(rounds)
    return out


async def measure(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    texts_all = prompts(max(args.concurrency))
    for server in servers:  # warm-up: load, first allocations
        await server.round(texts_all[:4], args.max_tokens)
    budget = Budget(args.budget, min_reps=1)
    results: dict[str, Any] = {}
    for level in args.concurrency:
        texts = texts_all[:level]
        rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for rep in range(args.reps):
            if not budget.allows(rep):
                break
            order = servers if rep % 2 == 0 else servers[::-1]
            for server in order:
                rounds[server.name].append(await server.round(texts, args.max_tokens))
        results[str(level)] = {name: _summary(r) for name, r in rounds.items()}
        print(f"concurrency {level}: {json.dumps(results[str(level)])}", file=sys.stderr)
    return results


def verdict(results: dict[str, Any], levels: list[int]) -> dict[str, Any]:
    top, low = str(max(levels)), str(min(levels))
    speedup = (
        results[top]["rolepool"]["tokens_per_s"] / results[top]["transformers"]["tokens_per_s"]
    )
    ttft_ratio = results[low]["rolepool"]["ttft_p95_s"] / results[low]["transformers"]["ttft_p95_s"]
    return {
        "speedup_tokens_per_s_at_top": speedup,
        "goal_speedup_met": speedup >= GOAL_SPEEDUP,
        "ttft_p95_ratio_at_lowest": ttft_ratio,
        "goal_ttft_met": ttft_ratio <= 1.0,
    }


def render(results: dict[str, Any], goal: dict[str, Any], args: argparse.Namespace) -> str:
    rows = []
    for level, by_server in results.items():
        for name, r in by_server.items():
            ttft = [f"{r['ttft_p50_s'] * 1000:.0f}", f"{r['ttft_p95_s'] * 1000:.0f}"]
            rows.append([level, name, f"{r['tokens_per_s']:.0f}", *ttft,
                         f"{r['latency_p95_s']:.2f}", r["errors"], r["reps"]])  # fmt: skip
    header = ["concurrency", "server", "completion tok/s", "TTFT p50 ms", "TTFT p95 ms",
              "latency p95 s", "errors", "reps"]  # fmt: skip
    met = "met" if goal["goal_speedup_met"] else "not met"
    ttft = "met" if goal["goal_ttft_met"] else "not met"
    return (
        f"{args.model}, max_tokens {args.max_tokens}, greedy, streaming, medians over reps\n\n"
        + table(header, rows)
        + f"\n\nGoal >= {GOAL_SPEEDUP:g}x tokens/s at concurrency {max(args.concurrency)}: "
        f"{goal['speedup_tokens_per_s_at_top']:.2f}x, {met}. TTFT p95 at concurrency "
        f"{min(args.concurrency)} no worse: ratio {goal['ttft_p95_ratio_at_lowest']:.2f}, {ttft}."
    )


def rolepool_model_args(args: argparse.Namespace) -> list[str]:
    """`--model NAME`, or with `--max-wait-ms` a pool.toml serving the model with that batching
    window (how long an idle engine waits for more requests before it prefills)."""
    if args.max_wait_ms is None:
        return ["--model", args.model]
    pool = Path(tempfile.mkdtemp()) / "pool.toml"
    pool.write_text(
        f'[workers.{args.model}]\nbackend = "transformers"\nmodel = "{args.model}"\n'
        f'max_wait_ms = {args.max_wait_ms}\n\n[policy]\nversion = "v"\n'
        f'default = {{ choices = [{{ worker = "{args.model}" }}] }}\n'
    )
    return ["--pool", str(pool)]


async def main(args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer

    directory = checkpoint_path(args.model)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    rp_port, tf_port = free_port(), free_port()
    rolepool_cmd = [sys.executable, "-m", "rolepool.cli", "serve", "--port", str(rp_port),
                    "--log-level", "warning", *rolepool_model_args(args)]  # fmt: skip
    transformers_cmd = ["transformers", "serve", "--continuous-batching", "--host", "127.0.0.1",
                        "--port", str(tf_port), "--device", "cpu", "--dtype", "float32",
                        str(directory)]  # fmt: skip
    procs = [start(rolepool_cmd), start(transformers_cmd)]
    try:
        rp_base, tf_base = f"http://127.0.0.1:{rp_port}", f"http://127.0.0.1:{tf_port}"
        await wait_healthy(rp_base, procs[0])
        await wait_healthy(tf_base, procs[1], timeout=180)
        servers = [
            Server("rolepool", rp_base, args.model, count),
            Server("transformers", tf_base, str(directory), count),
        ]
        results = await measure(args, servers)
    finally:
        for proc in procs:
            stop(proc)
    goal = verdict(results, args.concurrency)
    write_result(
        "serve_compare",
        "rolepool serve vs transformers serve --continuous-batching (same checkpoint, HTTP)",
        {
            "levels": results,
            "goal": goal,
            "max_tokens": args.max_tokens,
            "model": args.model,
            "max_wait_ms": args.max_wait_ms,
        },  # fmt: skip
        render(results, goal, args),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dense-s1")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 8, 32])  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    window = "serve rolepool with this batching window in ms (default: its own, 5)"
    parser.add_argument("--max-wait-ms", type=float, default=None, help=window)
    add_budget_arg(parser)
    asyncio.run(main(parser.parse_args()))
