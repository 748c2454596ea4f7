"""Run every benchmark, then rewrite BENCHMARKS.md's tables from bench/results/*.json.

    python bench/run_all.py               # everything: about 10 minutes on an idle 2-core box
    python bench/run_all.py --only overhead event_stream
    python bench/run_all.py --render-only # only rewrite BENCHMARKS.md from the JSON files

Each bench runs as its own subprocess (a fresh interpreter: one bench's imports, threads and heap
do not colour the next one's figures) with this checkout first on PYTHONPATH, and a time limit,
so the whole run stays under 15 minutes. A missing script, a failure or a timeout is reported in
BENCHMARKS.md's run table and does not stop the others; the section of a bench that did not
produce fresh figures keeps its previous JSON, marked as not refreshed by this run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DOC = ROOT / "BENCHMARKS.md"
sys.path.insert(0, str(BENCH))

from _common import machine, table, versions  # noqa: E402


@dataclass(frozen=True)
class Bench:
    name: str  # the script is bench/<name>.py, its results bench/results/<name>.json
    timeout: float  # seconds; the limits add up to under 15 minutes
    args: tuple[str, ...] = ()


BENCHES = (
    Bench("overhead", 100),
    Bench("event_stream", 60),
    Bench("scaling", 120),
    Bench("serve_load", 120),
    Bench("pool_throughput", 270),
    Bench("eval_throughput", 210),
)


def run_one(bench: Bench) -> dict[str, Any]:
    script = BENCH / f"{bench.name}.py"
    if not script.exists():
        return {"status": "missing", "seconds": 0.0, "detail": f"no {script.relative_to(ROOT)}"}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    print(f"== {bench.name} (limit {bench.timeout:.0f}s)", flush=True)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *bench.args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=bench.timeout,
        )
    except subprocess.TimeoutExpired:
        seconds = time.monotonic() - started
        return {"status": "timeout", "seconds": seconds, "detail": f"over {bench.timeout:.0f}s"}
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {
            "status": f"failed ({proc.returncode})",
            "seconds": seconds,
            "detail": " / ".join(tail),
        }
    return {"status": "ok", "seconds": seconds, "detail": ""}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fallback_markdown(doc: dict[str, Any]) -> str:
    """A table for a result file without the `markdown` key (pool_throughput's older shape)."""
    models = doc.get("models")
    if isinstance(models, dict) and all("tokens_per_s_median" in m for m in models.values()):
        modes = list(next(iter(models.values()))["tokens_per_s_median"])
        rows = []
        for mode in modes:
            row = [mode]
            for m in models.values():
                tps = m["tokens_per_s_median"].get(mode)
                ratio = m.get("ratio_vs_sequential", {}).get(mode)
                row.append(f"{tps:,.0f} ({ratio}x)" if tps is not None else "")
            rows.append(row)
        return table(["mode", *[f"{name} tokens/s (x sequential)" for name in models]], rows)
    return "(this result file has no `markdown` table; see the JSON)"


def section(bench: Bench, outcome: dict[str, Any] | None, fresh_since: float) -> str:
    doc = load(bench.name)
    if doc is None:
        status = outcome["status"] if outcome else "not run"
        return f"_No results yet ({status})._"
    lines = [doc.get("markdown") or fallback_markdown(doc), ""]
    path = RESULTS / f"{bench.name}.json"
    stale = outcome is not None and (
        outcome["status"] != "ok" or path.stat().st_mtime < fresh_since
    )
    if stale:
        lines.append(
            f"**Not refreshed by the last run ({outcome['status']}); these figures are older.**"
        )
    command = doc.get("command") or f"python bench/{bench.name}.py"
    meta = [f"Command: `{command}`"]
    if doc.get("date"):
        meta.append(f"date: {doc['date']}")
    peers = {k: v for k, v in (doc.get("versions") or {}).items() if k != "sqlite"}
    if peers:
        meta.append("versions: " + ", ".join(f"{k} {v}" for k, v in peers.items()))
    lines.append(" · ".join(meta) + f" · raw: `bench/results/{bench.name}.json`")
    return "\n".join(lines)


def replace_between(text: str, name: str, body: str) -> str:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    if start not in text or end not in text:
        return text.rstrip() + f"\n\n## {name}\n\n{start}\n{body}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def run_table(outcomes: dict[str, dict[str, Any]], total: float) -> str:
    vers = versions()
    mach = machine()
    rows = [
        [f"`bench/{b.name}.py`", o["status"], f"{o['seconds']:.0f}", o["detail"]]
        for b in BENCHES
        if (o := outcomes.get(b.name))
    ]
    return (
        f"Last full run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{total / 60:.1f} minutes, `python bench/run_all.py`.\n"
        f"Machine: {mach['platform']}, {mach['cpus']} CPUs ({mach['processor']}), "
        f"load average {mach['load_avg_1m']} at the end.\n"
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in vers.items())
        + "\n\n"
        + table(["bench", "status", "seconds", "detail"], rows)
    )


def render(outcomes: dict[str, dict[str, Any]], total: float | None, fresh_since: float) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if total is not None:
        text = replace_between(text, "run", run_table(outcomes, total))
    for bench in BENCHES:
        text = replace_between(
            text, bench.name, section(bench, outcomes.get(bench.name), fresh_since)
        )
    DOC.write_text(text)
    print(f"rewrote {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    parser.add_argument("--render-only", action="store_true", help="run nothing, rewrite the doc")
    args = parser.parse_args()
    started_wall = time.time()
    started = time.monotonic()
    outcomes: dict[str, dict[str, Any]] = {}
    if not args.render_only:
        for bench in BENCHES:
            if args.only and bench.name not in args.only:
                continue
            outcomes[bench.name] = run_one(bench)
            o = outcomes[bench.name]
            print(f"   {o['status']} in {o['seconds']:.0f}s {o['detail']}", flush=True)
    total = None if args.render_only or args.only else time.monotonic() - started
    render(outcomes, total, started_wall)
    failed = [n for n, o in outcomes.items() if o["status"] != "ok"]
    if failed:
        print("not ok: " + ", ".join(failed))


if __name__ == "__main__":
    main()
