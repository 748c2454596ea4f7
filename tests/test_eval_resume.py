"""results.jsonl survives interruption: a torn last line is set aside, a kill -9 or Ctrl-C of a
real `rolepool eval` loses no finished line, and running the same command again resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rolepool.core import UserError
from rolepool.evals.result_line import ResultLine
from rolepool.evals.results import ResultsFile, load_results
from rolepool.evals.scoring import Scores


def line(i: int, worker: str = "w") -> ResultLine:
    return ResultLine(suite="s", case=f"c{i}", worker=worker, scores=Scores(exact=True))


def test_append_then_reopen_keeps_every_line(tmp_path):
    with ResultsFile(tmp_path) as results:
        for i in range(3):
            results.append(line(i))
    with ResultsFile(tmp_path) as results:
        assert results.done() == {("s", f"c{i}", "w") for i in range(3)}
        assert results.repaired == 0
    assert [r.case for r in load_results(tmp_path)] == ["c0", "c1", "c2"]


def test_torn_last_line_is_set_aside_and_the_file_cut_back(tmp_path):
    with ResultsFile(tmp_path) as results:
        results.append(line(0))
        results.append(line(1))
    path = tmp_path / "results.jsonl"
    good = path.read_bytes()
    with path.open("ab") as fh:
        fh.write(b'{"suite": "s", "case": "c2", "wor')  # a kill in the middle of a write
    with ResultsFile(tmp_path) as results:
        assert results.repaired == len(b'{"suite": "s", "case": "c2", "wor')
        assert len(results.records) == 2
        results.append(line(2))
    assert path.read_bytes() == good + (line(2).to_json() + "\n").encode()
    assert b'"case": "c2", "wor' in (tmp_path / "results.torn").read_bytes()


def test_a_corrupt_complete_line_is_an_error_naming_it(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(line(0).to_json() + "\nnot json\n" + line(1).to_json() + "\n")
    with pytest.raises(UserError, match=r"results\.jsonl:2: not a JSON line"):
        ResultsFile(tmp_path).open()
    path.write_text(json.dumps({"hello": 1}) + "\n")
    with pytest.raises(UserError, match=r"results\.jsonl:1: not an eval result"):
        ResultsFile(tmp_path).open()


def test_two_evals_cannot_share_a_directory(tmp_path):
    with ResultsFile(tmp_path):
        with pytest.raises(UserError, match="another rolepool eval is writing"):
            ResultsFile(tmp_path).open()
    with ResultsFile(tmp_path):  # released on close
        pass


# -- a real eval, interrupted ---------------------------------------------------------------------
LIMIT = 10


def eval_command(out: Path) -> list[str]:
    # One case at a time on one shipped model: slow enough to interrupt between lines.
    return [
        sys.executable,
        "-m",
        "rolepool.cli",
        "eval",
        "--workers",
        "dense-s1",
        "--limit",
        str(LIMIT),
        "--concurrency",
        "1",
        "--out",
        str(out),
    ]


def start_and_wait(out: Path, lines: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        eval_command(out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    path = out / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            return proc
        if proc.poll() is not None:
            pytest.fail(f"eval ended early: {proc.returncode}\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the eval wrote no results in time")


def finish(out: Path, capsys) -> str:
    """The same command again, in this process this time, to the end."""
    from rolepool.cli import main

    capsys.readouterr()
    assert main(eval_command(out)[3:]) == 0
    return capsys.readouterr().out


def keys(path: Path) -> list[tuple]:
    return [(r.suite, r.case, r.worker) for r in load_results(path.parent)]


@pytest.mark.slow  # loads a shipped checkpoint, in a child process too
def test_kill_9_mid_run_then_resume(tmp_path, capsys):
    out = tmp_path / "eval"
    proc = start_and_wait(out, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = (out / "results.jsonl").read_bytes()
    complete = before[: before.rfind(b"\n") + 1]
    assert 3 <= complete.count(b"\n") < LIMIT
    stdout = finish(out, capsys)
    after = (out / "results.jsonl").read_bytes()
    assert after.startswith(complete)  # every line written before the kill is still there
    found = keys(out / "results.jsonl")
    assert len(found) == len(set(found)) == LIMIT  # it continued, nothing twice
    assert "resuming: " in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"]["dense-s1"]["overall"]["n"] == LIMIT


@pytest.mark.slow  # loads a shipped checkpoint, in a child process too
def test_ctrl_c_leaves_a_consistent_file(tmp_path, capsys):
    out = tmp_path / "eval"
    proc = start_and_wait(out, 2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert "run the same command again to resume" in stdout
    data = (out / "results.jsonl").read_bytes()
    assert data.endswith(b"\n")  # no torn line
    kept = load_results(out)
    assert 2 <= len(kept) < LIMIT
    finish(out, capsys)
    assert len(set(keys(out / "results.jsonl"))) == LIMIT
