"""Turn a run's stored events back into its tree of spans, and draw that tree for the terminal.

A run without an end event is `running` only while its owner lives; the store says which
(`RunState`), and the tree says `interrupted` (with the command that resumes it) once it is gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rich.text import Text
from rich.tree import Tree

from rolepool.core import Event
from rolepool.core import events as ev
from rolepool.runtime.store import RunState

_UNENDED = {
    "running": ("running", "yellow"),
    "interrupted": ("interrupted (its process is gone)", "magenta"),
    "stalled": ("stalled (its process is alive but has stopped its heartbeat)", "red"),
    "unknown": ("no end recorded (running, or gone before owners were recorded)", "yellow"),
}


@dataclass
class SpanNode:
    """One span (run, agent, model call or tool call) and the events that belong to it."""

    span_id: str
    parent_id: str | None
    events: list[Event] = field(default_factory=list)
    children: list[SpanNode] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.events[0].ts

    @property
    def end(self) -> float:
        return self.events[-1].ts

    def last(self, *types: str) -> Event | None:
        return next((e for e in reversed(self.events) if e.type in types), None)


def build_tree(events: list[Event]) -> list[SpanNode]:
    """Roots (normally one: the run) with children in emission order. Orphans become roots."""
    nodes: dict[str, SpanNode] = {}
    order: list[SpanNode] = []
    for event in sorted(events, key=lambda e: e.seq):
        node = nodes.get(event.span_id)
        if node is None:
            node = nodes[event.span_id] = SpanNode(event.span_id, event.parent_id)
            order.append(node)
        node.events.append(event)
    roots = []
    for node in order:
        parent = nodes.get(node.parent_id) if node.parent_id else None
        (parent.children if parent is not None and parent is not node else roots).append(node)
    return roots


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _timing(node: SpanNode, t0: float) -> str:
    return f"{node.end - node.start:.3f}s  +{node.start - t0:.3f}s"


def _run_label(node: SpanNode, first: ev.RunStarted, state: RunState | None) -> Text:
    end = node.last("run.finished", "run.failed")
    out = Text(f"run {first.run_id} ", style="bold")
    if end is None:
        said, style = _UNENDED[state.status if state is not None else "running"]
        out.append(said, style=style)
    elif isinstance(end, ev.RunFinished):
        out.append("finished", style="green")
    else:
        out.append("failed", style="red")
    out.append(f"  {node.end - node.start:.3f}s  task: {_short(first.task)}")
    if isinstance(end, ev.RunFailed):
        out.append(f"\n{end.error_type}: {_short(end.message, 200)}", style="red")
    if first.resumed_from:
        out.append(f"\nresumes interrupted run {first.resumed_from}", style="magenta")
    if state is not None and state.resumed_by:
        out.append(f"\nresumed as run {state.resumed_by}", style="magenta")
    elif end is None and state is not None and state.status == "interrupted":
        out.append(f"\nresume it: rolepool run --resume {first.run_id}", style="magenta")
    return out


def _agent_label(node: SpanNode, first: ev.AgentStarted, t0: float) -> Text:
    out = Text(f"agent {first.agent} ", style="bold cyan").append(f"({first.role})")
    end = node.last("agent.finished")
    if isinstance(end, ev.AgentFinished):
        out.append(f"  {end.turns} turns  {end.usage.total_tokens} tokens  {_timing(node, t0)}")
        if end.error:
            out.append(f"\n{_short(end.error, 200)}", style="red")
    return out


def _model_label(node: SpanNode, first: ev.ModelRequested, t0: float) -> Text:
    out = Text(f"model turn {first.turn}", style="magenta")
    end = node.last("model.completed")
    if not isinstance(end, ev.ModelCompleted):
        return out.append("  (no answer)", style="yellow")
    usage = end.usage
    out.append(f"  {end.worker or '?'} [{end.architecture}]  ")
    out.append(f"{usage.prompt_tokens}+{usage.completion_tokens} tok  {_timing(node, t0)}")
    if first.elided:
        out.append(f"  ({first.elided} old results elided to fit)", style="yellow")
    if end.replayed:
        out.append("  (replayed from the resumed run)", style="dim")
    if end.error:
        out.append(f"\n{_short(end.error, 200)}", style="red")
    return out


def _tool_label(node: SpanNode, first: ev.ToolCallParsed | ev.ToolStarted, t0: float) -> Text:
    args = first.arguments if isinstance(first, ev.ToolCallParsed) else {}
    out = Text(f"tool {first.tool}", style="bold green").append(f"({_short(args, 60)})")
    end = node.last("tool.finished")
    if not isinstance(end, ev.ToolFinished):
        return out.append("  (not finished)", style="yellow")
    if end.replayed:
        out.append("  (replayed)", style="dim")
    if end.error:
        return out.append(f"  ✗ {_timing(node, t0)}  {_short(end.error, 160)}", style="red")
    return out.append(f"  ✓ {_timing(node, t0)}  → {_short(end.result, 80)}")


def _label(node: SpanNode, t0: float, state: RunState | None = None) -> Text:
    """One line per span: what it was, how it ended, how long it took and when it started."""
    first = node.events[0]
    if isinstance(first, ev.RunStarted):
        return _run_label(node, first, state)
    if isinstance(first, ev.AgentStarted):
        return _agent_label(node, first, t0)
    if isinstance(first, ev.ModelRequested):
        return _model_label(node, first, t0)
    if isinstance(first, (ev.ToolCallParsed, ev.ToolStarted)):
        return _tool_label(node, first, t0)
    if isinstance(first, ev.ToolCallInvalid):
        out = Text(f"✗ invalid {first.tool or 'reply'} ({first.kind})", style="red")
        return out.append(f"  +{node.start - t0:.3f}s  {_short('; '.join(first.errors), 160)}")
    return Text(f"{first.type}  +{node.start - t0:.3f}s")


def render_tree(events: list[Event], state: RunState | None = None) -> Tree:
    """A rich `Tree` of the run: agents, model calls and tool calls with timings. `state` (from
    the store) tells an unfinished run that is running from one whose process is gone."""
    roots = build_tree(events)
    t0 = min((e.ts for e in events), default=0.0)
    top = Tree(Text(f"{len(events)} events"), guide_style="dim")

    def add(parent: Tree, node: SpanNode) -> None:
        branch = parent.add(_label(node, t0, state))
        for child in node.children:
            add(branch, child)

    for root in roots:
        add(top, root)
    return top
