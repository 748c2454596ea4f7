"""Routing strategies when one of two HTTP workers is slow or dead.

    python bench/routing.py                 # 80 requests at concurrency 4 per row
    python bench/routing.py --requests 200

Two `rolepool serve` processes on loopback, each over a FunctionWorker: `good` answers in
20 ms; `bad` answers in 400 ms (slow) or is killed before the run (dead: connection refused).
A client Pool of two OpenAIWorkers routes every request by one strategy (weighted 50/50,
least_busy, latency), with active health checks every 0.5 s (the dead rows also show weighted
without them). Reported per row: requests served, p50/p95 latency, and requests wasted on the
bad worker (sent to it: answered slowly, or failed over from).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import anyio
from _common import table, write_result

from rolepool.core import Message, Request, RolepoolError
from rolepool.pools.health_checks import HealthCheckSettings
from rolepool.pools.openai_worker import OpenAIWorker
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool

BACKEND = """
import sys, anyio
from rolepool.pools.server_run import bind, serve
from rolepool.pools.testing import FunctionWorker
delay = float(sys.argv[1])
async def answer(request):
    await anyio.sleep(delay)
    return "ok"
sock = bind("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
anyio.run(lambda: serve(FunctionWorker(answer, name="w"), sock=sock, log_level="warning"))
"""


def start_backend(delay: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", BACKEND, str(delay)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_row(
    ports: dict[str, int], strategy: str | None, checks: bool, n: int, concurrency: int
) -> dict[str, Any]:
    workers = {
        name: OpenAIWorker(f"http://127.0.0.1:{port}", model="w", name=name, max_retries=0)
        for name, port in ports.items()
    }
    route = Route(choices=[Choice(worker="good"), Choice(worker="bad")], strategy=strategy)
    health = HealthCheckSettings(interval=0.5, timeout=0.5) if checks else None
    pool = Pool(
        workers,
        RoutingPolicy(version="bench", default=route),
        health_checks=health,
        request_timeout=5,
        seed=0,
    )
    latencies: list[float] = []
    failed = 0
    limiter = anyio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failed
        async with limiter:
            started = time.perf_counter()
            try:
                await pool.complete(Request(messages=[Message(role="user", content="hi")]))
            except RolepoolError:
                failed += 1
                return
            latencies.append(time.perf_counter() - started)

    async with pool:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        stats = pool.stats
    return {
        "served": len(latencies),
        "failed": failed,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "wasted_on_bad": stats["bad"]["requests"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    good, good_port = start_backend(0.02)
    rows, results = [], []
    try:
        for scenario in ("slow", "dead"):
            bad, bad_port = start_backend(0.4)
            if scenario == "dead":
                bad.kill()
                bad.wait()
            ports = {"good": good_port, "bad": bad_port}
            variants = [(s, True) for s in ("weighted", "least_busy", "latency")]
            if scenario == "dead":
                variants.insert(0, ("weighted", False))
            for strategy, checks in variants:
                row = anyio.run(run_row, ports, strategy, checks, args.requests, args.concurrency)
                label = strategy + ("" if checks else " (no health checks)")
                results.append({"scenario": scenario, "strategy": label, **row})
                rows.append(
                    [
                        scenario,
                        label,
                        f"{row['served']}/{args.requests}",
                        row["p50_ms"],
                        row["p95_ms"],
                        row["wasted_on_bad"],
                    ]
                )
            if scenario == "slow":
                bad.kill()
                bad.wait()
    finally:
        good.kill()
    header = ["bad worker", "strategy", "served", "p50 ms", "p95 ms", "requests sent to bad"]
    note = (
        f"\n\n{args.requests} requests at concurrency {args.concurrency} per row through a Pool "
        "of two OpenAIWorkers (max_retries 0) to two `rolepool serve` processes on loopback over "
        "FunctionWorkers: good answers in 20 ms, bad in 400 ms (slow) or was killed before the "
        "run (dead). Health checks every 0.5 s unless the row says otherwise."
    )
    write_result(
        "routing",
        "Routing strategies with a slow or dead worker",
        results,
        table(header, rows) + note,
    )
    print(table(header, rows))


if __name__ == "__main__":
    main()
