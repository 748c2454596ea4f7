"""A run as one self-contained HTML page: a timeline of agents, model calls and tool calls.

The page must open anywhere (a CI artifact, an air-gapped laptop, an e-mail attachment), so CSS,
the small script and the SVG expert-load charts are inline and nothing is fetched from the
network. Everything shown from an event goes through `html.escape`: model outputs, tool arguments
and errors are untrusted text, and a `<script>` a model wrote must show as text, never run.
The page is complete without its script; the script only folds details open and closed.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import webbrowser
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from rolepool.core import Event
from rolepool.core import events as ev
from rolepool.runtime.expert_health import summarize_expert_load
from rolepool.runtime.store import RunState
from rolepool.runtime.trace import SpanNode, build_tree

_DETAIL_LIMIT = 4000


@dataclass
class _Row:
    """One line of the timeline: a span, where its bar goes, and what to say about it."""

    depth: int
    kind: str  # run | agent | model | tool | invalid | event
    title: str
    start: float
    end: float
    status: str = "ok"  # ok | error | invalid | running | interrupted
    meta: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)
    expert_load: list[list[int]] | None = None


def _clip(text: str, limit: int = _DETAIL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _run_row(node: SpanNode, first: ev.RunStarted) -> _Row:
    end = node.last("run.finished", "run.failed")
    row = _Row(0, "run", f"run {first.agent or first.workflow or ''}".strip(), node.start, node.end)
    row.details.append(("task", first.task))
    if isinstance(end, ev.RunFinished):
        row.meta += [f"{end.usage.total_tokens} tokens", _ms(end.duration)]
        row.details.append(("output", end.output))
    elif isinstance(end, ev.RunFailed):
        row.status = "error"
        row.errors.append(f"{end.error_type}: {end.message}")
    else:
        row.status = "running"
    if first.resumed_from:
        row.meta.append(f"resumes interrupted run {first.resumed_from}")
    return row


def _mark_run(row: _Row, state: RunState | None) -> None:
    """What the store knows and the events cannot: a run whose process is gone, who resumed it."""
    if state is None:
        return
    if row.status == "running" and state.status != "running":
        row.status = "interrupted"
        row.errors.append(
            f"{state.status}: no end was recorded and its process is gone or not beating"
            if state.status != "unknown"
            else "no end recorded (running, or gone before run owners were recorded)"
        )
    if state.resumed_by:
        row.meta.append(f"resumed as run {state.resumed_by}")


def _agent_row(node: SpanNode, first: ev.AgentStarted) -> _Row:
    row = _Row(0, "agent", f"agent {first.agent}", node.start, node.end, meta=[first.role])
    end = node.last("agent.finished")
    if isinstance(end, ev.AgentFinished):
        row.meta += [f"{end.turns} turns", f"{end.usage.total_tokens} tokens", _ms(end.duration)]
        if end.error:
            row.status = "error"
            row.errors.append(end.error)
        if end.output:
            row.details.append(("output", end.output))
    else:
        row.status = "running"
    return row


def _model_row(node: SpanNode, first: ev.ModelRequested) -> _Row:
    row = _Row(0, "model", f"model call · turn {first.turn}", node.start, node.end)
    end = node.last("model.completed")
    if not isinstance(end, ev.ModelCompleted):
        row.status = "running"
        return row
    row.title = f"chat {end.model or end.worker or '?'} · turn {first.turn}"
    if end.replayed:
        row.meta.append("replayed from the resumed run")
    u = end.usage
    row.meta += [f"worker {end.worker or '?'}", end.architecture]
    if end.policy_version:
        row.meta.append(f"policy {end.policy_version}")
    row.meta += [f"{u.prompt_tokens}+{u.completion_tokens} tok", _ms(end.latency)]
    if end.time_to_first_token is not None:
        row.meta.append(f"first token {_ms(end.time_to_first_token)}")
    if end.cached_prompt_tokens:
        row.meta.append(f"{end.cached_prompt_tokens} cached")
    for event in [*node.events, *(child.events[0] for child in node.children)]:
        if isinstance(event, ev.PoolFailover):
            row.errors.append(f"failover {event.from_worker} → {event.to_worker}: {event.error}")
        elif isinstance(event, ev.BreakerChanged):
            row.meta.append(f"breaker {event.worker}: {event.state}")
    if end.error:
        row.status = "error"
        row.errors.append(end.error)
    if end.reasoning:
        row.details.append(("reasoning", end.reasoning))
    if end.text:
        row.details.append(("output", end.text))
    row.expert_load = end.expert_load
    return row


def _tool_row(node: SpanNode, first: ev.ToolCallParsed | ev.ToolStarted) -> _Row:
    row = _Row(0, "tool", f"tool {first.tool}", node.start, node.end, meta=[first.call_id])
    if isinstance(first, ev.ToolCallParsed):
        args = json.dumps(first.arguments, ensure_ascii=False)
        row.title = f"tool {first.tool}({_clip(args[1:-1], 60)})"
        row.details.append(("arguments", args))
    end = node.last("tool.finished")
    if not isinstance(end, ev.ToolFinished):
        row.status = "running"
        return row
    row.meta.append("replayed" if end.replayed else _ms(end.duration))
    if end.error:
        row.status = "error"
        row.errors.append(end.error)
    else:
        row.details.append(("result", end.result))
    return row


def _invalid_row(node: SpanNode, first: ev.ToolCallInvalid) -> _Row:
    title = f"invalid call {first.tool or '(unparseable)'}"
    row = _Row(0, "invalid", title, node.start, node.end, status="invalid")
    row.meta += [first.kind, f"attempt {first.attempt}"]
    row.errors += first.errors
    if first.raw:
        row.details.append(("raw reply", first.raw))
    return row


def _row(node: SpanNode) -> _Row:
    first = node.events[0]
    if isinstance(first, ev.RunStarted):
        return _run_row(node, first)
    if isinstance(first, ev.AgentStarted):
        return _agent_row(node, first)
    if isinstance(first, ev.ModelRequested):
        return _model_row(node, first)
    if isinstance(first, (ev.ToolCallParsed, ev.ToolStarted)):
        return _tool_row(node, first)
    if isinstance(first, ev.ToolCallInvalid):
        return _invalid_row(node, first)
    return _Row(0, "event", first.type, node.start, node.end)


def _rows(events: list[Event]) -> list[_Row]:
    """Depth-first, parents before children: the order a reader follows the run in."""
    out: list[_Row] = []

    def walk(node: SpanNode, depth: int) -> None:
        first = node.events[0]
        if first.type.startswith("pool."):  # shown on its model call's row, not as a row
            return
        row = _row(node)
        row.depth = depth
        out.append(row)
        for child in node.children:
            walk(child, depth + 1)

    for root in build_tree(events):
        walk(root, 0)
    return out


def _expert_svg(load: list[list[int]]) -> str:
    """Per layer, one bar per expert, height = its share of that layer's busiest expert."""
    experts = max(len(layer) for layer in load)
    bar, gap, height = 7, 1, 22
    width = experts * (bar + gap) + 22
    parts = [
        f'<svg class="experts" width="{width}" height="{len(load) * (height + 4)}" '
        f'role="img" aria-label="expert load, {len(load)} layers × {experts} experts">'
    ]
    for li, layer in enumerate(load):
        top, peak = li * (height + 4), max(layer) or 1
        parts.append(f'<text x="0" y="{top + height - 6}" class="lbl">L{li}</text>')
        for ei, count in enumerate(layer):
            h = max(1.0, height * count / peak)
            x = 20 + ei * (bar + gap)
            parts.append(
                f'<rect x="{x}" y="{top + height - h:.1f}" width="{bar}" height="{h:.1f}">'
                f"<title>layer {li} expert {ei}: {count} tokens</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _row_html(row: _Row, t0: float, span: float, index: int) -> str:
    left = (row.start - t0) / span * 100
    width = max((row.end - row.start) / span * 100, 0.25)
    meta = " · ".join(escape(m) for m in row.meta)
    errors = "".join(f'<div class="err">{escape(_clip(e, 600))}</div>' for e in row.errors)
    experts = ""
    summary = summarize_expert_load(row.expert_load)
    if summary is not None and row.expert_load:
        experts = (
            f'<div class="moe">{_expert_svg(row.expert_load)}<span>entropy '
            f"{summary.entropy_mean:.2f} (min {summary.entropy_min:.2f}) · max/mean "
            f"{summary.max_over_mean_max:.2f}</span></div>"
        )
    details = "".join(
        f'<div class="detail"><b>{escape(k)}</b><pre>{escape(_clip(v))}</pre></div>'
        for k, v in row.details
        if v
    )
    toggle = ' <button class="more" type="button">details</button>' if details else ""
    took = _ms(row.end - row.start)
    return (
        f'<div class="row {row.kind} {row.status}" id="r{index}">'
        f'<div class="label" style="padding-left:{8 + row.depth * 16}px">'
        f'<div class="title">{escape(row.title)}{toggle}</div>'
        f'<div class="meta">{meta}</div>{errors}{experts}</div>'
        f'<div class="lane"><div class="bar" style="left:{left:.3f}%;width:{width:.3f}%" '
        f'title="{escape(row.title)} · {took} at +{_ms(row.start - t0)}"></div></div>'
        f'<div class="details" hidden>{details}</div></div>'
    )


def _axis(total: float) -> str:
    ticks = []
    for i in range(6):
        ticks.append(f'<span style="left:{i * 20}%">{_ms(total * i / 5)}</span>')
    lane = f'<div class="lane">{"".join(ticks)}</div>'
    return f'<div class="axis"><div class="label"></div>{lane}</div>'


def render_run_html(events: list[Event], state: RunState | None = None) -> str:
    """The whole page for one run's events (as `EventStore.events(run_id)` returns them);
    `state` (`EventStore.state`) marks a run whose process is gone and links a resumed one."""
    if not events:
        raise ValueError("a run with no events has nothing to show")
    rows = _rows(events)
    if rows and rows[0].kind == "run":
        _mark_run(rows[0], state)
    t0 = min(e.ts for e in events)
    total = max(max(e.ts for e in events) - t0, 1e-6)
    run_id = events[0].run_id
    started = dt.datetime.fromtimestamp(t0).strftime("%Y-%m-%d %H:%M:%S")
    counts = {k: sum(r.kind == k for r in rows) for k in ("agent", "model", "tool", "invalid")}
    failed = sum(r.status == "error" for r in rows)
    summary = " · ".join(
        [
            _plural(counts["agent"], "agent"),
            _plural(counts["model"], "model call"),
            _plural(counts["tool"], "tool call"),
            _plural(counts["invalid"], "invalid call"),
            _plural(failed, "error"),
            _ms(total),
        ]
    )
    body = "".join(_row_html(r, t0, total, i) for i, r in enumerate(rows))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rolepool run {escape(run_id)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>run <code>{escape(run_id)}</code></h1><p>started {started} · "
        f"{escape(summary)}</p>{_LEGEND}</header>"
        f'<main class="timeline">{_axis(total)}{body}</main>'
        f"<script>{_JS}</script></body></html>"
    )


_LEGEND = (
    '<ul class="legend"><li class="agent">agent</li><li class="model">model call</li>'
    '<li class="tool">tool call</li><li class="invalid">invalid call</li>'
    '<li class="error">error</li></ul>'
)

_CSS = """
:root{--fg:#1d2330;--muted:#5f6b7a;--line:#e3e7ee;--agent:#3b6fd8;--model:#8a4fd1;
--tool:#1f9d6b;--invalid:#d23c3c;--error:#e0702a;--run:#8c96a5}
*{box-sizing:border-box}
body{margin:0;font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:#f7f8fa}
header{padding:16px 20px 10px;background:#fff;border-bottom:1px solid var(--line)}
h1{margin:0 0 4px;font-size:17px}h1 code{font-size:15px;color:var(--muted)}
header p{margin:0;color:var(--muted)}
.legend{list-style:none;display:flex;gap:14px;margin:8px 0 0;padding:0;color:var(--muted)}
.legend li::before{content:"";display:inline-block;width:10px;height:10px;border-radius:2px;
margin-right:5px;vertical-align:-1px;background:var(--c)}
.legend .agent{--c:var(--agent)}.legend .model{--c:var(--model)}.legend .tool{--c:var(--tool)}
.legend .invalid{--c:var(--invalid)}.legend .error{--c:var(--error)}
.timeline{margin:12px 20px;background:#fff;border:1px solid var(--line);border-radius:6px}
.row,.axis{display:grid;grid-template-columns:minmax(300px,38%) 1fr;
border-top:1px solid var(--line)}
.axis{border-top:0;color:var(--muted);font-size:11px;height:24px}
.axis .lane{position:relative;margin:0 56px 0 12px}
.axis span{position:absolute;top:5px;transform:translateX(-50%);white-space:nowrap}
.label{padding:6px 8px;min-width:0;border-right:1px solid var(--line)}
.title{font-weight:600;overflow-wrap:anywhere}
.meta{color:var(--muted);font-size:12px;overflow-wrap:anywhere}
.err{color:var(--invalid);font-size:12px;font-family:ui-monospace,monospace;overflow-wrap:anywhere;
white-space:pre-wrap}
.lane{position:relative;margin:0 56px 0 12px;min-height:28px}
.bar{position:absolute;top:9px;height:12px;border-radius:3px;min-width:3px;background:var(--run)}
.agent .bar{background:var(--agent)}.model .bar{background:var(--model)}
.tool .bar{background:var(--tool)}.invalid .bar{background:var(--invalid);width:4px!important}
.row.error .bar{background:var(--error)}.row.running .bar{opacity:.5}
.row.interrupted .bar{background:var(--error);opacity:.5}.row.interrupted .title{color:var(--error)}
.row.run .title{font-size:14px}
.row.invalid .title,.row.error .title{color:var(--invalid)}
.moe{display:flex;align-items:center;gap:10px;margin-top:4px;color:var(--muted);font-size:12px}
.experts rect{fill:var(--model)}.experts .lbl{font-size:9px;fill:var(--muted)}
.details{grid-column:1/-1;padding:6px 12px 10px 24px;background:#fafbfc}
.detail pre{margin:2px 0 8px;padding:6px 8px;background:#fff;border:1px solid var(--line);
border-radius:4px;white-space:pre-wrap;overflow-wrap:anywhere;max-height:240px;overflow:auto}
.more{margin-left:8px;font:11px system-ui,sans-serif;color:var(--muted);background:none;
border:1px solid var(--line);border-radius:3px;padding:0 5px;cursor:pointer}
"""

_JS = """
(function () {
  document.querySelectorAll('.row .more').forEach(function (button) {
    button.addEventListener('click', function () {
      var details = button.closest('.row').querySelector('.details');
      details.hidden = !details.hidden;
      button.textContent = details.hidden ? 'details' : 'hide';
    });
  });
  document.body.setAttribute('data-viewer', 'ready');
})();
"""


def write_run_html(events: list[Event], path: str | Path, state: RunState | None = None) -> Path:
    """Write the page; returns the path written (for the CLI to print)."""
    target = Path(path).expanduser()
    target.write_text(render_run_html(events, state), encoding="utf-8")
    return target


def open_run_html(events: list[Event], state: RunState | None = None) -> Path:
    """Write the page to a temporary file and open it in the default browser.

    The file is left in place: the browser reads it after this returns, and the user may want
    to keep or share it."""
    handle = tempfile.NamedTemporaryFile(
        "w", prefix=f"rolepool-{events[0].run_id}-", suffix=".html", delete=False, encoding="utf-8"
    )
    with handle:
        handle.write(render_run_html(events, state))
    path = Path(handle.name)
    webbrowser.open(path.as_uri())
    return path
