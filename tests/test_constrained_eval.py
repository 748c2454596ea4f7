"""`rolepool eval --decoding`: modes parsed, variants named and paired with their free run, the
comparison (including where constraining made it worse) in summary.json and both reports, and
free runs' lines and summaries unchanged."""

from __future__ import annotations

import json

import pytest

from rolepool.core import UserError
from rolepool.evals.decoding import decoding_summary, parse_decodings, split_variant, variant
from rolepool.evals.report import markdown_report
from rolepool.evals.report_html import render_html
from rolepool.evals.result_line import ResultLine
from rolepool.evals.scoring import Scores
from rolepool.evals.summary import build_summary


def line(worker: str, case: int, exact: bool, arch: str = "dense", **extra) -> ResultLine:
    scores = Scores(exact=exact, name_correct=exact, schema_valid_first_try=True)
    return ResultLine(
        suite="roles", case=f"c{case}", worker=worker, architecture=arch, scores=scores, **extra
    )


def test_modes_and_names():
    assert parse_decodings("free,constrained") == ["free", "auto"]
    assert parse_decodings(None) == ["free"]
    assert parse_decodings("required, free, required") == ["required", "free"]
    with pytest.raises(UserError, match="sometimes"):
        parse_decodings("free,sometimes")
    assert variant("dense-s1", "free") == "dense-s1"
    assert split_variant(variant("my+model", "auto")) == ("my+model", "auto")
    assert split_variant("my+model") == ("my+model", "free")


def test_the_comparison_pairs_each_worker_with_its_free_run_and_counts_losses():
    records = []
    for i in range(12):
        records.append(line("d1", i, exact=i < 6))
        records.append(line("d1+required", i, exact=i < 2, decoding="required"))  # 4 lost
        records.append(line("d2", i, exact=i < 3))
        records.append(line("d2+required", i, exact=i < 12, decoding="required"))  # 9 gained
    summary = decoding_summary(records)
    assert summary is not None
    d1, d2 = summary.workers
    assert (d1.worker, d1.mode, d1.n, d1.gained, d1.lost) == ("d1", "required", 12, 0, 4)
    assert d1.verdict == "no detectable difference"  # 0 vs 4: p = 0.125
    assert (d2.gained, d2.lost) == (9, 0) and d2.verdict == "constrained higher"
    (dense,) = summary.architectures
    assert dense.models == ["d1", "d2"] and dense.free == [0.5, 0.25]
    assert dense.p_value is not None  # two models: the test runs, though it cannot reach 0.05
    full = build_summary(records)
    assert full.architectures["dense"].models == ["d1", "d2"]  # variants are not more models
    text = markdown_report(full)
    assert "## Free vs constrained decoding" in text and "| d1 | dense | required | 12 |" in text
    assert "0/4" in text  # the losses are shown
    assert "Free vs constrained decoding" in render_html(full, records, {})
    assert json.loads(full.to_json())["decoding"]["workers"][0]["lost"] == 4


def test_a_free_only_eval_has_no_decoding_key_and_its_lines_no_decoding_field():
    records = [line("d1", i, exact=True) for i in range(3)]
    assert "decoding" not in json.loads(build_summary(records).to_json())
    assert "decoding" not in json.loads(records[0].to_json())
    assert json.loads(line("d1+auto", 0, True, decoding="auto").to_json())["decoding"] == "auto"


def test_calls_valid_first_try_counts_only_replies_that_made_a_call():
    from rolepool.evals.result_line import AttemptRecord, CallRecord

    call = AttemptRecord(calls=[CallRecord(name="f")])
    broken = AttemptRecord(parse_error="unterminated string")
    prose = AttemptRecord(text="I cannot do that")
    free = [line("d1", i, True, attempts=[a]) for i, a in enumerate([call, broken, prose])]
    held = [line("d1+auto", i, True, attempts=[call], decoding="auto") for i in range(2)]
    held.append(line("d1+auto", 2, True, attempts=[prose], decoding="auto"))
    (pair,) = decoding_summary(free + held).workers
    assert (pair.free.calls_valid, pair.free.calls_made) == (1, 2)
    assert (pair.constrained.calls_valid, pair.constrained.calls_made) == (2, 2)


def test_a_route_in_pool_toml_sets_its_roles_decoding():
    import tomllib

    from rolepool.core import ConfigError
    from rolepool.pools.config import parse_pool_config

    text = """
[workers.a]
backend = "transformers"
model = "m"
[policy]
version = "1"
[policy.routes.coder]
choices = [{ worker = "a" }]
decoding = "auto"
"""
    config = parse_pool_config(tomllib.loads(text))
    assert config.policy.routes["coder"].decoding == "auto"
    with pytest.raises(ConfigError, match="decoding"):
        parse_pool_config(tomllib.loads(text.replace('"auto"', '"sometimes"')))
