"""The report: summary.json, report.md and one self-contained report.html with embedded figures,
model text escaped, rendered by a real headless Chromium without console errors."""

from __future__ import annotations

import json
import re

from test_eval_stats import record
from test_viewer import run_chromium

from rolepool.evals.report import markdown_report, terminal_report, write_reports
from rolepool.evals.result_line import AttemptRecord, CallRecord
from rolepool.evals.summary import build_summary

XSS = '<script>document.title="pwned"</script><img src=x onerror="alert(1)">'
LOAD = [[30, 2, 1, 0, 5, 0, 1, 1], [5, 5, 4, 6, 5, 5, 4, 6], [12, 11, 0, 0, 9, 8, 0, 0]]


def records():
    out = []
    for w, arch in (("dense-a", "dense"), ("dense-b", "dense"), ("moe-a", "moe"), ("moe-b", "moe")):
        for i in range(40):
            role = ("coder", "writer", XSS)[i % 3]
            r = record(
                w,
                arch,
                i,
                (i * 7 + len(w)) % 3 == 0,
                role=role,
                category=("single", "parallel")[i % 2],
                latency=0.2 + (i % 9) / 10,
                load=LOAD if arch == "moe" else None,
            )
            r.attempts = [AttemptRecord(text=f"model said {XSS}")]
            r.calls = [CallRecord(name="x", arguments={"q": XSS})]
            out.append(r)
    return out


def test_reports_are_written_and_escape_model_text(tmp_path):
    recs = records()
    summary = build_summary(recs, suites=["roles"])
    paths = write_reports(tmp_path, summary, recs)
    assert json.loads(paths["summary"].read_text())["workers"]["moe-a"]["expert_health"]
    for png in (
        "accuracy_by_role.png",
        "latency.png",
        "expert_load_moe-a.png",
        "expert_load_moe-b.png",
    ):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text()
    assert "<script" not in page and 'onerror="alert' not in page
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    assert page.count("data:image/png;base64,") == 4  # every figure embedded
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from anywhere
    assert "no detectable difference" in page and "Wilson" in page
    md = paths["markdown"].read_text()
    assert "<script>" not in md and "\\<script\\>" in md
    assert md == markdown_report(summary)


def test_terminal_report_has_the_table_and_findings():
    from rich.console import Console

    summary = build_summary(records(), suites=["roles"])
    console = Console(width=220, record=True)
    console.print(terminal_report(summary, {"html": "/x/report.html"}))
    text = console.export_text()
    assert "dense-a" in text and "moe-b" in text and "exact" in text
    assert "no detectable difference" in text and "/x/report.html" in text


def test_real_chromium_renders_the_report(tmp_path):
    recs = records()
    paths = write_reports(tmp_path, build_summary(recs, suites=["roles"]), recs)
    shot = tmp_path / "report.png"
    proc = run_chromium(
        paths["html"], tmp_path / "profile-1", f"--screenshot={shot}", "--window-size=1300,2000"
    )
    assert shot.exists(), proc.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 50_000  # tables and figures, not blank
    assert "Uncaught" not in proc.stderr and "ERROR:CONSOLE" not in proc.stderr
    dom = run_chromium(paths["html"], tmp_path / "profile-2", "--dump-dom")
    assert "rolepool eval: roles" in dom.stdout, dom.stderr[-2000:]
    assert "pwned" not in dom.stdout.split("<title>")[1].split("</title>")[0]
    assert dom.stdout.count("<img") == 4
    assert "Uncaught" not in dom.stderr and "ERROR:CONSOLE" not in dom.stderr


def test_eval_modules_import_one_way():
    """No import cycle among rolepool/evals modules, counting imports inside functions too (the
    report used to import report_html lazily while report_html imported the report)."""
    import ast
    from pathlib import Path

    import rolepool.evals

    package = Path(rolepool.evals.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "rolepool.evals":
                names.update(f"rolepool.evals.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        graph[path.stem] = {
            n.removeprefix("rolepool.evals.") for n in names if n.startswith("rolepool.evals.")
        }

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_each_of_four_seeds_per_architecture_gets_its_own_shade():
    # The default eval plots four dense and four MoE models: no two may share a colour, and the
    # two architectures keep apart palettes.
    from types import SimpleNamespace

    from rolepool.evals.plots import worker_colours

    workers = {
        f"{a}-s{i}": SimpleNamespace(architecture=a) for a in ("dense", "moe") for i in (1, 2, 3, 4)
    }
    colours = worker_colours(workers)
    assert len(set(colours.values())) == 8
    dense = {colours[f"dense-s{i}"] for i in (1, 2, 3, 4)}
    moe = {colours[f"moe-s{i}"] for i in (1, 2, 3, 4)}
    assert not dense & moe
