"""The hand-written suites load, are large enough to mean something, and stay out of training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rolepool.evals.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent
SUITES = [ROOT / "evals" / name for name in ("handwritten-v1.jsonl", "handwritten-v2.jsonl")]


@pytest.mark.parametrize("suite_file", SUITES, ids=lambda p: p.stem)
def test_suite_loads_with_at_least_40_cases(suite_file: Path) -> None:
    suite = load_suite(str(suite_file))
    assert len(suite.cases) >= 40
    assert {c.role for c in suite.cases} == {"planner", "coder", "search", "writer"}


@pytest.mark.parametrize("suite_file", SUITES, ids=lambda p: p.stem)
def test_training_code_never_reads_it(suite_file: Path) -> None:
    for path in (ROOT / "rolepool" / "zoo").rglob("*.py"):
        if path.name == "cards.py":  # the model cards' prose reports scores on it
            continue
        text = path.read_text()
        assert suite_file.stem not in text, path
        assert "handwritten" not in text and "evals/" not in text, path


def test_each_set_is_fresh() -> None:
    """A later set is written anew: no prompt of an earlier set is reused."""
    seen: set[str] = set()
    for suite_file in SUITES:
        prompts = [json.loads(line)["prompt"] for line in suite_file.read_text().splitlines()]
        assert len(set(prompts)) == len(prompts), suite_file.name
        assert not seen & set(prompts), suite_file.name
        seen |= set(prompts)
