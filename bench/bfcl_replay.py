"""BFCL replay throughput: the whole single-turn BFCL (every category of the installed bfcl-eval
package, about 3,650 cases) scored from a replay file through `rolepool eval --replay`, end to end
(loading, parsing, validation, BFCL's verdict, summary and reports), in a child process.

The replay file is the ground truth (rolepool's `reference_calls`: what a perfect model would
answer; a plain refusal on irrelevance cases, one call on relevance cases), written first, outside
the timing. Usage: `python bench/bfcl_replay.py [--out DIR]`; prints seconds and the overall line.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bfcl-replay-"))
    truth = work / "truth.jsonl"
    cases = write_truth(truth)
    out = args.out or work / "eval"
    entry = "from rolepool.cli import main; main()"
    command = [sys.executable, "-c", entry, "eval", "--suite", "bfcl", "--replay", str(truth)]
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
