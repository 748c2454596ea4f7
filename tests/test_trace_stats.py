"""`rolepool trace stats`: injected collapses and invalid-call jumps are flagged, health is not."""

from __future__ import annotations

import json
import time

import pytest

from rolepool.cli import main
from rolepool.core import ConfigError
from rolepool.core.events import ModelCompleted, ToolCallInvalid, ToolCallParsed
from rolepool.runtime import EventStore
from rolepool.runtime.drift import parse_duration, recent_stats

BALANCED = [[10, 9, 11, 10, 10, 9, 11, 10]] * 4
COLLAPSED = [[75, 1, 2, 0, 1, 0, 1, 0]] * 4


def inject(store: EventStore, run: str, ts: float, *, worker: str, role: str, load, invalid: bool):
    """One model call and the tool call it produced, as the run loop stores them."""
    agent_span = f"agent-{run}"
    common = {"run_id": run, "parent_id": agent_span, "ts": ts}
    model = ModelCompleted(
        **common,
        seq=0,
        agent="a",
        role=role,
        turn=1,
        worker=worker,
        architecture="moe",
        expert_load=load,
    )
    if invalid:
        call = ToolCallInvalid(**common, seq=1, agent="a", kind="schema", tool="t", errors=["$.x"])
    else:
        call = ToolCallParsed(**common, seq=1, agent="a", call_id="c", tool="t")
    store.append(model)
    store.append(call)


@pytest.fixture
def store(isolated_store):
    """Six 10-minute windows of a healthy `moe-a`/coder; the last one collapses and goes invalid.
    `moe-b`/writer stays healthy throughout."""
    now = time.time()  # the CLI judges the last hour from its own clock, a moment later
    with EventStore(isolated_store) as s:
        for window in range(6):
            for i in range(8):
                ts = now - 3600 + window * 600 + 30 + i * 60
                last = window == 5
                inject(
                    s,
                    f"a{window}{i}",
                    ts,
                    worker="moe-a",
                    role="coder",
                    load=COLLAPSED if last else BALANCED,
                    invalid=last and i % 2 == 0 or i == 0,
                )
                inject(
                    s,
                    f"b{window}{i}",
                    ts,
                    worker="moe-b",
                    role="writer",
                    load=BALANCED,
                    invalid=i == 0,
                )
        yield s, now


def test_collapse_and_invalid_jump_are_flagged_against_the_workers_own_baseline(store):
    store, now = store
    rows = recent_stats(store.path, "1h", "10m", now=now)
    a = [r for r in rows if r.worker == "moe-a"]
    b = [r for r in rows if r.worker == "moe-b"]
    assert len(a) == len(b) == 6
    assert all(not r.flags for r in a[:5]) and all(not r.flags for r in b)
    last = a[-1]
    assert last.role == "coder" and last.model_calls == 8 and last.tool_calls == 8
    assert last.invalid_rate == pytest.approx(0.5)
    assert a[0].invalid_rate == pytest.approx(1 / 8)
    assert any(f.startswith("expert collapse") for f in last.flags)
    assert any(f.startswith("invalid-call jump") for f in last.flags)
    assert last.expert_load.entropy_mean < 0.3 < a[0].expert_load.entropy_mean


def test_cli_prints_flags_and_exits_1(store, capsys):
    assert main(["trace", "stats", "--since", "1h", "--window", "10m"]) == 1
    out = capsys.readouterr().out
    assert "expert collapse" in out and "invalid-call jump" in out and "moe-b" in out
    assert main(["trace", "stats", "--since", "1h", "--window", "10m", "--json"]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(bool(r["flags"]) for r in rows) == 1


def test_a_range_that_ends_before_the_collapse_is_clean(store):
    store, now = store
    rows = recent_stats(store.path, "50m", "10m", now=now - 600)
    assert rows and not any(r.flags for r in rows)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600
    assert parse_duration("1h") == 3600 and parse_duration("2d") == 172800
    with pytest.raises(ConfigError):
        parse_duration("soon")
