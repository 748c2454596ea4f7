"""Drift and collapse over time, per worker and role, from the stored events.

For each time window: how many tool calls the models made and what share was invalid, and how
evenly the MoE models spread tokens over their experts. A window is flagged when it is much worse
than the same worker and role's *own* baseline (every earlier window in the range), not against
a fixed number: a small model's normal invalid rate, or a model with a few naturally popular
experts, must not alarm forever, while a change of behaviour (a new checkpoint, a routing bug, a
drifting prompt) should.

Expert load is summed over a window's calls before it is summarised: a single short request has
low entropy by chance, a window's total does not unless the router really concentrates.
Tool calls carry no worker, so each is credited to the model call that produced it: the last
`model.completed` of the same agent before the call.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table
from rich.text import Text

from rolepool.core import ConfigError, Event
from rolepool.core import events as ev
from rolepool.runtime.expert_health import ExpertLoadSummary, summarize_expert_load
from rolepool.runtime.store import EventStore

_TYPES = ("model.completed", "tool.call.parsed", "tool.call.invalid")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '2d' (or plain seconds) → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError("use a positive number with s, m, h or d, e.g. 1h", where=repr(text))
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True)
class Thresholds:
    """When a window is flagged, relative to the group's earlier windows."""

    min_calls: int = 5  # tool calls in the window before its invalid rate means anything
    invalid_jump: float = 0.2  # rate rises by at least this much (absolute) ...
    invalid_factor: float = 2.0  # ... and to at least this multiple of the baseline rate
    entropy_factor: float = 0.8  # load entropy falls below this share of the baseline ...
    concentration_factor: float = 1.5  # ... or busiest/mean rises by this factor


@dataclass
class _Tally:
    model_calls: int = 0
    tool_calls: int = 0
    invalid: int = 0
    load: list[list[int]] | None = None

    def add_load(self, load: list[list[int]] | None) -> None:
        if not load:
            return
        if self.load is None or [len(x) for x in self.load] != [len(x) for x in load]:
            self.load = [list(layer) for layer in load]  # a new shape: the model changed
        else:
            self.load = [
                [a + b for a, b in zip(x, y, strict=True)]
                for x, y in zip(self.load, load, strict=True)
            ]

    def merge(self, other: _Tally) -> None:
        self.model_calls += other.model_calls
        self.tool_calls += other.tool_calls
        self.invalid += other.invalid
        self.add_load(other.load)

    @property
    def invalid_rate(self) -> float | None:
        return self.invalid / self.tool_calls if self.tool_calls else None


@dataclass
class WindowStats:
    """One worker and role in one time window, with what looks wrong about it."""

    worker: str
    role: str
    start: float
    end: float
    model_calls: int
    tool_calls: int
    invalid_calls: int
    invalid_rate: float | None
    expert_load: ExpertLoadSummary | None
    flags: list[str] = field(default_factory=list)


def load_events(db: str | Path, since: float) -> list[Event]:
    """The events `stats` needs, newer than `since`, in run order."""
    with EventStore(db) as store:
        return store.events_since(_TYPES, since)


def _tallies(events: list[Event], start: float, window: float) -> dict[tuple, _Tally]:
    """(worker, role, window index) → counts. Events must be in run order (run_id, seq)."""
    out: dict[tuple, _Tally] = {}
    last_model: dict[tuple[str, str | None], tuple[str, str]] = {}  # (run, agent span) → w, r
    for event in events:
        index = int((event.ts - start) // window)
        if isinstance(event, ev.ModelCompleted):
            if event.error:
                continue
            key = (event.worker or "?", event.role)
            last_model[(event.run_id, event.parent_id)] = key
            tally = out.setdefault((*key, index), _Tally())
            tally.model_calls += 1
            tally.add_load(event.expert_load)
        elif isinstance(event, (ev.ToolCallParsed, ev.ToolCallInvalid)):
            key = last_model.get((event.run_id, event.parent_id))
            if key is None:
                continue  # its model call is older than the range
            tally = out.setdefault((*key, index), _Tally())
            tally.tool_calls += 1
            tally.invalid += isinstance(event, ev.ToolCallInvalid)
    return out


def _flags(now: _Tally, base: _Tally, th: Thresholds) -> list[str]:
    flags = []
    rate, base_rate = now.invalid_rate, base.invalid_rate
    if rate is not None and base_rate is not None and now.tool_calls >= th.min_calls:
        if rate >= base_rate + th.invalid_jump and rate >= base_rate * th.invalid_factor:
            flags.append(f"invalid-call jump: {rate:.0%} vs baseline {base_rate:.0%}")
    cur, ref = summarize_expert_load(now.load), summarize_expert_load(base.load)
    if cur is not None and ref is not None and cur.layers == ref.layers:
        if cur.entropy_mean < ref.entropy_mean * th.entropy_factor or (
            cur.max_over_mean_max > ref.max_over_mean_max * th.concentration_factor
        ):
            flags.append(
                f"expert collapse: entropy {cur.entropy_mean:.2f} vs baseline "
                f"{ref.entropy_mean:.2f}, max/mean {cur.max_over_mean_max:.1f} vs "
                f"{ref.max_over_mean_max:.1f}"
            )
    return flags


def window_stats(
    events: list[Event],
    *,
    since: float,
    until: float,
    window: float,
    thresholds: Thresholds | None = None,
) -> list[WindowStats]:
    """Per worker and role, each window from `since` to `until` that had calls, oldest first."""
    th = thresholds or Thresholds()
    tallies = _tallies([e for e in events if since <= e.ts <= until], since, window)
    out: list[WindowStats] = []
    for worker, role in sorted({(w, r) for w, r, _ in tallies}):
        baseline = _Tally()
        for index in sorted(i for w, r, i in tallies if (w, r) == (worker, role)):
            now = tallies[(worker, role, index)]
            start = since + index * window
            out.append(
                WindowStats(
                    worker=worker,
                    role=role,
                    start=start,
                    end=min(start + window, until),
                    model_calls=now.model_calls,
                    tool_calls=now.tool_calls,
                    invalid_calls=now.invalid,
                    invalid_rate=now.invalid_rate,
                    expert_load=summarize_expert_load(now.load),
                    flags=_flags(now, baseline, th) if baseline.model_calls else [],
                )
            )
            baseline.merge(now)
    return out


def render_stats(rows: list[WindowStats]) -> Table:
    """The `rolepool trace stats` table: one line per worker, role and window; flags in red."""
    table = Table(title="tool-call validity and expert load per window")
    for col in ("worker", "role", "window", "model calls", "tool calls", "invalid"):
        table.add_column(col, no_wrap=True)
    for col in ("entropy", "max/mean", "flags"):
        table.add_column(col)
    for row in rows:
        start = dt.datetime.fromtimestamp(row.start).strftime("%m-%d %H:%M")
        end = dt.datetime.fromtimestamp(row.end).strftime("%H:%M")
        rate = "" if row.invalid_rate is None else f"{row.invalid_calls} ({row.invalid_rate:.0%})"
        load = row.expert_load
        table.add_row(
            row.worker,
            row.role,
            f"{start}–{end}",
            str(row.model_calls),
            str(row.tool_calls),
            rate,
            "" if load is None else f"{load.entropy_mean:.2f}",
            "" if load is None else f"{load.max_over_mean_max:.1f}",
            Text("; ".join(row.flags), style="bold red"),
        )
    return table


def recent_stats(
    db: str | Path, since: str = "1h", window: str | None = None, *, now: float | None = None
) -> list[WindowStats]:
    """`rolepool trace stats`: the last `since` (e.g. "1h") in windows of `window` (default:
    six windows), so the oldest window is the first baseline and the newest is judged by it."""
    until = time.time() if now is None else now
    start = until - parse_duration(since)
    length = parse_duration(window) if window else (until - start) / 6
    return window_stats(load_events(db, start), since=start, until=until, window=length)
