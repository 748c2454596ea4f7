"""BFCL's leaderboard groups: the weighting, the intervals, the summary key and the report."""

from __future__ import annotations

import json

import pytest
from test_eval_stats import record

from rolepool.evals.bfcl.groups import bfcl_summary, category_score, leaderboard_groups
from rolepool.evals.report import markdown_report
from rolepool.evals.report_html import render_html
from rolepool.evals.result_line import ResultLine
from rolepool.evals.summary import build_summary


def _lines(worker: str, arch: str, category: str, right: int, n: int, *, strict: int | None = None):
    strict = right if strict is None else strict
    out = []
    for i in range(n):
        line = record(worker, arch, i, i < right, category=category)
        data = line.model_dump(exclude_unset=True)
        data["case"] = f"{category}_{i}"
        data["suite"] = "bfcl-" + category
        data["scores"]["exact_strict"] = i < strict
        out.append(ResultLine.model_validate(data))
    return out


def test_groups_follow_the_leaderboards_weighting():
    scores = {
        "simple_python": category_score(_lines("w", "moe", "simple_python", 9, 10)),
        "simple_java": category_score(_lines("w", "moe", "simple_java", 3, 10)),
        "simple_javascript": category_score(_lines("w", "moe", "simple_javascript", 0, 10)),
        "multiple": category_score(_lines("w", "moe", "multiple", 10, 10)),
        "live_simple": category_score(_lines("w", "moe", "live_simple", 10, 10)),
        "live_multiple": category_score(_lines("w", "moe", "live_multiple", 0, 30)),
        "irrelevance": category_score(_lines("w", "moe", "irrelevance", 10, 10)),
        "live_irrelevance": category_score(_lines("w", "moe", "live_irrelevance", 5, 10)),
    }
    groups = leaderboard_groups(scores)
    # simple = mean(0.9, 0.3, 0.0) = 0.4; non-live = mean(simple 0.4, multiple 1.0) (the parallel
    # categories did not run: left out, and the group says which ran)
    assert groups["non_live"].accuracy == pytest.approx(0.7)
    assert groups["non_live"].categories == [
        "simple_python",
        "simple_java",
        "simple_javascript",
        "multiple",
    ]
    assert groups["live"].accuracy == pytest.approx(10 / 40)  # weighted by case counts
    assert groups["irrelevance"].accuracy == pytest.approx(0.75)  # unweighted
    assert groups["relevance"].accuracy is None and groups["multi_turn"].accuracy is None
    # overall: weights 10, 10, 10 over the three groups that ran
    assert groups["overall"].accuracy == pytest.approx((0.7 + 0.25 + 0.75) / 3)
    for group in ("non_live", "live", "irrelevance", "overall"):
        low, high = groups[group].ci95
        assert 0 <= low < groups[group].accuracy < high <= 1


def test_the_summary_has_a_bfcl_key_only_when_bfcl_ran_and_the_report_shows_it():
    roles = [record("w", "moe", i, i % 2 == 0) for i in range(6)]
    assert "bfcl" not in json.loads(build_summary(roles).to_json())
    assert bfcl_summary(roles) is None
    lines = _lines("moe-a", "moe", "simple_python", 8, 10, strict=6)
    lines += _lines("dense-a", "dense", "simple_python", 4, 10, strict=4)
    summary = build_summary(lines)
    data = json.loads(summary.to_json())["bfcl"]
    worker = data["workers"]["moe-a"]
    assert worker["categories"]["simple_python"]["accuracy"] == 0.8
    assert worker["categories"]["simple_python"]["strict"] == 0.6
    assert data["architectures"]["dense"]["non_live"] == pytest.approx(0.4)
    report = markdown_report(summary)
    assert "## BFCL, as the leaderboard groups it" in report
    assert "80.0% \\[" in report and "| 60.0% |" in report
    page = render_html(summary, lines, {})
    assert "BFCL, as the leaderboard groups it" in page and "80.0% [" in page
