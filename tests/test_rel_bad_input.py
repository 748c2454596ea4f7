"""SECURITY.md, promise 5: bad user input (pool.toml, command-line arguments) is one clear message
naming the problem and where, exit code 2, no traceback.

tests/test_pool_config.py pins the exact wording for the documented cases. Here: every malformed
file through the real command (`rolepool serve --pool FILE`), hostile files (binary, empty, huge,
a directory, non-finite numbers), a fuzzer that mutates the shipped example, and the command
line's own argument errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rolepool.cli import main
from rolepool.core import ConfigError
from rolepool.pools.config import load_pool_config

pytestmark = pytest.mark.reliability
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "pools" / "pool.toml"

VALID = """
[workers.a]
backend = "openai"
url = "http://127.0.0.1:9/v1"
model = "m"

[policy]
version = "1"
[policy.default]
choices = [{ worker = "a" }]
"""
TWO_WORKERS = """[workers.b]
backend = "openai"
url = "http://127.0.0.1:9/v1"
model = "m"

[policy]"""


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of `rolepool ARGV`, run in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_clear_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    return err


POOL_FILES = {
    "not-toml": ("[workers.a\nbackend = ", "line 1"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not UTF-8 text"),
    "empty": ("", "workers"),
    "only-comments": ("# nothing here\n", "workers"),
    "workers-is-a-number": ("workers = 5\n" + VALID.split("[policy]")[1], "workers"),
    "worker-is-a-string": ('workers = { a = "gpu" }\n[policy]\nversion = "1"\n', "workers.a"),
    "weight-is-text": (
        VALID.replace('worker = "a" }', 'worker = "a", weight = "heavy" }'),
        "weight",
    ),
    "weight-is-inf": (
        VALID.replace("[policy]", TWO_WORKERS).replace(
            'worker = "a" }', 'worker = "a", weight = inf }, { worker = "b" }'
        ),
        "policy.default.choices[0].weight: must be a finite number",
    ),
    "weight-is-nan": (VALID.replace('worker = "a" }', 'worker = "a", weight = nan }'), "weight"),
    "timeout-is-nan": ("request_timeout = nan\n" + VALID, "request_timeout"),
    "concurrency-zero": (
        VALID.replace('model = "m"', 'model = "m"\nmax_concurrency = 0'),
        "max_concurrency",
    ),
    "bad-worker-name": (VALID.replace("[workers.a]", '[workers."a b/../c"]'), "worker name"),
    "routes-is-a-list": (VALID + "[[policy.routes]]\nx = 1\n", "policy.routes"),
    "url-with-credentials-missing-scheme": (
        VALID.replace("http://127.0.0.1:9/v1", "127.0.0.1:9"),
        "url",
    ),
    "duplicate-key": (VALID.replace('model = "m"', 'model = "m"\nmodel = "n"'), "line"),
    "deep-nesting": ("x = " + "[" * 2000 + "]" * 2000 + "\n" + VALID, ""),
    "missing-model-dir": (
        '[workers.a]\nbackend = "transformers"\nmodel = "./no/such/model"\n'
        + VALID.split('model = "m"\n')[1],
        "workers.a",
    ),
}


@pytest.mark.parametrize("name", sorted(POOL_FILES))
def test_a_malformed_pool_file_is_one_clear_error(name, tmp_path, capsys):
    text, names = POOL_FILES[name]
    path = tmp_path / "pool.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = cli(["serve", "--pool", str(path), "--port", "0"], capsys)
    assert code == 2, err
    message = one_clear_error(err)
    assert str(path) in message.replace("\n", "")  # says which file ...
    assert names in message  # ... and which key or line


def test_pool_file_that_is_a_directory_or_missing(tmp_path, capsys):
    for path, problem in [(tmp_path, "cannot read"), (tmp_path / "nope.toml", "no such file")]:
        code, err = cli(["serve", "--pool", str(path)], capsys)
        assert code == 2 and problem in one_clear_error(err)


def test_a_huge_pool_file_is_refused_quickly(tmp_path, capsys):
    path = tmp_path / "pool.toml"
    path.write_text(VALID + "".join(f"[workers.w{i}]\nbackend = 'x'\n" for i in range(20_000)))
    code, err = cli(["serve", "--pool", str(path)], capsys)
    assert code == 2 and str(path) in err and "20000 problems" in err
    assert len(err) < 5_000  # the first problems and a count, not a megabyte of them


MUTATIONS = st.sampled_from(
    [
        "",
        "=",
        "[",
        "]",
        "{",
        "}",
        '"',
        "'",
        "\n",
        " = 1",
        " = inf",
        " = nan",
        " = -1",
        " = 1e999",
        " = true",
        " = []",
        " = {}",
        "[workers.x]",
        "[policy]",
        "[[policy.routes]]",
        "backend",
        "\\u0000",
        "\x00",
        "\ud800",
        "é",
        "# ",
        "0x",
        "1979-05-27T07:32:00Z",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_pool_files_load_or_fail_with_a_config_error_only(data):
    text = EXAMPLE.read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 12))
        text = text[:at] + data.draw(MUTATIONS) + text[at + cut :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            load_pool_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path))


CLI_ERRORS = [
    (["serve", "--port", "70000"], "--port: must be at most 65535"),
    (["serve", "--port", "-1"], "--port: must be at least 0"),
    (["serve", "--port", "eighty"], "invalid int value"),
    (["serve", "--pool", __file__, "--model", "m"], "not both"),
    (["serve", "--log-level", "loud"], "invalid choice"),
    (["serve", "--bogus"], "unrecognized arguments"),
    (["serve", "--model", "/no/such/model/dir"], "/no/such/model/dir"),
    (["nosuchcommand"], "invalid choice"),
    (["trace"], "required"),
    (["trace", "show"], "required"),
    (["trace", "list", "--limit", "many"], "invalid int value"),
    (["trace", "list", "--db", "{tmp}/none.db"], "no event store"),
    (["trace", "list", "--db", "{garbage}"], "event store"),
    (["trace", "list", "--db", "{tmp}"], "event store"),
    (["trace", "show", "run_nope", "--db", "{db}"], "no run with id"),
    (["trace", "stats", "--since", "yesterday", "--db", "{db}"], "yesterday"),
    (["trace", "stats", "--since=-5m", "--db", "{db}"], "-5m"),
    (["trace", "stats", "--since", "1h", "--window", "0s", "--db", "{db}"], "0s"),
    (["docs", "add", "{tmp}/missing-docs"], "missing-docs"),
    (["zoo", "train", "--arch", "transformer"], "invalid choice"),
]


@pytest.mark.parametrize("argv,expected", CLI_ERRORS, ids=[" ".join(a) for a, _ in CLI_ERRORS])
def test_bad_command_lines_are_one_clear_error_with_exit_code_2(argv, expected, tmp_path, capsys):
    from rolepool.runtime import EventStore

    db = tmp_path / "events.db"
    EventStore(db).close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    argv = [a.format(tmp=tmp_path, db=db, garbage=garbage) for a in argv]
    code, err = cli(argv, capsys)
    assert code == 2, err
    assert expected in one_clear_error(err)


def test_the_console_script_prints_no_traceback(tmp_path):
    """The same through a real process: the message on stderr, nothing on stdout, exit 2."""
    bad = tmp_path / "pool.toml"
    bad.write_text(VALID.replace('worker = "a" }', 'worker = "b" }'))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "rolepool.cli", "serve", "--pool", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "no worker named 'b'" in proc.stderr


def test_an_infinite_weight_is_refused_when_the_pool_is_built_from_python():
    from rolepool import FunctionWorker
    from rolepool.pools.policy import RoutingPolicy
    from rolepool.pools.pool import Pool

    split = {"choices": [{"worker": "a", "weight": float("inf")}, {"worker": "b"}]}
    policy = RoutingPolicy.from_dict({"version": "1", "routes": {"coder": split}})
    workers = {name: FunctionWorker(lambda r: "x", name=name) for name in ("a", "b")}
    with pytest.raises(ConfigError, match=r"policy\.routes\.coder\.choices\[0\]\.weight: must be"):
        Pool(workers, policy)
    fine = Pool(
        workers,
        RoutingPolicy.from_dict({"version": "0", "default": {"choices": [{"worker": "a"}]}}),
    )
    with pytest.raises(ConfigError, match="finite"):
        fine.set_policy(policy)
    assert fine.policy.version == "0"
