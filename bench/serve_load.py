"""Load on `rolepool serve`: 200 concurrent chat completions on loopback, latency and errors.

    python bench/serve_load.py                         # shipped dense-s1, 200 concurrent, 3 reps
    python bench/serve_load.py --model moe-s1 --concurrency 200 --max-tokens 16 --reps 3

Starts the real command, `rolepool serve --model NAME --port PORT`, as a subprocess (the server's
own event loop and batching worker, as a user runs it), waits for /health, then per repetition
sends, alternating: the same prompts one at a time (`sequential`, the baseline: a request's
latency with nobody else waiting) and all `--concurrency` at once from one HTTP client with enough
connections for all of them (`concurrent`). Reports latency percentiles, requests/s, completion
tokens/s, and every error (HTTP status or exception) by kind. The sequential round sends
`--sequential` requests (default 20), enough for its percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx
from _common import Budget, add_budget_arg, median, table, write_result

SYLLABLES = ["tra", "ko", "lis", "mun", "ve", "dor", "sai", "clo", "pe", "rin", "zu", "ta", "wof"]


def prompts(n: int) -> list[str]:
    rng = random.Random(7)
    return [
        " ".join(
            "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(8, 30))
        )
        for _ in range(n)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("ROLEPOOL_SERVE_API_KEY", None)
    cmd = [sys.executable, "-m", "rolepool.cli", "serve", "--model", model, "--port", str(port)]
    cmd += ["--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"rolepool serve exited with {proc.returncode}:\n{err}")
            try:
                if (await client.get(f"{base}/health", timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"rolepool serve was not healthy within {timeout:.0f}s")


async def served_model(base: str) -> str:
    """The id the server serves under (it rejects any other name with 404 model_not_found)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{base}/v1/models", timeout=10)
        response.raise_for_status()
        return response.json()["data"][0]["id"]


async def one(
    client: httpx.AsyncClient, base: str, model: str, text: str, max_tokens: int
) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    started = time.perf_counter()
    try:
        response = await client.post(f"{base}/v1/chat/completions", json=body)
        latency = time.perf_counter() - started
        if response.status_code != 200:
            return {"latency": latency, "error": f"HTTP {response.status_code}", "tokens": 0}
        usage = response.json().get("usage") or {}
        return {"latency": latency, "error": None, "tokens": usage.get("completion_tokens", 0)}
    except httpx.HTTPError as exc:
        return {"latency": time.perf_counter() - started, "error": type(exc).__name__, "tokens": 0}


async def round_of(
    base: str, model: str, texts: list[str], concurrent: bool, max_tokens: int
) -> dict:
    limits = httpx.Limits(max_connections=len(texts) + 10, max_keepalive_connections=len(texts))
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:
        started = time.perf_counter()
        if concurrent:
            outs = await asyncio.gather(*(one(client, base, model, t, max_tokens) for t in texts))
        else:
            outs = [await one(client, base, model, t, max_tokens) for t in texts]
        wall = time.perf_counter() - started
    ok = sorted(o["latency"] for o in outs if o["error"] is None)
    return {
        "requests": len(outs),
        "wall_s": wall,
        "ok": len(ok),
        "errors": dict(Counter(o["error"] for o in outs if o["error"] is not None)),
        "p50_s": percentile(ok, 50),
        "p90_s": percentile(ok, 90),
        "p99_s": percentile(ok, 99),
        "max_s": ok[-1] if ok else None,
        "requests_per_s": len(ok) / wall,
        "tokens_per_s": sum(o["tokens"] for o in outs) / wall,
    }


def percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[k]


def summarize(rounds: list[dict]) -> dict[str, Any]:
    keys = ("p50_s", "p90_s", "p99_s", "max_s", "requests_per_s", "tokens_per_s", "wall_s")
    out: dict[str, Any] = {
        k: median([r[k] for r in rounds if r[k] is not None] or [float("nan")]) for k in keys
    }
    errors: Counter[str] = Counter()
    for r in rounds:
        errors.update(r["errors"])
    out["errors"] = dict(errors)
    out["requests"] = sum(r["requests"] for r in rounds)
    return out


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(args.model, port)
    try:
        await wait_healthy(base, proc)
        model = await served_model(base)
        texts = prompts(args.concurrency)
        await round_of(base, model, texts[:4], True, args.max_tokens)  # warm-up
        seq, conc = [], []
        budget = Budget(args.budget, min_reps=1)
        for rep in range(args.reps):
            if not budget.allows(rep):
                break
            order = (False, True) if rep % 2 == 0 else (True, False)
            for concurrent in order:
                batch = texts if concurrent else texts[: args.sequential]
                out = await round_of(base, model, batch, concurrent, args.max_tokens)
                (conc if concurrent else seq).append(out)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    s, c = summarize(seq), summarize(conc)
    if not s["requests_per_s"] or not c["requests_per_s"]:
        raise SystemExit(
            "no request succeeded in a round; errors: "
            f"sequential {s['errors'] or 'none'}, concurrent {c['errors'] or 'none'}"
        )
    rows = [
        [
            name,
            f"{r['requests']}",
            f"{r['p50_s'] * 1e3:.0f}",
            f"{r['p90_s'] * 1e3:.0f}",
            f"{r['p99_s'] * 1e3:.0f}",
            f"{r['max_s'] * 1e3:.0f}",
            f"{r['requests_per_s']:.1f}",
            f"{r['tokens_per_s']:.0f}",
            ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none",
        ]
        for name, r in ((f"sequential ({args.sequential})", s), (f"{args.concurrency} at once", c))
    ]
    markdown = (
        table(
            [
                "load",
                "requests",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "req/s",
                "tokens/s",
                "errors",
            ],
            rows,
        )
        + f"\n\n`rolepool serve --model {args.model}` on loopback, max_tokens={args.max_tokens}, "
        f"greedy, {len(conc)} repetitions (medians of each round's percentiles; errors summed). "
        f"Concurrent serving gives {c['requests_per_s'] / s['requests_per_s']:.1f}x the "
        "requests/s of one-at-a-time."
    )
    results = {
        "model": args.model,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "sequential": s,
        "concurrent": c,
        "rounds": {"sequential": seq, "concurrent": conc},
    }
    write_result("serve_load", "rolepool serve under concurrent load", results, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dense-s1", help="shipped model name or directory")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=20, help="requests in the baseline")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    add_budget_arg(parser)
    asyncio.run(main(parser.parse_args()))
