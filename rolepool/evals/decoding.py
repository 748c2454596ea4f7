"""`rolepool eval --decoding free,constrained`: the same cases decoded freely and under a grammar,
and what the grammar changed, per worker and per architecture.

Each decoding mode but `free` runs as a variant of the worker, named `WORKER+MODE` in the results
(`dense-s1+auto`) and carrying `decoding` on its lines, so resuming, the per-worker tables and
the figures treat it as a worker of its own while this module pairs it with its free run.
`constrained` means `auto`: the model still chooses whether to call; once it opens a call, the
call is held to one of the case's tools and that tool's schema. `required` forces a call on
every reply, and so shows the cost of forcing one where none was wanted.

Per worker: exact, name, schema-valid first try, retries used, tokens and latency, free vs
constrained, with an exact McNemar test on the cases both ran (exact match). Per architecture:
the models' exact rates free vs constrained, with the across-model permutation test (the model
is the unit, as in the architecture comparisons). Cases that were exact free and not exact
constrained are counted: a grammar can make a model's values worse, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from rolepool.core import UserError
from rolepool.evals.result_line import ResultLine
from rolepool.evals.significance import mcnemar_exact, min_permutation_p, permutation_test

__all__ = [
    "DecodingSummary",
    "decoding_rows",
    "decoding_summary",
    "parse_decodings",
    "split_variant",
    "variant",
]

SEPARATOR = "+"
MODES = {"free": "free", "constrained": "auto", "auto": "auto", "required": "required"}
"""`--decoding` words and the request mode each runs (`constrained` is `auto`)."""
ALPHA = 0.05


def parse_decodings(text: str | None) -> list[str]:
    """The modes `--decoding` asks for, in order, without repeats (default: free)."""
    words = [w.strip() for w in (text or "free").split(",") if w.strip()]
    unknown = [w for w in words if w not in MODES]
    if unknown or not words:
        raise UserError(
            f"--decoding: {', '.join(unknown) or '(empty)'} is not one of {', '.join(MODES)}"
        )
    return list(dict.fromkeys(MODES[w] for w in words))


def variant(worker: str, mode: str) -> str:
    """The name a worker's results use under `mode`."""
    return worker if mode == "free" else f"{worker}{SEPARATOR}{mode}"


def split_variant(name: str) -> tuple[str, str]:
    """(worker, mode) of a results name made by `variant`."""
    base, sep, mode = name.rpartition(SEPARATOR)
    return (base, mode) if sep and mode in ("auto", "required") else (name, "free")


class ModeStats(BaseModel):
    """One worker under one decoding mode."""

    n: int
    exact: float | None
    name: float | None
    schema_valid_first_try: float | None
    calls_made: int
    """Cases whose first reply made a call (well-formed or not)."""
    calls_valid: int
    """Of those, the cases whose calls parsed and matched their schemas on that first reply:
    under a grammar this should be every one (`calls_made`)."""
    retries: float | None
    """Mean retries per case (attempts after the first)."""
    completion_tokens: float | None
    latency: float | None


class WorkerDecoding(BaseModel):
    """A worker free vs under `mode`, on the cases both ran."""

    worker: str
    architecture: str
    mode: str
    free: ModeStats
    constrained: ModeStats
    n: int
    gained: int
    """Cases exact under the grammar and not free."""
    lost: int
    """Cases exact free and not under the grammar: where constraining made it worse."""
    p_value: float
    verdict: str


class ArchitectureDecoding(BaseModel):
    """An architecture's models' exact rates free vs under `mode` (model is the unit)."""

    architecture: str
    mode: str
    models: list[str]
    free: list[float]
    constrained: list[float]
    p_value: float | None
    min_p: float | None
    verdict: str


class DecodingSummary(BaseModel):
    workers: list[WorkerDecoding]
    architectures: list[ArchitectureDecoding]


def decoding_summary(records: Sequence[ResultLine]) -> DecodingSummary | None:
    """The comparison, when the records hold a free run and a constrained run of some worker."""
    by_name: dict[str, list[ResultLine]] = {}
    for record in records:
        by_name.setdefault(record.worker, []).append(record)
    pairs = []
    for name in sorted(by_name):
        base, mode = split_variant(name)
        if mode != "free" and base in by_name:
            pairs.append(_worker(base, mode, by_name[base], by_name[name]))
    if not pairs:
        return None
    archs = sorted({(p.architecture, p.mode) for p in pairs})
    return DecodingSummary(
        workers=pairs,
        architectures=[
            _architecture(a, m, [p for p in pairs if (p.architecture, p.mode) == (a, m)])
            for a, m in archs
        ],
    )


def _worker(base: str, mode: str, free: list[ResultLine], held: list[ResultLine]) -> WorkerDecoding:
    a = {r.case_key: r for r in free}
    b = {r.case_key: r for r in held}
    shared = sorted(set(a) & set(b))
    gained = sum(bool(b[k].scores.exact) and not a[k].scores.exact for k in shared)
    lost = sum(bool(a[k].scores.exact) and not b[k].scores.exact for k in shared)
    p = mcnemar_exact(gained, lost)
    better = "constrained" if gained > lost else "free"
    return WorkerDecoding(
        worker=base,
        architecture=free[0].architecture,
        mode=mode,
        free=_stats([a[k] for k in shared]),
        constrained=_stats([b[k] for k in shared]),
        n=len(shared),
        gained=gained,
        lost=lost,
        p_value=p,
        verdict=f"{better} higher" if p < ALPHA else "no detectable difference",
    )


def _stats(lines: list[ResultLine]) -> ModeStats:
    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    def share(field: str) -> float | None:
        values = [v for r in lines if (v := getattr(r.scores, field)) is not None]
        return mean([float(bool(v)) for v in values])

    return ModeStats(
        n=len(lines),
        exact=share("exact"),
        name=share("name_correct"),
        schema_valid_first_try=share("schema_valid_first_try"),
        calls_made=len(made := [r.attempts[0] for r in lines if r.attempts and _made_call(r)]),
        calls_valid=sum(a.parse_error is None and not a.invalid for a in made),
        retries=mean([float(max(len(r.attempts) - 1, 0)) for r in lines]),
        completion_tokens=mean([float(r.usage.completion_tokens) for r in lines]),
        latency=mean([float(r.latency) for r in lines]),
    )


def _made_call(line: ResultLine) -> bool:
    first = line.attempts[0]
    return bool(first.calls) or first.parse_error is not None


def _architecture(arch: str, mode: str, pairs: list[WorkerDecoding]) -> ArchitectureDecoding:
    free = [
        p.free.exact for p in pairs if p.free.exact is not None and p.constrained.exact is not None
    ]
    held = [
        p.constrained.exact
        for p in pairs
        if p.free.exact is not None and p.constrained.exact is not None
    ]
    out = ArchitectureDecoding(
        architecture=arch,
        mode=mode,
        models=[p.worker for p in pairs],
        free=free,  # type: ignore[arg-type]
        constrained=held,  # type: ignore[arg-type]
        p_value=None,
        min_p=None,
        verdict="cannot tell (needs 2 models or more)",
    )
    if len(free) >= 2:
        result = permutation_test(held, free)  # type: ignore[arg-type]
        out.p_value, out.min_p = result.p_value, min_permutation_p(len(free), len(held))
        higher = "constrained" if result.difference > 0 else "free"
        out.verdict = f"{higher} higher" if result.p_value < ALPHA else "no detectable difference"
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


HEADERS = [
    "worker",
    "arch",
    "mode",
    "n",
    "exact free→constr.",
    "name",
    "schema 1st try",
    "calls valid 1st try",
    "retries",
    "tokens",
    "latency s",
    "gained/lost",
    "McNemar p",
    "verdict",
]
ARCH_HEADERS = ["architecture", "mode", "models", "exact free", "exact constr.", "p", "verdict"]


def decoding_rows(summary: DecodingSummary) -> tuple[list[list[str]], list[list[str]]]:
    """The report's two tables: per worker, per architecture."""
    rows = []
    for w in summary.workers:
        f, c = w.free, w.constrained
        rows.append(
            [
                w.worker,
                w.architecture,
                w.mode,
                str(w.n),
                f"{_pct(f.exact)} → {_pct(c.exact)}",
                f"{_pct(f.name)} → {_pct(c.name)}",
                f"{_pct(f.schema_valid_first_try)} → {_pct(c.schema_valid_first_try)}",
                f"{f.calls_valid}/{f.calls_made} → {c.calls_valid}/{c.calls_made}",
                f"{_num(f.retries, '.2f')} → {_num(c.retries, '.2f')}",
                f"{_num(f.completion_tokens)} → {_num(c.completion_tokens)}",
                f"{_num(f.latency, '.2f')} → {_num(c.latency, '.2f')}",
                f"{w.gained}/{w.lost}",
                f"{w.p_value:.3g}",
                w.verdict,
            ]
        )
    archs = [
        [
            a.architecture,
            a.mode,
            ", ".join(a.models),
            ", ".join(_pct(v) for v in a.free),
            ", ".join(_pct(v) for v in a.constrained),
            _num(a.p_value, ".2g") + (f" (min {a.min_p:.2g})" if a.min_p is not None else ""),
            a.verdict,
        ]
        for a in summary.architectures
    ]
    return rows, archs


NOTE = (
    "Free vs constrained decoding on the same cases. gained = exact only under the grammar, "
    "lost = exact only free (where the grammar made the model worse: a forced call, a value "
    "held to the schema but wrong); McNemar p is the exact paired test on those two counts. "
    "Calls valid 1st try: of the cases whose first reply made a call, those whose calls parsed "
    "and matched their schemas (schema 1st try also counts replies that made no call). "
    "Architectures: the models' exact rates, across-model permutation test."
)
