"""The eval statistics against values computed independently: published examples, brute-force
enumeration, and a different algebraic route to the same interval."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from rolepool.evals.significance import (
    holm,
    js_divergence,
    mcnemar_exact,
    mean_sd,
    min_permutation_p,
    percentile,
    permutation_test,
    wilson,
)


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I: the
# Wilson score interval (method 3, no continuity correction) for his worked examples.
@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombes_published_examples(k, n, lo, hi):
    got = wilson(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-5) and got[1] == pytest.approx(hi, abs=5e-5)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (3, 10), (7, 7), (50, 120), (119, 120)])
def test_wilson_bounds_are_the_roots_of_the_score_equation(k, n):
    """The Wilson bounds are the p where (p_hat - p)^2 = z^2 p (1 - p) / n: solve that quadratic
    directly, a different route from the centre/half-width formula."""
    z = 1.959963984540054
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    disc = math.sqrt(b * b - 4 * a * c)
    roots = ((-b - disc) / (2 * a), (-b + disc) / (2 * a))
    got = wilson(k, n)
    assert got[0] == pytest.approx(max(0.0, roots[0]), abs=1e-12)
    assert got[1] == pytest.approx(min(1.0, roots[1]), abs=1e-12)
    assert 0.0 <= got[0] <= p_hat <= got[1] <= 1.0


def test_wilson_edges():
    assert wilson(0, 0) == (0.0, 1.0)  # nothing observed: nothing known
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson(5, 3)


def brute_force_mcnemar(b: int, c: int) -> float:
    """Enumerate every way the b + c discordant cases could have fallen (each 50/50) and add the
    probability of the outcomes at least as lopsided as the observed one."""
    n = b + c
    observed = abs(b - c)
    hits = sum(
        1
        for outcome in itertools.product((0, 1), repeat=n)
        if abs(2 * sum(outcome) - n) >= observed
    )
    return hits / 2**n


@pytest.mark.parametrize(("b", "c"), [(0, 5), (1, 9), (3, 3), (2, 7), (10, 4), (0, 1), (6, 0)])
def test_mcnemar_exact_equals_brute_force_enumeration(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(brute_force_mcnemar(b, c), rel=1e-12)


def test_mcnemar_known_values():
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # all 5 discordant one way: 2 * 0.5^5
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)  # 2 * (1 + 10) / 2^10
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(4, 4) == 1.0
    # ../shared/notes: 239 vs 12 discordant items gave p ~ 6e-56
    assert 1e-57 < mcnemar_exact(239, 12) < 1e-54


def test_permutation_test_with_two_models_per_architecture():
    result = permutation_test([0.1, 0.2], [0.6, 0.7])
    assert result.arrangements == 6  # C(4, 2)
    assert result.p_value == pytest.approx(2 / 6)  # as extreme as it gets, and still 1/3
    assert result.difference == pytest.approx(-0.5)
    assert min_permutation_p(2, 2) == pytest.approx(1 / 3)
    assert min_permutation_p(4, 4) == pytest.approx(2 / 70)
    assert min_permutation_p(4, 4) < 0.05


def test_permutation_test_separated_groups_of_four():
    result = permutation_test([0.8, 0.82, 0.85, 0.9], [0.1, 0.12, 0.15, 0.2])
    assert result.p_value == pytest.approx(2 / 70)
    overlap = permutation_test([0.3, 0.5, 0.4, 0.6], [0.35, 0.55, 0.45, 0.5])
    assert overlap.p_value > 0.5


def test_holm_against_a_hand_worked_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_percentile_matches_linear_interpolation():
    values = [7.0, 1.0, 3.0, 5.0]  # sorted 1 3 5 7
    assert percentile(values, 50) == 4.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 7.0
    assert percentile(values, 95) == pytest.approx(5 + 0.85 * 2)  # pos 2.85
    assert percentile([], 50) is None


def test_mean_sd_and_divergence():
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_sd([1.0]) == (1.0, None)
    assert js_divergence([5, 5], [1, 1]) == pytest.approx(0.0)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    # P=(1,0), Q=(1/2,1/2): M=(3/4,1/4); JSD = 1/2 log2(4/3) + 1/2 (1/2 log2(2/3) + 1/2 log2 2)
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * 1)
    assert js_divergence([2, 0], [1, 1]) == pytest.approx(expected)


# -- summary.json -------------------------------------------------------------------------------
from rolepool.evals.result_line import ResultLine  # noqa: E402
from rolepool.evals.summary import build_summary  # noqa: E402


def summary_json(records):
    """summary.json as written: the keys README documents are what these tests read."""
    return json.loads(build_summary(records).to_json())


def record(worker, arch, i, exact, *, role="coder", category="single", latency=1.0, load=None):
    call_case = category != "no_call"
    return ResultLine.model_validate(
        {
            "suite": "s",
            "case": f"c{i:03d}",
            "worker": worker,
            "model": worker,
            "architecture": arch,
            "role": role,
            "category": category,
            "scores": {
                "exact": exact,
                "name_correct": exact if call_case else None,
                "json_valid": True,
                "schema_valid": True if call_case else None,
                "schema_valid_first_try": True if call_case else None,
                "no_call_correct": None if call_case else exact,
                "parsed": True if call_case else None,
                "false_call": None if call_case else not exact,
            },
            "latency": latency,
            "started": 100.0 + i,
            "ended": 100.5 + i,
            "usage": {"prompt_tokens": 50, "completion_tokens": 10},
            "expert_load": load,
        }
    )


def workers_with(rates: dict[str, tuple[str, list[bool]]]):
    return [
        record(name, arch, i, ok, role=("coder", "writer")[i % 2])
        for name, (arch, oks) in rates.items()
        for i, ok in enumerate(oks)
    ]


def test_summary_keys_rates_and_intervals():
    oks = [True] * 30 + [False] * 70
    summary = summary_json(workers_with({"d1": ("dense", oks)}))
    w = summary["workers"]["d1"]
    assert w["architecture"] == "dense" and w["overall"]["n"] == 100
    exact = w["overall"]["exact_acc"]
    assert exact["rate"] == 0.3 and (exact["k"], exact["n"]) == (30, 100)
    assert exact["ci95"] == pytest.approx(list(wilson(30, 100)))
    for metric in (
        "exact_acc",
        "name_acc",
        "json_valid",
        "schema_valid",
        "schema_valid_first_try",
        "no_call_acc",
    ):
        assert metric in w["overall"] and metric in w["by_role"]["coder"]
    assert w["overall"]["no_call_acc"]["n"] == 0 and w["overall"]["no_call_acc"]["rate"] is None
    assert w["by_role"]["coder"]["n"] == 50 and w["by_category"]["single"]["n"] == 100
    assert w["overall"]["latency"]["p50"] == 1.0 and w["overall"]["tokens_per_s"] == 10.0
    # 100 cases of 0.5 s each, one after another (1 s apart): active 50 s, 1000 tokens
    assert w["throughput"]["tokens_per_s"] == pytest.approx(1000 / 50)
    assert summary["architectures"]["dense"]["overall"]["exact_acc"]["rate"] == 0.3
    assert w["expert_health"] is None


def test_pair_comparison_counts_discordant_cases():
    a = [True] * 20 + [False] * 20
    b = [True] * 8 + [False] * 12 + [True] * 2 + [False] * 18  # A alone right 12, B alone 2
    summary = summary_json(workers_with({"a": ("dense", a), "b": ("moe", b)}))
    pair = next(
        c for c in summary["comparisons"] if c["kind"] == "workers" and c["metric"] == "exact_acc"
    )
    assert (pair["both"], pair["a_only"], pair["b_only"], pair["neither"]) == (8, 12, 2, 18)
    assert pair["p_value"] == pytest.approx(mcnemar_exact(12, 2))
    assert pair["p_holm"] >= pair["p_value"]
    arch = next(c for c in summary["comparisons"] if c["kind"] == "architectures")
    assert arch["verdict"] == "cannot tell"  # one model per architecture
    assert arch["p_value"] is None and "difference" not in arch  # the key written as before


def test_two_models_per_architecture_cannot_show_a_difference():
    """Even a large, consistent gap: 2 + 2 models cannot give p < 0.05 across models, and the
    summary says so instead of pooling the cases into an overconfident test."""
    hi, lo = [True] * 90 + [False] * 10, [True] * 10 + [False] * 90
    summary = summary_json(
        workers_with(
            {"d1": ("dense", hi), "d2": ("dense", hi), "m1": ("moe", lo), "m2": ("moe", lo)}
        )
    )
    arch = next(
        c
        for c in summary["comparisons"]
        if c["kind"] == "architectures" and c["metric"] == "exact_acc"
    )
    assert arch["verdict"] == "no detectable difference"
    assert arch["p_value"] == pytest.approx(1 / 3) and arch["min_p"] == pytest.approx(1 / 3)
    assert arch["difference"] == pytest.approx(0.8)
    assert "no detectable difference" in arch["text"] and "smallest p" in arch["text"]
    agg = summary["architectures"]["dense"]["overall"]["exact_acc"]
    assert agg["rate"] == pytest.approx(0.9) and agg["sd"] == pytest.approx(0.0)
    assert agg["per_model"] == {"d1": 0.9, "d2": 0.9}


def test_four_models_per_architecture_can_show_a_difference():
    def oks(k):
        return [True] * k + [False] * (100 - k)

    summary = summary_json(
        workers_with(
            {
                **{f"d{i}": ("dense", oks(80 + i)) for i in range(4)},
                **{f"m{i}": ("moe", oks(20 + i)) for i in range(4)},
            }
        )
    )
    arch = next(
        c
        for c in summary["comparisons"]
        if c["kind"] == "architectures" and c["metric"] == "exact_acc"
    )
    assert arch["verdict"] == "dense higher" and arch["p_value"] == pytest.approx(2 / 70)
    pairs = [c for c in summary["comparisons"] if c["kind"] == "workers"]
    assert len(pairs) == 28 * 3  # every pair of 8 workers, three metrics


def test_expert_health_per_role_and_divergence():
    even = [[5, 5, 5, 5], [5, 5, 5, 5]]
    skewed = [[20, 0, 0, 0], [10, 10, 0, 0]]
    records = [
        record("m", "moe", 0, True, role="coder", load=even),
        record("m", "moe", 1, True, role="coder", load=even),
        record("m", "moe", 2, False, role="writer", load=skewed),
    ]
    health = summary_json(records)["workers"]["m"]["expert_health"]
    coder, writer = health["by_role"]["coder"], health["by_role"]["writer"]
    assert coder["entropy_mean"] == 1.0 and coder["max_over_mean"] == 1.0
    assert coder["idle_experts"] == [] and coder["tokens"] == 40
    assert writer["entropy_min"] == 0.0 and writer["max_over_mean"] == 4.0
    assert writer["idle_experts"] == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3]]
    pair = health["divergence"]["pairs"][0]
    assert (pair["a"], pair["b"]) == ("coder", "writer")
    assert pair["jsd"][0] == pytest.approx(js_divergence([1, 1, 1, 1], [1, 0, 0, 0]))
    assert 0 < health["divergence"]["max"] < 1
