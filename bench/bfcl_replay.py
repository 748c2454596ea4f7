"""BFCL replay throughput, in two parts.

Single-turn: the whole single-turn BFCL (every category of the installed bfcl-eval package, about
3,650 cases) scored from a replay file through `rolepool eval --replay`, end to end (loading,
parsing, validation, BFCL's verdict, summary and reports), in a child process. The replay file is
the ground truth (rolepool's `reference_calls`: what a perfect model would answer; a plain refusal
on irrelevance cases, one call on relevance cases), written first, outside the timing.

Multi-turn: the 800 multi-turn cases through rolepool's agent loop (`run_case`, as `rolepool eval`
runs them) against BFCL's backends, each answered by a scripted worker that plays the ground truth,
64 cases in flight, then scored (the checker executes every turn again beside the ground truth).

Usage: `python bench/bfcl_replay.py [--out DIR] [--skip-single] [--skip-multi]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_truth(path: Path) -> int:
    from rolepool.evals.bfcl import CATEGORIES, load_bfcl
    from rolepool.evals.scoring import reference_calls

    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for suite in CATEGORIES:
            for case in load_bfcl(suite, None):
                if case.expected:
                    record = {"id": case.id, "tool_calls": reference_calls(case)}
                elif case.expects_call:  # relevance: any call
                    call = {"name": case.tools[0].name, "arguments": {}}
                    record = {"id": case.id, "tool_calls": [call]}
                else:
                    record = {"id": case.id, "text": "None of these functions fits the request."}
                handle.write(json.dumps(record) + "\n")
                count += 1
    return count


def multi_turn() -> None:
    import anyio

    from rolepool.evals.bfcl import MULTI_TURN_CATEGORIES
    from rolepool.evals.bfcl.multi_turn import ground_truth_replies, load_multi_turn
    from rolepool.evals.runner import Target, run_case
    from rolepool.evals.summary import build_summary
    from rolepool.pools.testing import ScriptedWorker

    started = time.perf_counter()
    cases = [c for suite in MULTI_TURN_CATEGORIES for c in load_multi_turn(suite, None)]
    loaded = time.perf_counter() - started
    lines = []

    async def one(case, limiter) -> None:
        async with limiter:
            worker = ScriptedWorker(ground_truth_replies(case))
            lines.append(await run_case(case, Target("truth", worker), store=None))

    async def run_all() -> None:
        limiter = anyio.CapacityLimiter(64)
        async with anyio.create_task_group() as tg:
            for case in cases:
                tg.start_soon(one, case, limiter)

    anyio.run(run_all)
    seconds = time.perf_counter() - started
    group = build_summary(lines).bfcl.workers["truth"].groups["multi_turn"]
    print(
        f"{len(lines)} multi-turn cases run through the agent loop and scored in {seconds:.1f} s "
        f"(wall; loading {loaded:.1f} s): multi-turn {group.accuracy:.2%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-multi", action="store_true")
    args = parser.parse_args()
    if not args.skip_multi:
        multi_turn()
    if args.skip_single:
        return
    work = Path(tempfile.mkdtemp(prefix="bfcl-replay-"))
    truth = work / "truth.jsonl"
    cases = write_truth(truth)
    out = args.out or work / "eval"
    entry = "from rolepool.cli import main; main()"
    suites = ["--suite", "bfcl-non-live", "--suite", "bfcl-live"]
    command = [sys.executable, "-c", entry, "eval", *suites, "--replay", str(truth)]
    started = time.perf_counter()
    subprocess.run([*command, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    overall = next(iter(summary["bfcl"]["workers"].values()))["groups"]
    print(f"{cases} cases replayed and scored in {seconds:.1f} s (wall, end to end)")
    for name, group in overall.items():
        if group["accuracy"] is not None:
            print(f"  {name}: {group['accuracy']:.2%} over {group['n']} cases")


if __name__ == "__main__":
    main()
