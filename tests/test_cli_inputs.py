"""Every option of the `rolepool` command, found by walking its argparse parser, at the edges of
its kind: each bad value is exit code 2 and one line on stderr naming the option, no traceback,
before any work starts (SECURITY.md, bad user input).

A new option is covered without touching this file: it must have a type from
`rolepool.cli_args` (whose `kind` says which edges to try), a fixed set of choices, or an entry in
`FREE_TEXT` saying why its text is not checked here. Values an option legitimately takes are in
`ACCEPTED`, each with the reason.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rolepool.cli as cli
from rolepool.cli import build_parser, main
from rolepool.cli_args import SEED_MAX

RAN = 99  # what a command "returns" in these tests when its arguments were accepted

Option = tuple[str, ...]
"""The subcommand's words, then the option's name: ("trace", "list", "--limit")."""

FREE_TEXT: dict[Option, str] = {
    ("run", "task"): "free text; an empty task is refused when the command runs",
    ("run", "--approve"): "tool names; '' means none need approval (documented in --help)",
    ("run", "--resume"): "a run id or a prefix of one, looked up in the store",
    ("trace", "list", "--tenant"): "a tenant's name; an unknown one lists no runs",
    ("trace", "show", "run_id"): "a run id or a prefix of one, looked up in the store",
    ("trace", "open", "run_id"): "a run id or a prefix of one, looked up in the store",
    ("docs", "search", "query"): "free text; a query with no words is refused when searching",
    ("serve", "--host"): "an address; binding reports one that cannot be bound",
    ("serve", "--api-key-env"): "the name of an environment variable",
    ("serve", "--model"): "a shipped model's name or a model directory; loading names a bad one",
    ("mcp", "serve", "--host"): "an address, as serve --host",
    ("mcp", "serve", "--token-env"): "the name of an environment variable; unset is refused",
    ("mcp", "serve", "--approve"): "tool names, as run --approve",
}

ACCEPTED: dict[tuple[Option, str], str] = {
    (("serve", "--port"), "0"): "port 0 binds any free port",
    (("zoo", "train", "--seed"), "0"): "0 is a seed like any other",
    (("zoo", "train", "--upcycle-steps"), "0"): "0 starts the MoE from random weights",
    (("zoo", "eval", "--show-errors"), "0"): "show no errors (the default)",
    (("run", "--workspace"), "{tmp}/missing/x"): "made with its parents (mkdir -p)",
    (("eval", "--out"), "{tmp}/missing/x"): "made with its parents, as README's --out runs/quick",
    (("zoo", "train", "--out"), "{tmp}/missing/x"): "made with its parents (mkdir -p)",
    (("mcp", "serve", "--out"), "{tmp}/missing/x"): "made with its parents by run_eval",
    (("docs", "add", "PATH"), "{dir}"): "a directory is indexed recursively",
    (("docs", "add", "PATH"), "{latin1}"): "a file that is not UTF-8 is skipped and named (exit 1)",
}

FILL: dict[Option, str] = {
    ("run", "task"): "go",
    ("trace", "show", "run_id"): "run_x",
    ("trace", "open", "run_id"): "run_x",
    ("docs", "search", "query"): "experts",
    ("docs", "add", "PATH"): "{text}",
    ("zoo", "train", "--arch"): "moe",
    ("zoo", "train", "--out"): "{tmp}/model",
    ("zoo", "eval", "model_dir"): "{dir}",
}
"""A good value for every required option (and an optional task), so that only the option under
test can be wrong."""

HUGE = "9" * 5000
EDGES: dict[str, list[tuple[str, str]]] = {
    "int": [("zero", "0"), ("minus-one", "-1"), ("above-64-bits", str(2**64)),
            ("huge", HUGE), ("1e309", "1e309"), ("nan", "nan"), ("empty", "")],
    "float": [("zero", "0"), ("minus-one", "-1"), ("huge", "1e300"), ("1e309", "1e309"),
              ("inf", "inf"), ("nan", "nan"), ("huge-digits", HUGE), ("empty", "")],
    "duration": [("zero", "0"), ("minus-one", "-1m"), ("1e309", "1e309"), ("nan", "nan"),
                 ("huge", HUGE + "d"), ("empty", "")],
    "names": [("empty", ""), ("only-commas", " , ,")],
}  # fmt: skip
"""Text every option of a kind must refuse, unless `ACCEPTED` says otherwise."""
PLACES = [("missing-parent", "{tmp}/missing/x"), ("under-a-file", "/etc/hostname/x"),
          ("in-proc", "/proc/x"), ("empty", "")]  # fmt: skip
"""Paths no option can use: a place no file can be read from or made in."""
PATH_EDGES = {
    "input-file": [*PLACES, ("directory", "{dir}")],
    "input-dir": [*PLACES, ("file", "{text}")],
    "input-path": [*PLACES, ("directory", "{dir}")],
    "output-file": [*PLACES, ("directory", "{dir}")],
    "output-dir": [*PLACES, ("file", "{text}")],
}


def parsers(
    parser: argparse.ArgumentParser, words: Option = ()
) -> Iterator[tuple[Option, argparse.ArgumentParser]]:
    """Every parser of the command (the top one, each subcommand's), with the words to it."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*words, name))


def option_name(action: argparse.Action) -> str:
    """The name argparse gives an option in its errors: `--limit`, or a positional's metavar."""
    return "/".join(action.option_strings) or action.metavar or action.dest


def options() -> dict[Option, argparse.Action]:
    """Every option of every subcommand that takes a value (flags and subcommands left out)."""
    found = {}
    for words, parser in parsers(build_parser()):
        for action in parser._actions:
            if action.nargs == 0 or isinstance(action, argparse._SubParsersAction):
                continue
            found[(*words, option_name(action))] = action
    return found


OPTIONS = options()


def _edges(action: argparse.Action) -> list[tuple[str, str]]:
    kind = getattr(action.type, "kind", None) or {int: "int", float: "float"}.get(action.type)
    edges = list(EDGES.get(kind, PATH_EDGES.get(kind, [])))
    file_type = getattr(action.type, "file", action.type)  # a name-or-file option's file part
    if getattr(file_type, "utf8", False) or kind == "input-path":  # --db: see the test below
        edges.append(("not-utf8", "{latin1}"))
    return edges


CASES = [(option, label, value) for option, action in OPTIONS.items()
         for label, value in _edges(action)]  # fmt: skip
REFUSED = [case for case in CASES if (case[0], case[2]) not in ACCEPTED]


@pytest.fixture
def parse_only(monkeypatch):
    """`main` as it is, but every command's handler replaced: nothing runs, whatever is
    accepted."""
    real = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = real()
        for _, sub in parsers(parser):
            sub.set_defaults(handler=lambda args, out: RAN)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)


@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    (tmp_path / "dir").mkdir()
    (tmp_path / "text.txt").write_text("plain text\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    return {
        "tmp": str(tmp_path),
        "dir": str(tmp_path / "dir"),
        "text": str(tmp_path / "text.txt"),
        "latin1": str(tmp_path / "latin1.txt"),
    }


def argv(option: Option, value: str, places: dict[str, str]) -> list[str]:
    """The words of `option`'s subcommand, every other required option filled, then `option`
    set to `value` ({dir} and the like filled from `places`)."""
    words = option[:-1]
    line = list(words)
    for other, action in OPTIONS.items():
        if other[:-1] == words and other != option and (action.required or other in FILL):
            line += (
                [action.option_strings[0], FILL[other]] if action.option_strings else [FILL[other]]
            )
    flag = OPTIONS[option].option_strings
    return [word.format(**places) for word in (*line, *flag[:1], value)]


@pytest.mark.parametrize(("option", "label", "value"), REFUSED,
                         ids=[f"{' '.join(o)} {label}" for o, label, _ in REFUSED])  # fmt: skip
def test_every_option_refuses_its_edges_in_one_line(
    option, label, value, places, parse_only, capsys
):
    code = main(argv(option, value, places))
    err = capsys.readouterr().err
    assert code == 2, f"accepted: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: argument {option[-1]}: "), err


ACCEPTED_CASES = [case for case in CASES if (case[0], case[2]) in ACCEPTED]


@pytest.mark.parametrize(("option", "label", "value"), ACCEPTED_CASES,
                         ids=[f"{' '.join(o)} {label}" for o, label, _ in ACCEPTED_CASES])  # fmt: skip
def test_the_edges_an_option_takes_on_purpose_are_accepted(
    option, label, value, places, parse_only, capsys
):
    assert main(argv(option, value, places)) == RAN, capsys.readouterr().err


def test_every_option_is_checked_or_says_why_not():
    unchecked = [
        " ".join(option)
        for option, action in OPTIONS.items()
        if not hasattr(action.type, "kind") and not action.choices and option not in FREE_TEXT
    ]
    assert unchecked == [], "give these a type from rolepool.cli_args, or list them in FREE_TEXT"
    assert set(FREE_TEXT) <= set(OPTIONS), "FREE_TEXT names options the command no longer has"
    assert {option for option, _ in ACCEPTED} <= set(OPTIONS)
    assert len(ACCEPTED_CASES) == len(ACCEPTED), "an ACCEPTED value that no edge tries"


def test_the_walk_finds_the_options_the_red_team_found():
    """The issue's samples (issue 28, findings 7 and 8), so the walk cannot quietly find less."""
    assert {
        ("trace", "list", "--limit"),
        ("trace", "show", "--html"),
        ("run", "--workspace"),
        ("run", "--deadline"),
        ("run", "--concurrency"),
        ("eval", "--replay"),
        ("eval", "--workers"),
        ("eval", "--out"),
        ("zoo", "train", "--seed"),
        ("zoo", "train", "--out"),
        ("zoo", "eval", "model_dir"),
        ("docs", "add", "PATH"),
    } <= set(OPTIONS)
    assert len(REFUSED) > 150


def test_the_largest_64_bit_seed_is_taken(tmp_path, parse_only):
    out = str(tmp_path / "m")
    assert main(["zoo", "train", "--arch", "moe", "--out", out, "--seed", str(SEED_MAX)]) == RAN


def test_checking_an_output_place_leaves_nothing_behind(tmp_path, parse_only):
    """Whether a file can be made is found out by making one: it is removed again."""
    out = tmp_path / "new-dir"
    assert main(["eval", "--out", str(out)]) == RAN
    assert main(["trace", "show", "run_x", "--html", str(tmp_path / "t.html")]) == RAN
    assert list(tmp_path.iterdir()) == [] and not out.exists()


DB_OPTIONS = [option for option in OPTIONS if option[-1] == "--db"]


def _must_not_run(*args: object) -> None:
    raise AssertionError("the command went on to load models")


@pytest.mark.parametrize("option", DB_OPTIONS, ids=[" ".join(o) for o in DB_OPTIONS])
def test_a_db_that_is_not_a_database_is_one_line(option, places, monkeypatch, capsys):
    """Any bytes pass the parser (a store is binary, and --db of run and docs is made when
    missing); opening the file refuses it, before any work. The command runs for real."""
    from rolepool.agents import run_cli

    monkeypatch.setattr(run_cli, "_pool", _must_not_run)
    garbage = Path(places["tmp"]) / "garbage.db"
    garbage.write_bytes(bytes(range(256)) * 16)
    assert main(argv(option, str(garbage), places)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "not a database" in err


def _write_suite(path: Path) -> Path:
    case = {"id": "n1", "category": "no_call", "role": "search", "prompt": "Tell me a joke.",
            "tools": [], "expected": "no call"}  # fmt: skip
    path.write_text(json.dumps(case) + "\n")
    return path


@pytest.mark.parametrize(
    "extra",
    [
        ["--workers", "no-such-worker"],
        ["--suite", "{suite}", "--replay", "{replay}"],
    ],
    ids=["unknown-worker", "replay-matching-no-case"],
)
def test_a_failed_eval_leaves_no_out_directory(extra, tmp_path, capsys):
    """Refused after parsing (the command runs, fast): --out must not be there afterwards."""
    suite = _write_suite(tmp_path / "suite.jsonl")
    replay = tmp_path / "replay.jsonl"
    replay.write_text('{"id": "zzz", "text": "hi"}\n')
    out = tmp_path / "out"
    filled = [a.format(suite=suite, replay=replay) for a in extra]
    assert main(["eval", "--out", str(out), *filled]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_console_script_exits_2_with_one_line():
    """The red team's first sample, through a real process."""
    proc = subprocess.run(
        [sys.executable, "-m", "rolepool.cli", "trace", "list", "--limit", "9" * 20],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: argument --limit: must be at most ")
    assert len(proc.stderr.splitlines()) == 1
