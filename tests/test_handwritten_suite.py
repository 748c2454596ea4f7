"""The hand-written suite loads, is large enough to mean something, and stays out of training."""

from __future__ import annotations

from pathlib import Path

from rolepool.evals.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "evals" / "handwritten-v1.jsonl"


def test_suite_loads_with_at_least_40_cases() -> None:
    suite = load_suite(str(SUITE))
    assert len(suite.cases) >= 40
    assert {c.role for c in suite.cases} == {"planner", "coder", "search", "writer"}


def test_training_code_never_reads_it() -> None:
    for path in (ROOT / "rolepool" / "zoo").rglob("*.py"):
        if path.name == "cards.py":  # the model cards' prose reports scores on it
            continue
        text = path.read_text()
        assert "handwritten" not in text and "evals/" not in text, path
