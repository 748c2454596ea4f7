"""`rolepool eval`: run suites on workers (or score a replay file), then write the summary and the
report. Kept out of `rolepool/cli.py` so that module stays thin.

Bad input (unknown suite or worker, malformed suite or replay line, a results file that is not
ours) is a `UserError`: one message naming the problem, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from rolepool.cli_args import TEXT_FILE, InputDir, NameOrFile, Names, OutputDir, count
from rolepool.core import ConfigError, UserError

if TYPE_CHECKING:
    from rolepool.evals.cases import Case
    from rolepool.evals.result_line import ResultLine

DEFAULT_OUT = "rolepool-eval"


def _builtin_suites() -> tuple[str, ...]:
    from rolepool.evals.suites import SUITES

    return SUITES


def add_eval_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `eval` on the `rolepool` command's subparsers."""
    parser = subparsers.add_parser(
        "eval",
        help="tool-call accuracy of every worker, per role and architecture, with a report",
        description="Run eval suites through the real agent loop on each worker (default: every "
        "shipped reference model) and write results.jsonl, summary.json, report.md and "
        "report.html to --out. Re-running with the same --out resumes: finished cases are kept "
        "and skipped.",
    )
    parser.add_argument(
        "--suite",
        action="append",
        default=[],
        type=NameOrFile(_builtin_suites, "suite"),
        metavar="SUITE",
        help="a built-in suite (roles; a BFCL category such as bfcl-simple, bfcl-live-multiple, "
        "bfcl-multi-turn-base; a BFCL group: bfcl, bfcl-non-live, bfcl-live, bfcl-multi-turn) "
        "or a suite .jsonl file; repeatable "
        "(default: roles)",
    )
    parser.add_argument(
        "--pool", type=TEXT_FILE, metavar="FILE", help="evaluate the workers of this pool.toml"
    )
    parser.add_argument(
        "--workers",
        type=Names(),
        metavar="A,B",
        help="only these workers (names from the pool, or shipped reference models by default)",
    )
    parser.add_argument("--limit", type=count(), metavar="N", help="at most N cases per suite")
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        type=OutputDir(),
        metavar="DIR",
        help=f"output directory, also the resume point (default ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--replay",
        type=TEXT_FILE,
        metavar="FILE",
        help='score precomputed outputs (JSONL of {"id", "text"} or {"id", "tool_calls"}) '
        "without any model; the worker is named after the file",
    )
    parser.add_argument(
        "--bfcl-dir",
        type=InputDir(),
        metavar="DIR",
        help="BFCL v4 data directory (default $ROLEPOOL_BFCL_DIR)",
    )
    parser.add_argument(
        "--decoding",
        type=Names(),
        metavar="MODES",
        help="free, constrained (calls the model opens held to their schemas), required (every "
        "reply a call), comma-separated: each runs the same cases, and the report compares "
        "them (default free)",
    )
    parser.add_argument(
        "--concurrency",
        type=count(4096),
        default=64,
        metavar="N",
        help="cases in flight per worker (default 64; in-process workers batch them)",
    )
    parser.set_defaults(handler=cmd_eval)
    return parser


def load_cases(args: argparse.Namespace) -> list[Any]:
    from rolepool.evals.runner import check_cases
    from rolepool.evals.suites import expand_suites, load_suite

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    cases, seen = [], set()
    for spec in expand_suites(args.suite or ["roles"]):
        suite = load_suite(spec, bfcl_dir=args.bfcl_dir, limit=args.limit)
        for case in suite.cases:
            if (case.suite, case.id) in seen:
                raise UserError(
                    f"case {case.id!r} of suite {case.suite!r} is given twice "
                    "(the same suite named twice?)"
                )
            seen.add((case.suite, case.id))
            cases.append(case)
    if not cases:
        raise UserError("the selected suites hold no cases")
    check_cases(cases)
    return cases


def select_targets(args: argparse.Namespace) -> list[Any]:
    """The workers to evaluate: a pool file's, or one per shipped reference model."""
    from rolepool.evals.runner import Target

    if args.pool:
        from rolepool.pools.config import build_pool, load_pool_config

        config = load_pool_config(args.pool)  # cheap check before any model loads
        names = _wanted(args.workers, list(config.workers), f"pool {args.pool}")
        pool = build_pool(config)
        return _variants([Target(name, pool.workers[name]) for name in names], args)
    from rolepool.pools.transformers_worker import TransformersWorker
    from rolepool.zoo import list_checkpoints

    shipped = [c["name"] for c in list_checkpoints()]
    if not shipped:
        raise ConfigError("no shipped reference models found; pass --pool FILE", where="eval")
    names = _wanted(args.workers, shipped, "the shipped reference models")
    targets = [Target(name, TransformersWorker(name, name=name)) for name in names]
    return _variants(targets, args)


def _variants(targets: list[Any], args: argparse.Namespace) -> list[Any]:
    """Each worker once per `--decoding` mode, named `WORKER+MODE` unless free."""
    from rolepool.evals.decoding import parse_decodings, variant
    from rolepool.evals.runner import Target

    modes = parse_decodings(getattr(args, "decoding", None))
    return [Target(variant(t.name, m), t.worker, m) for m in modes for t in targets]


def _wanted(option: str | None, available: list[str], where: str) -> list[str]:
    if not option:
        return available
    names = [n.strip() for n in option.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise UserError(
            f"--workers: no worker {', '.join(unknown) or '(empty)'} in {where} "
            f"(available: {', '.join(available)})"
        )
    return list(dict.fromkeys(names))


def replay_lines(cases: list[Case], path: str) -> tuple[list[ResultLine], int]:
    """Score a replay file's records; returns the result lines and how many cases had none."""
    from rolepool.evals.replay import load_replay, prediction_from_replay
    from rolepool.evals.runner import Target, result_line

    records = load_replay(path)
    name = Path(path).stem or "replay"
    lines, missing = [], 0
    for case in cases:
        found = records.get(case.id) if case.multi_turn is None else None  # needs the loop
        if not found:
            missing += 1
            continue
        if len(found) > 1:
            raise UserError(f"replay file {path}: id {case.id!r} appears {len(found)} times")
        prediction = prediction_from_replay(case, found[0])
        lines.append(result_line(case, Target(name, None), prediction, architecture="unknown"))
    if not lines:
        ids = ", ".join(list(records)[:3])
        raise UserError(
            f"replay file {path}: none of its ids ({ids}, ...) is a case of the selected suites"
        )
    return lines, missing


def cmd_eval(args: argparse.Namespace, out: Any) -> int:
    from rolepool.evals.report import terminal_report, write_reports
    from rolepool.evals.results import ResultsFile
    from rolepool.evals.summary import build_summary

    if args.replay and (args.pool or args.workers or args.decoding):
        raise UserError("--replay scores a file without models: drop --pool/--workers/--decoding")
    if args.concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {args.concurrency}")
    _quiet_transformers()
    cases = load_cases(args)
    # Whatever can be refused is refused before --out is made: a failed command leaves no
    # directory behind.
    if args.replay:
        lines, missing = replay_lines(cases, args.replay)
    else:
        targets = select_targets(args)
    outdir = Path(args.out)
    with ResultsFile(outdir) as results:
        if results.repaired:
            out.print(
                f"[yellow]kept aside a torn last line ({results.repaired} bytes) of "
                f"{results.path} in results.torn; that case runs again[/]"
            )
        if args.replay:
            done = results.done()
            for line in lines:
                if line.key not in done:
                    results.append(line)
            if missing:
                out.print(
                    f"[yellow]{missing} of {len(cases)} cases have no record in "
                    f"{args.replay}: not scored[/]"
                )
            names = {lines[0].worker}
        else:
            names = {t.name for t in targets}
            if _run_models(cases, targets, results, outdir, args, out) != 0:
                return 130
        keys = {(c.suite, c.id) for c in cases}
        chosen = [r for r in results.latest() if r.worker in names and r.case_key in keys]
    summary = build_summary(chosen, suites=sorted({c.suite for c in cases}))
    paths = write_reports(outdir, summary, chosen)
    out.print(terminal_report(summary, {"results": outdir / "results.jsonl", **paths}))
    return 0


def _quiet_transformers() -> None:
    """Our progress bar is the one to watch: hide transformers' per-model loading bars."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _run_models(cases, targets, results, outdir: Path, args, out) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from rolepool.evals.runner import run_eval
    from rolepool.runtime import EventStore

    done = results.done()
    if done:
        out.print(f"resuming: {len(done)} results already in {results.path}")
    store = EventStore(outdir / "events.db")
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        bars = {
            t.name: progress.add_task(
                t.name,
                total=len(cases),
                completed=sum((c.suite, c.id, t.name) in done for c in cases),
            )
            for t in targets
        }

        counts: list[Any] = []

        async def main() -> None:
            try:
                counts.append(
                    await run_eval(
                        cases,
                        targets,
                        results,
                        store=store,
                        concurrency=args.concurrency,
                        on_result=lambda line: progress.advance(bars[line.worker]),
                    )
                )
            finally:
                with anyio.CancelScope(shield=True):
                    for t in targets:
                        close = getattr(t.worker, "aclose", None)
                        if close is not None:
                            await close()

        try:
            anyio.run(main)
        except KeyboardInterrupt:
            progress.stop()
            out.print(
                f"[yellow]interrupted: {len(results.records)} results are safe in "
                f"{results.path}; run the same command again to resume[/]"
            )
            return 130
        finally:
            store.close()
    refused = counts[0].refused if counts else []
    if refused:
        out.print(
            f"[yellow]{len(refused)} cases did not fit their model (e.g. a prompt over its "
            f"context): scored as failures, not retried. First: {refused[0]}[/]",
            highlight=False,
        )
    failed = counts[0].worker_errors if counts else []
    if failed:
        out.print(
            f"[yellow]{len(failed)} cases failed in their worker: scored as failures, and "
            f"retried when the same command runs again. First: {failed[0]}[/]",
            highlight=False,
        )
    return 0
