"""Run every benchmark, then rewrite BENCHMARKS.md's tables from bench/results/*.json.

    python bench/run_all.py               # everything: about 30 minutes on an idle 2-core box
    python bench/run_all.py --only overhead event_stream
    python bench/run_all.py --render-only # only rewrite BENCHMARKS.md from the JSON files

Each bench runs as its own subprocess (a fresh interpreter: one bench's imports, threads and heap
do not colour the next one's figures) with this checkout first on PYTHONPATH, and a time limit,
so the whole run stays under 59 minutes. A missing script, a failure or a timeout is reported in
BENCHMARKS.md's run table and does not stop the others; the section of a bench whose last run
did not produce fresh figures keeps its previous JSON, marked as not refreshed. Each bench's last
outcome and the last full run are kept in bench/results/run_all.json, so `--only` updates just
those benches' rows.
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
    timeout: float  # seconds; the limits add up to 58.2 minutes (serve_compare takes ~3)
    budgeted: bool = False  # takes --budget: stops repeating in time rather than being killed


BENCHES = (
    Bench("overhead", 110, budgeted=True),
    Bench("event_stream", 70, budgeted=True),
    Bench("scaling", 150, budgeted=True),
    Bench("serve_load", 120, budgeted=True),
    Bench("serve_compare", 420, budgeted=True),
    Bench("pool_throughput", 420),  # with the prefix cache off as well (issue 25)
    Bench("eval_throughput", 300),  # eight shipped models since issue 26
    Bench("workflow_completion", 60),
    Bench("workflow_tasks", 420),  # 17 hand-written requests, both routings (issue 26)
    Bench("routing", 90),
    Bench("fairness", 300),
    Bench("constrained", 420),
    Bench("train_step", 610),
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
            [sys.executable, str(script), *_budget_args(bench)],
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


def _budget_args(bench: Bench) -> list[str]:
    """Leave a fifth of the limit (at least 15 s) for start-up, the last repetition and output."""
    if not bench.budgeted:
        return []
    return ["--budget", f"{max(bench.timeout * 0.8, bench.timeout - 60) - 15:.0f}"]


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


def section(bench: Bench, outcome: dict[str, Any] | None) -> str:
    doc = load(bench.name)
    if doc is None:
        status = outcome["status"] if outcome else "not run"
        return f"_No results yet ({status})._"
    lines = [doc.get("markdown") or fallback_markdown(doc), ""]
    if outcome is not None and outcome["status"] != "ok":
        lines.append(
            f"**Not refreshed by its last run ({outcome['status']}, {outcome['date']}); "
            "these figures are older.**"
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


def run_table(ledger: dict[str, Any]) -> str:
    full = ledger.get("full_run")
    head = "No full run yet.\n"
    if full:
        mach = full["machine"]
        head = (
            f"Last full run: {full['date']}, {full['minutes']:.1f} minutes, "
            "`python bench/run_all.py`.\n"
            f"Machine: {mach['platform']}, {mach['cpus']} CPUs ({mach['processor']}), "
            f"load average {mach['load_avg_1m']} at the end.\n"
            "Versions: " + ", ".join(f"{k} {v}" for k, v in full["versions"].items()) + "\n"
        )
    rows = [
        [f"`bench/{b.name}.py`", o["status"], o["date"], f"{o['seconds']:.0f}", o["detail"]]
        for b in BENCHES
        if (o := ledger["benches"].get(b.name))
    ]
    return head + "\n" + table(["bench", "last status", "when", "seconds", "detail"], rows)


def render(ledger: dict[str, Any]) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    text = replace_between(text, "run", run_table(ledger))
    for bench in BENCHES:
        text = replace_between(text, bench.name, section(bench, ledger["benches"].get(bench.name)))
    DOC.write_text(text)
    print(f"rewrote {DOC}")


def load_ledger() -> dict[str, Any]:
    """bench/results/run_all.json: each bench's last outcome, and the last full run."""
    ledger = load("run_all") or {}
    ledger.setdefault("benches", {})
    return ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    parser.add_argument("--render-only", action="store_true", help="run nothing, rewrite the doc")
    args = parser.parse_args()
    ledger = load_ledger()
    started = time.monotonic()
    ran = []
    if not args.render_only:
        for bench in BENCHES:
            if args.only and bench.name not in args.only:
                continue
            outcome = run_one(bench) | {"date": _now()}
            ledger["benches"][bench.name] = outcome
            ran.append(bench.name)
            print(f"   {outcome['status']} in {outcome['seconds']:.0f}s {outcome['detail']}")
        if not args.only:
            ledger["full_run"] = {
                "date": _now(),
                "minutes": (time.monotonic() - started) / 60,
                "machine": machine(),
                "versions": versions(),
            }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "run_all.json").write_text(json.dumps(ledger, indent=2) + "\n")
    render(ledger)
    failed = [n for n in ran if ledger["benches"][n]["status"] != "ok"]
    if failed:
        print("not ok: " + ", ".join(failed))


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


if __name__ == "__main__":
    main()
