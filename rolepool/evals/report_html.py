"""`report.html`: one self-contained page (figures embedded as base64 PNG, inline CSS, no script,
no network), so it can be mailed, archived or attached to a CI run and still open.

Everything that comes from a suite, a pool file or a model (names, roles, categories, model output)
is escaped with `html.escape`: model text is untrusted.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

from rolepool.evals.bfcl.groups import (
    BFCL_HEADERS,
    BFCL_NOTE,
    bfcl_architecture_rows,
    bfcl_rows,
)
from rolepool.evals.decoding import ARCH_HEADERS as DECODING_ARCH_HEADERS
from rolepool.evals.decoding import HEADERS as DECODING_HEADERS
from rolepool.evals.decoding import NOTE as DECODING_NOTE
from rolepool.evals.decoding import decoding_rows
from rolepool.evals.report_tables import (
    HEADERS,
    arch_rows,
    architecture_pairs,
    category_rows,
    expert_rows,
    key_findings,
    role_rows,
    worker_pairs,
    worker_rows,
)
from rolepool.evals.result_line import ResultLine
from rolepool.evals.summary_types import Summary

MAX_EXAMPLES = 6  # failed cases shown per worker

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;
color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde;
padding-bottom:4px}.muted{color:#5a6473}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d8dde6;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f1f4f9}td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafbfd}
ul.findings li{margin:4px 0}img{max-width:100%;border:1px solid #e3e7ee;margin:6px 0}
pre{background:#f6f7f9;border:1px solid #e3e7ee;padding:6px 8px;white-space:pre-wrap;
word-break:break-word;font-size:12px;margin:2px 0 10px}
.verdict{font-weight:600}.tag{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;
background:#eef1f6}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(figures: dict[str, bytes], name: str, alt: str) -> str:
    data = figures.get(name)
    if not data:
        return ""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _comparisons(summary: Summary) -> str:
    rows = [
        [
            c.metric,
            f"{c.a} vs {c.b}",
            str(c.n),
            f"{c.a_only} / {c.b_only}",
            f"{c.p_value:.3g}",
            f"{c.p_holm:.3g}",
            c.verdict,
        ]
        for c in worker_pairs(summary)
    ]
    table = _table(
        [
            "metric",
            "workers",
            "shared cases",
            "only A / only B right",
            "p (McNemar)",
            "p (Holm)",
            "verdict",
        ],
        rows,
        left=2,
    )
    words = "".join(f"<li>{_e(c.text)}</li>" for c in architecture_pairs(summary))
    return (
        f"<h3>Architectures (models as the unit)</h3><ul class=findings>{words}</ul>"
        f"<h3>Worker pairs (cases as the unit)</h3>{table}"
    )


def _examples(records: Sequence[ResultLine], worker: str) -> str:
    failed = [r for r in records if r.worker == worker and r.scores.exact is False][:MAX_EXAMPLES]
    if not failed:
        return ""
    parts = [f"<h3>{_e(worker)}: first {len(failed)} cases not exactly right</h3>"]
    for r in failed:
        final = r.attempts[-1].text if r.attempts else ""
        calls = ", ".join(f"{c.name}({_short(c.arguments)})" for c in r.calls)
        parts.append(
            f'<div><span class="tag">{_e(r.case)}</span> <span class="muted">'
            f"{_e(r.role or '')} · {_e(r.category or '')} · "
            f"{len(r.attempts)} attempt(s)</span>"
            f"{' · error: ' + _e(r.error) if r.error else ''}"
            f"<pre>{_e(final) or '(no text)'}</pre>"
            f'<div class="muted">calls: {_e(calls) or "none"}</div></div>'
        )
    return "".join(parts)


def _short(arguments: Any) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in (arguments or {}).items())
    return text if len(text) < 160 else text[:157] + "..."


def render_html(summary: Summary, records: Sequence[ResultLine], figures: dict[str, bytes]) -> str:
    suites = ", ".join(summary.suites)
    experts = expert_rows(summary)
    heatmaps = "".join(
        _img(figures, name, f"expert load heatmap of {name}")
        for name in figures
        if name.startswith("expert_load_")
    )
    examples = "".join(_examples(records, name) for name in summary.workers)
    body = [
        f"<h1>rolepool eval: {_e(suites)}</h1>",
        f'<p class="muted">{summary.results} results · generated {_e(summary.generated)} · '
        "rates with Wilson 95% intervals · latency = model time per case, batching wait "
        "included · tok/s = completion tokens per second while the worker had cases in "
        "flight</p>",
        "<h2>Workers</h2>",
        _table(HEADERS, worker_rows(summary), left=2),
        "<h2>Findings</h2><ul class=findings>",
        "".join(f'<li class="verdict">{_e(t)}</li>' for t in key_findings(summary)),
        "</ul>",
        "<h2>Accuracy by role</h2>",
        _img(figures, "accuracy_by_role.png", "accuracy by role"),
        _table(
            ["worker", "role", "n", "exact", "name", "schema", "no-call", "p50"],
            role_rows(summary),
            left=2,
        ),
        "<h2>By category</h2>",
        _table(
            ["worker", "category", "n", "exact", "name", "schema 1st", "schema"],
            category_rows(summary),
            left=2,
        ),
        "<h2>Latency</h2>",
        _img(figures, "latency.png", "latency per case"),
        "<h2>By architecture</h2><p class=muted>Mean of the models' rates; sd across models "
        "(seed-to-seed spread).</p>",
        _table(["architecture", "metric", "mean", "sd", "per model"], arch_rows(summary), left=2),
    ]
    if experts:
        body += [
            "<h2>MoE expert load by role</h2><p class=muted>Share of each layer's tokens per "
            "expert. Entropy 1 = even; idle = under a tenth of an even share; JSD = "
            "divergence between roles' expert distributions (bits).</p>",
            heatmaps,
            _table(
                ["worker", "role", "entropy", "min entropy", "max/mean", "idle"], experts, left=2
            ),
        ]
    if summary.decoding is not None:
        workers, archs = decoding_rows(summary.decoding)
        body += [
            f"<h2>Free vs constrained decoding</h2><p class=muted>{_e(DECODING_NOTE)}</p>",
            _table(DECODING_HEADERS, workers, left=3),
            _table(DECODING_ARCH_HEADERS, archs, left=3),
        ]
    if summary.bfcl is not None:
        body += [
            f"<h2>BFCL, as the leaderboard groups it</h2><p class=muted>{_e(BFCL_NOTE)} "
            f"{_e(summary.bfcl.weighting)}.</p>",
            _table(BFCL_HEADERS, bfcl_rows(summary.bfcl), left=3),
            _table(["architecture", "group", "BFCL"], bfcl_architecture_rows(summary.bfcl), left=2),
        ]
    body += ["<h2>Comparisons</h2>", _comparisons(summary)]
    if examples:
        body += ["<h2>Examples of failures</h2>", examples]
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>rolepool eval: {_e(suites)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
