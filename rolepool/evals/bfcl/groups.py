"""BFCL's numbers the way its leaderboard groups them, per worker and per architecture.

The leaderboard's rules (BFCL v4), followed here:
- non-live AST = the unweighted mean of simple (itself the unweighted mean of simple_python,
  simple_java, simple_javascript), multiple, parallel and parallel_multiple;
- live AST = the mean of live_simple, live_multiple, live_parallel, live_parallel_multiple
  weighted by their case counts;
- multi-turn = the unweighted mean of its four categories;
- hallucination: irrelevance = the unweighted mean of irrelevance and live_irrelevance;
  relevance = live_relevance;
- overall = non-live, live, irrelevance, multi-turn and agentic weighted 10, 10, 10, 30, 40.
  rolepool does not run the agentic categories (web search, memory), nor may a run include every
  group: the overall here is over the groups that ran, their weights renormalised, and says which.
A category that did not run is left out of its group's mean (the leaderboard counts it as 0 and
shows N/A); the group lists the categories it holds.

Each category's rate has its Wilson 95% interval; a group's interval combines its categories'
Wilson half-widths with the group's weights, as if independent (sqrt of the sum of squares),
which is the honest size of the uncertainty of a weighted mean of independent rates.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel

from rolepool.evals.bfcl.data import CATEGORIES
from rolepool.evals.result_line import ResultLine
from rolepool.evals.significance import wilson

BFCL_CATEGORIES = frozenset(CATEGORIES.values())
SIMPLE = ("simple_python", "simple_java", "simple_javascript")
NON_LIVE_AST = ("simple", "multiple", "parallel", "parallel_multiple")
LIVE_AST = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
MULTI_TURN = (
    "multi_turn_base",
    "multi_turn_miss_func",
    "multi_turn_miss_param",
    "multi_turn_long_context",
)
IRRELEVANCE = ("irrelevance", "live_irrelevance")
OVERALL_WEIGHTS = {"non_live": 10, "live": 10, "irrelevance": 10, "multi_turn": 30, "agentic": 40}


class CategoryScore(BaseModel):
    """One BFCL category on one worker: BFCL's accuracy and rolepool's stricter one."""

    n: int
    k: int
    accuracy: float | None
    ci95: list[float]
    strict_k: int
    strict: float | None
    refused: int
    """Cases whose prompt did not fit the model's context (scored as failures)."""


class GroupScore(BaseModel):
    """A leaderboard group: its accuracy by BFCL's weighting, with the interval described in the
    module docstring, and rolepool's strict accuracy by the same weighting."""

    accuracy: float | None
    ci95: list[float]
    strict: float | None
    n: int
    categories: list[str]


class BfclWorker(BaseModel):
    architecture: str
    categories: dict[str, CategoryScore]
    groups: dict[str, GroupScore]
    refused: int


class BfclSummary(BaseModel):
    """`summary.json`'s `bfcl` key, present when BFCL categories ran."""

    weighting: str
    workers: dict[str, BfclWorker]
    architectures: dict[str, dict[str, float | None]]
    """Per architecture, each group's accuracy as the mean over its workers."""


_WEIGHTING = (
    "BFCL v4 leaderboard: non-live = mean(simple[python, java, javascript mean], multiple, "
    "parallel, parallel_multiple); live = count-weighted mean of the live AST categories; "
    "irrelevance = mean(irrelevance, live_irrelevance); relevance = live_relevance; multi-turn = "
    "mean of its four; overall weights non-live 10, live 10, irrelevance 10, multi-turn 30, "
    "agentic 40, renormalised over the groups that ran (agentic is not run by rolepool)"
)


def category_score(records: Sequence[ResultLine]) -> CategoryScore:
    n = len(records)
    k = sum(bool(r.scores.exact) for r in records)
    strict_k = sum(bool(r.scores.exact_strict) for r in records)
    return CategoryScore(
        n=n,
        k=k,
        accuracy=k / n if n else None,
        ci95=list(wilson(k, n)) if n else [0.0, 1.0],
        strict_k=strict_k,
        strict=strict_k / n if n else None,
        refused=sum(r.error_kind == "refused" for r in records),
    )


def _group(parts: dict[str, CategoryScore | GroupScore], weights: dict[str, float]) -> GroupScore:
    """The weighted mean of the parts that ran (weights renormalised over them)."""
    ran = {name: p for name, p in parts.items() if p.accuracy is not None}
    if not ran:
        return GroupScore(accuracy=None, ci95=[0.0, 1.0], strict=None, n=0, categories=[])
    total = sum(weights[name] for name in ran)
    share = {name: weights[name] / total for name in ran}
    accuracy = sum(share[n] * p.accuracy for n, p in ran.items())  # type: ignore[operator]
    strict = sum(share[n] * (p.strict or 0.0) for n, p in ran.items())
    half = math.sqrt(sum((share[n] * (p.ci95[1] - p.ci95[0]) / 2) ** 2 for n, p in ran.items()))
    names = [
        c for n, p in ran.items() for c in (p.categories if isinstance(p, GroupScore) else [n])
    ]
    return GroupScore(
        accuracy=accuracy,
        ci95=[max(0.0, accuracy - half), min(1.0, accuracy + half)],
        strict=strict,
        n=sum(p.n for p in ran.values()),
        categories=names,
    )


def _categories(name: str, part: CategoryScore | GroupScore) -> list[str]:
    return part.categories if isinstance(part, GroupScore) else [name]


_EMPTY = CategoryScore(n=0, k=0, accuracy=None, ci95=[0.0, 1.0], strict_k=0, strict=None, refused=0)


def leaderboard_groups(categories: dict[str, CategoryScore]) -> dict[str, GroupScore]:
    """non_live, live, irrelevance, relevance, multi_turn and overall, from per-category scores."""

    def pick(names: Sequence[str]) -> dict[str, CategoryScore | GroupScore]:
        return {name: categories.get(name, _EMPTY) for name in names}

    simple = _group(pick(SIMPLE), dict.fromkeys(SIMPLE, 1.0))
    non_live = _group(
        {"simple": simple, **pick(NON_LIVE_AST[1:])}, dict.fromkeys(NON_LIVE_AST, 1.0)
    )
    live_counts = {
        name: float(categories[name].n) if name in categories else 0.0 for name in LIVE_AST
    }
    groups = {
        "non_live": non_live,
        "live": _group(pick(LIVE_AST), live_counts),
        "irrelevance": _group(pick(IRRELEVANCE), dict.fromkeys(IRRELEVANCE, 1.0)),
        "relevance": _group(pick(("live_relevance",)), {"live_relevance": 1.0}),
        "multi_turn": _group(pick(MULTI_TURN), dict.fromkeys(MULTI_TURN, 1.0)),
    }
    weighted = {name: groups[name] for name in ("non_live", "live", "irrelevance", "multi_turn")}
    groups["overall"] = _group(weighted, {k: float(v) for k, v in OVERALL_WEIGHTS.items()})
    return groups


def bfcl_summary(records: Sequence[ResultLine]) -> BfclSummary | None:
    """The BFCL section of the summary, or None when no BFCL category ran."""
    ours = [r for r in records if r.category in BFCL_CATEGORIES or _is_multi_turn(r)]
    if not ours:
        return None
    by_worker: dict[str, list[ResultLine]] = defaultdict(list)
    for r in ours:
        by_worker[r.worker].append(r)
    workers: dict[str, BfclWorker] = {}
    for name, lines in sorted(by_worker.items()):
        by_category: dict[str, list[ResultLine]] = defaultdict(list)
        for r in lines:
            by_category[r.category or ""].append(r)
        categories = {c: category_score(rs) for c, rs in sorted(by_category.items())}
        workers[name] = BfclWorker(
            architecture=lines[0].architecture,
            categories=categories,
            groups=leaderboard_groups(categories),
            refused=sum(c.refused for c in categories.values()),
        )
    return BfclSummary(
        weighting=_WEIGHTING, workers=workers, architectures=_by_architecture(workers)
    )


def _is_multi_turn(record: ResultLine) -> bool:
    return (record.category or "") in MULTI_TURN


def _by_architecture(workers: dict[str, BfclWorker]) -> dict[str, dict[str, float | None]]:
    members: dict[str, list[BfclWorker]] = defaultdict(list)
    for worker in workers.values():
        members[worker.architecture].append(worker)
    out: dict[str, dict[str, float | None]] = {}
    for arch, group in sorted(members.items()):
        out[arch] = {}
        for name in ("non_live", "live", "irrelevance", "relevance", "multi_turn", "overall"):
            rates = [w.groups[name].accuracy for w in group if w.groups[name].accuracy is not None]
            out[arch][name] = sum(rates) / len(rates) if rates else None
    return out


BFCL_HEADERS = ["worker", "architecture", "group", "n", "BFCL", "strict", "categories"]
BFCL_NOTE = (
    "BFCL is BFCL's own checker verdict (comparable with the leaderboard); strict adds "
    "rolepool's rules (calls valid against the schema, rolepool's matching, an abstention that "
    "is a real answer, not an empty or broken reply)."
)
GROUP_LABELS = {
    "non_live": "non-live",
    "live": "live",
    "irrelevance": "irrelevance",
    "relevance": "relevance",
    "multi_turn": "multi-turn",
    "overall": "overall",
}


def bfcl_rows(summary: BfclSummary) -> list[list[str]]:
    """The report's BFCL table: one row per worker and group that ran."""
    rows = []
    for name, worker in summary.workers.items():
        for group, label in GROUP_LABELS.items():
            score = worker.groups[group]
            if score.accuracy is None:
                continue
            low, high = score.ci95
            rows.append(
                [
                    name,
                    worker.architecture,
                    label,
                    str(score.n),
                    f"{score.accuracy:.1%} [{low:.1%}, {high:.1%}]",
                    f"{score.strict:.1%}" if score.strict is not None else "-",
                    ", ".join(score.categories),
                ]
            )
        rows.append(
            [
                name,
                worker.architecture,
                "refused (prompt over context)",
                str(worker.refused),
                "",
                "",
                "",
            ]
        )
    return rows


def bfcl_architecture_rows(summary: BfclSummary) -> list[list[str]]:
    """Each architecture's groups: the mean of its workers' accuracies."""
    rows = []
    for arch, groups in summary.architectures.items():
        for group, label in GROUP_LABELS.items():
            value = groups.get(group)
            if value is not None:
                rows.append([arch, label, f"{value:.1%}"])
    return rows
