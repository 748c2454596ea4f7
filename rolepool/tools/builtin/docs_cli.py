"""`rolepool docs`: build and query the document collection the search role uses.

Kept beside the collection rather than in `rolepool/cli.py`, which only registers it. `search` and
`list` on the default collection see exactly what an agent sees, sample docs included; `add` to an
empty default collection does not seed it, so a collection of your own starts with your files only.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rolepool.cli_args import InputPath, Int, OutputFile
from rolepool.tools.builtin.docs import DocumentCollection, default_collection

# Above this many files `add` prints progress, so a big directory is visibly working.
_PROGRESS_FROM = 20


def add_docs_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `docs` (add, search, list) on the `rolepool` command's subparsers."""
    parser = subparsers.add_parser(
        "docs",
        help="index and search the local document collection (search_docs, read_doc)",
        description="The document collection the search role's tools use: SQLite FTS5 with "
        "BM25 ranking. An empty default collection is seeded with the shipped sample docs.",
    )
    commands = parser.add_subparsers(dest="docs_command", metavar="SUBCOMMAND", required=True)
    db_help = (
        "collection database "
        "(default: $ROLEPOOL_DOCS_DB, $ROLEPOOL_HOME/docs.db or the user data dir)"
    )

    add = commands.add_parser("add", help="index text and Markdown files (directories recursively)")
    add.add_argument(
        "paths", nargs="+", type=InputPath(), metavar="PATH", help="files or directories"
    )
    add.add_argument("--db", type=OutputFile(), help=db_help)
    add.set_defaults(handler=cmd_docs_add)

    search = commands.add_parser("search", help="the best documents for a query (BM25)")
    search.add_argument("query", help="free text; operators are taken as plain words")
    search.add_argument("--top-k", type=Int(1, 100), default=5, help="how many results (default 5)")
    search.add_argument("--db", type=OutputFile(), help=db_help)
    search.set_defaults(handler=cmd_docs_search)

    listing = commands.add_parser("list", help="every document in the collection")
    listing.add_argument("--db", type=OutputFile(), help=db_help)
    listing.set_defaults(handler=cmd_docs_list)
    return parser


def _open(args: argparse.Namespace, *, seed: bool) -> DocumentCollection:
    """The `--db` collection as it is, or the default one (seeded like the agents' when asked)."""
    if args.db:
        return DocumentCollection(Path(args.db))
    return default_collection() if seed else DocumentCollection()


def cmd_docs_add(args: argparse.Namespace, out: Console) -> int:
    """Index the paths; exit 1 when some files were skipped (each is named on stderr)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)  # paths must stay greppable

    def progress(number: int, total: int, path: Path) -> None:
        if total >= _PROGRESS_FROM and (number % max(1, total // 10) == 0 or number == total):
            err.print(f"  indexed {number}/{total} files", highlight=False)

    with _open(args, seed=False) as collection:
        result = collection.add(args.paths, progress=progress)
        where = collection.path
    for problem in result.errors:
        err.print(f"[yellow]skipped[/] {escape(str(problem))}")
    out.print(
        f"{result.added} added, {result.updated} updated, {result.unchanged} unchanged, "
        f"{len(result.errors)} skipped in {escape(str(where))}",
        highlight=False,
    )
    return 1 if result.errors else 0


def cmd_docs_search(args: argparse.Namespace, out: Console) -> int:
    with _open(args, seed=True) as collection:
        hits = collection.search(args.query, args.top_k)
    if not hits:
        out.print("No results.")
        return 0
    for rank, hit in enumerate(hits, 1):
        out.print(
            f"{rank}. [bold]{escape(hit.doc_id)}[/]  {escape(hit.title)}  "
            f"[dim](score {hit.score:.2f})[/]",
            highlight=False,
        )
        out.print(f"   {escape(hit.snippet)}", highlight=False)
    return 0


def cmd_docs_list(args: argparse.Namespace, out: Console) -> int:
    with _open(args, seed=True) as collection:
        docs = collection.documents()
        where = collection.path
    table = Table(title=escape(f"{len(docs)} documents in {where}"))
    for column in ("doc id", "title", "chars", "added"):
        table.add_column(column, no_wrap=column != "title")
    table.add_column("source", overflow="fold")
    for doc in docs:
        added = dt.datetime.fromtimestamp(doc.added).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            escape(doc.doc_id), escape(doc.title), str(doc.chars), added, escape(doc.source)
        )
    out.print(table)
    return 0
