"""`rolepool eval` from the command line: replay scoring, the shipped models, and bad input as one
clear message with exit code 2."""

from __future__ import annotations

import argparse
import json

import pytest

from rolepool.cli import main

WEATHER = {
    "name": "get_weather",
    "description": "Weather forecast.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
CASES = [
    {
        "id": "w1",
        "category": "single",
        "role": "search",
        "prompt": "Weather in Paris?",
        "tools": [WEATHER],
        "expected": [{"name": "get_weather", "arguments": {"city": ["Paris"]}}],
    },
    {
        "id": "w2",
        "category": "single",
        "role": "search",
        "prompt": "Weather in Oslo for 3 days?",
        "tools": [WEATHER],
        "expected": [{"name": "get_weather", "arguments": {"city": ["Oslo"], "days": [3]}}],
    },
    {
        "id": "n1",
        "category": "no_call",
        "role": "search",
        "prompt": "Tell me a joke.",
        "tools": [WEATHER],
        "expected": "no call",
    },
]
REPLAY = [
    {"id": "w1", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"id": "w2", "text": '{"name": "get_weather", "arguments": {"city": "Oslo", "days": "3"}}'},
    {"id": "n1", "text": "No tool for jokes, sorry. <script>alert(1)</script>"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def suite(tmp_path):
    return write_jsonl(tmp_path / "weather.jsonl", CASES)


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err
    assert lines and lines[0].startswith("error:"), err
    return err


def test_replay_is_scored_without_a_model(tmp_path, suite, capsys):
    replay = write_jsonl(tmp_path / "gpt-x.jsonl", REPLAY)
    out = tmp_path / "out"
    assert main(["eval", "--suite", str(suite), "--replay", str(replay), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    w = summary["workers"]["gpt-x"]
    assert w["architecture"] == "unknown" and w["overall"]["n"] == 3
    assert w["overall"]["exact_acc"]["k"] == 2  # "3" is not an integer: w2 fails its schema
    assert w["overall"]["schema_valid"]["rate"] == 0.5
    assert w["by_role"]["search"]["no_call_acc"]["rate"] == 1.0
    stdout = capsys.readouterr().out
    assert "gpt-x" in stdout and str(out / "report.html") in stdout
    assert (out / "report.md").exists() and (out / "accuracy_by_role.png").exists()
    # replaying again adds nothing
    assert main(["eval", "--suite", str(suite), "--replay", str(replay), "--out", str(out)]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 3


def test_malformed_suite_line_is_one_message(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(CASES[0]) + '\n{"id": "x", "category": 3\n')
    code = main(["eval", "--suite", str(bad), "--replay", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2
    assert f"{bad}:2" in one_error(capsys)


def test_malformed_replay_line_is_one_message(tmp_path, suite, capsys):
    replay = tmp_path / "r.jsonl"
    replay.write_text(json.dumps(REPLAY[0]) + "\n" + '{"id": "w2", "txt": "x"}\n')
    code = main(
        ["eval", "--suite", str(suite), "--replay", str(replay), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert f"{replay}:2" in one_error(capsys)


def test_replay_that_matches_no_case(tmp_path, suite, capsys):
    replay = write_jsonl(tmp_path / "r.jsonl", [{"id": "zzz", "text": "hi"}])
    assert (
        main(["eval", "--suite", str(suite), "--replay", str(replay), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "none of its ids" in one_error(capsys)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--suite", "no-such-suite"], "unknown suite"),
        (["--workers", "dense-s9"], "no worker dense-s9"),
        (["--replay", __file__, "--workers", "dense-s1"], "drop --pool/--workers"),
        (["--limit", "0"], "--limit: must be at least 1"),
        (["--pool", "missing.toml"], "missing.toml"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, argv, needle):
    assert main(["eval", "--out", str(tmp_path / "o"), *argv]) == 2
    assert needle in one_error(capsys)


def test_a_results_file_that_is_not_ours(tmp_path, suite, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.jsonl").write_text("hello\n")
    replay = write_jsonl(tmp_path / "r.jsonl", REPLAY)
    assert main(["eval", "--suite", str(suite), "--replay", str(replay), "--out", str(out)]) == 2
    assert "results.jsonl:1" in one_error(capsys)


def test_defaults_are_the_roles_suite_on_every_shipped_model():
    from rolepool.evals.cli import select_targets
    from rolepool.zoo import list_checkpoints

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    from rolepool.evals.cli import add_eval_command

    add_eval_command(commands)
    args = parser.parse_args(["eval"])
    assert args.suite == [] and args.out == "rolepool-eval" and args.replay is None
    names = [t.name for t in select_targets(args)]
    assert names == [c["name"] for c in list_checkpoints()]
    assert {"dense-s1", "dense-s2", "moe-s1", "moe-s2"} <= set(names)


@pytest.mark.slow  # loads the shipped checkpoints
def test_shipped_models_end_to_end(tmp_path, capsys, isolated_store):
    out = tmp_path / "out"
    assert main(["eval", "--workers", "dense-s1,moe-s1", "--limit", "6", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["workers"]) == {"dense-s1", "moe-s1"}
    assert summary["workers"]["moe-s1"]["architecture"] == "moe"
    assert summary["workers"]["moe-s1"]["expert_health"]["by_role"]
    assert summary["workers"]["dense-s1"]["expert_health"] is None
    assert set(summary["architectures"]) == {"dense", "moe"}
    assert summary["workers"]["dense-s1"]["overall"]["n"] == 6
    assert summary["workers"]["dense-s1"]["overall"]["json_valid"]["rate"] > 0.5
    arch = [c for c in summary["comparisons"] if c["kind"] == "architectures"]
    assert arch and all(c["verdict"] == "cannot tell" for c in arch)
    assert (out / "events.db").exists() and not isolated_store.exists()
    assert (out / "expert_load_moe-s1.png").exists()
    stdout = capsys.readouterr().out
    assert "dense-s1" in stdout and "moe-s1" in stdout and "report.html" in stdout


def test_a_worker_that_is_down_is_reported_and_retried(tmp_path, suite, capsys):
    pool = tmp_path / "pool.toml"
    pool.write_text(
        '[workers.remote]\nbackend = "openai"\nurl = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
        'timeout = 2\n\n[policy]\nversion = "1"\n[policy.default]\n'
        'choices = [{ worker = "remote" }]\n'
    )
    out = tmp_path / "o"
    argv = ["eval", "--suite", str(suite), "--pool", str(pool), "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "3 cases failed in their worker" in stdout and "WorkerError" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"]["remote"]["overall"]["errors"] == 3
    assert summary["workers"]["remote"]["overall"]["exact_acc"]["k"] == 0
    assert main(argv) == 0  # the next run retries them (and appends, never rewrites)
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
