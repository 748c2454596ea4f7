"""The `rolepool` command. Thin: it parses arguments and calls the packages.

Bad input (unknown run id, unreadable store, an option out of range: see `rolepool.cli_args`) is
one clear message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rolepool import __version__
from rolepool.agents.run_cli import add_run_command
from rolepool.cli_args import InputFile, OneLineParser, OutputFile, Seconds, count
from rolepool.core import ConfigError, RolepoolError, UserError
from rolepool.evals.cli import add_eval_command
from rolepool.evals.mcp_serve import add_mcp_command
from rolepool.pools.models_check import add_models_command
from rolepool.pools.serve_cli import add_serve_command
from rolepool.runtime.drift import parse_duration
from rolepool.runtime.store import EventStore, RunState, default_store_path
from rolepool.runtime.trace import render_tree
from rolepool.tools.builtin.docs_cli import add_docs_command
from rolepool.zoo.commands import add_zoo_commands

STORE = InputFile("event store")
DURATION = Seconds(parse_duration, most=100 * 365 * 86400.0, errors=(ConfigError,))
"""Beyond a century the window's dates overflow."""


def _store(args: argparse.Namespace) -> EventStore:
    path = Path(args.db) if args.db else default_store_path()
    if not path.exists():
        raise UserError(f"no event store at {path} (no run has been recorded there yet)")
    return EventStore(path)


def _when(ts: float | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def cmd_trace_list(args: argparse.Namespace, out: Console) -> int:
    with _store(args) as store:
        runs = store.runs(limit=args.limit, tenant=args.tenant)
    if args.json:
        import json

        for r in runs:
            out.print_json(json.dumps(r.__dict__), indent=None)
        return 0
    table = Table(title=f"runs in {args.db or default_store_path()}")
    table.add_column("run id", no_wrap=True)
    for col in ("started", "status", "duration", "agent", "events"):
        table.add_column(col, no_wrap=True)
    table.add_column("task", overflow="ellipsis", max_width=50)
    colour = {"finished": "green", "failed": "red", "running": "yellow", "interrupted": "magenta",
              "stalled": "red", "unknown": "dim"}  # fmt: skip
    for r in runs:
        took = f"{r.ended - r.started:.2f}s" if r.ended else ""
        table.add_row(
            r.run_id,
            _when(r.started),
            f"[{colour[r.status]}]{r.status}[/]",
            took,
            r.agent or "",
            str(r.events),
            r.task[:60],
        )
    out.print(table)
    return 0


def _run_events(args: argparse.Namespace) -> tuple[list, RunState]:
    with _store(args) as store:
        matches = store.find_run(args.run_id)
        if not matches:
            raise UserError(f"no run with id {args.run_id!r} in {store.path}")
        if len(matches) > 1:
            raise UserError(f"{args.run_id!r} matches {len(matches)} runs; give more of the id")
        return store.events(matches[0]), store.state(matches[0])


def cmd_trace_show(args: argparse.Namespace, out: Console) -> int:
    events, state = _run_events(args)
    if args.html:
        from rolepool.runtime.viewer import write_run_html

        out.print(str(write_run_html(events, args.html, state)), highlight=False, soft_wrap=True)
        return 0
    if args.json:
        for event in events:
            sys.stdout.write(event.model_dump_json() + "\n")
        return 0
    out.print(render_tree(events, state))
    return 0


def cmd_trace_open(args: argparse.Namespace, out: Console) -> int:
    from rolepool.runtime.viewer import open_run_html

    out.print(str(open_run_html(*_run_events(args))), highlight=False, soft_wrap=True)
    return 0


def cmd_trace_stats(args: argparse.Namespace, out: Console) -> int:
    import dataclasses
    import json

    from rolepool.runtime.drift import recent_stats, render_stats

    with _store(args) as store:  # checks the store exists
        path = store.path
    rows = recent_stats(path, args.since, args.window)
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(dataclasses.asdict(row)) + "\n")
    else:
        out.print(render_stats(rows) if rows else "no model calls in that range")
    return 1 if any(row.flags for row in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rolepool",
        description="Multi-agent runtime on pools of MoE and dense models: runs, traces, evals.",
    )
    parser.add_argument("--version", action="version", version=f"rolepool {__version__}")
    parser.add_argument(
        "--otel",
        action="store_true",
        help="export every run as OpenTelemetry spans (exporter from OTEL_TRACES_EXPORTER, "
        "OTEL_EXPORTER_OTLP_ENDPOINT, ...; OTLP needs the otel extra)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    trace = commands.add_parser("trace", help="inspect the runs recorded in the event store")
    trace_cmds = trace.add_subparsers(dest="trace_command", metavar="SUBCOMMAND", required=True)
    store_help = (
        "event store (default: $ROLEPOOL_EVENTS_DB, $ROLEPOOL_HOME/events.db or the user data dir)"
    )
    store = {"type": STORE, "help": store_help}

    listing = trace_cmds.add_parser("list", help="recent runs, newest first")
    listing.add_argument("--db", **store)
    listing.add_argument("--limit", type=count(), default=20, help="how many runs (default 20)")
    listing.add_argument("--json", action="store_true", help="one JSON object per run")
    listing.add_argument("--tenant", help="only the runs of this tenant")
    listing.set_defaults(handler=cmd_trace_list)

    show = trace_cmds.add_parser("show", help="a run as a tree of agents, model and tool calls")
    show.add_argument("run_id", help="the run id, or an unambiguous prefix of it")
    show.add_argument("--db", **store)
    show.add_argument("--json", action="store_true", help="print the raw events as JSON lines")
    show.add_argument(
        "--html", type=OutputFile(), metavar="FILE", help="write a self-contained HTML timeline"
    )
    show.set_defaults(handler=cmd_trace_show)

    opener = trace_cmds.add_parser("open", help="a run's HTML timeline, in the web browser")
    opener.add_argument("run_id", help="the run id, or an unambiguous prefix of it")
    opener.add_argument("--db", **store)
    opener.set_defaults(handler=cmd_trace_open)

    stats = trace_cmds.add_parser(
        "stats",
        help="invalid-call rate and MoE expert-load health per worker, role and window; "
        "exits 1 when a window is flagged (collapse or invalid-call jump)",
    )
    stats.add_argument(
        "--since", type=DURATION, default="1h", help="how far back, e.g. 30m, 6h, 2d (default 1h)"
    )
    stats.add_argument(
        "--window", type=DURATION, help="window length (default: a sixth of --since)"
    )
    stats.add_argument("--db", **store)
    stats.add_argument("--json", action="store_true", help="one JSON object per window")
    stats.set_defaults(handler=cmd_trace_stats)
    add_serve_command(commands)
    add_run_command(commands)
    add_docs_command(commands)
    add_zoo_commands(commands)
    add_eval_command(commands)
    add_mcp_command(commands)
    add_models_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad command line (its one line printed)
        return exc.code if isinstance(exc.code, int) else 2
    # Piped output is read by people in wide windows and by grep: do not fold it at 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=200)
    try:
        if args.otel:
            from rolepool.runtime.otel import enable_otel

            enable_otel()  # every run this command makes exports spans (OTEL_* env vars)
        return args.handler(args, out)
    except RolepoolError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
