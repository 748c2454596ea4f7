"""Run owners and heartbeats (issue 28.10): `trace list`, `trace show` and the viewer tell a run
that is going from one whose process is gone, old databases still open, and the heartbeat beats
inside the run's own task group without changing what the run does."""

from __future__ import annotations

import os
import sqlite3
import time

import anyio
import pytest

from rolepool import Agent, FunctionWorker
from rolepool.cli import main
from rolepool.core import UserError
from rolepool.core.events import RunStarted
from rolepool.runtime import EventStore, run
from rolepool.runtime import store as store_module
from rolepool.runtime.owner import RunOwner, liveness, process_start, this_host, this_owner
from rolepool.runtime.viewer import render_run_html


def _owner(**changes) -> RunOwner:
    me = this_owner("run_x")
    fields = {**me.__dict__, **changes}
    return RunOwner(**fields)


def test_liveness_by_pid_start_time_and_heartbeat():
    now = time.time()
    assert liveness(_owner()) == "running"
    assert liveness(_owner(heartbeat=now - 60)) == "stalled"  # alive, not beating
    assert liveness(_owner(pid=2**22 + 7)) == "interrupted"  # no such process
    # the pid is alive but belongs to a later process: the owner is gone
    assert liveness(_owner(process_start=(process_start(os.getpid()) or 0) - 100)) == (
        "interrupted"
    )
    assert liveness(_owner(host="elsewhere")) == "running"  # fresh beat: believed
    assert liveness(_owner(host="elsewhere", heartbeat=now - 13)) == "interrupted"


def test_listing_tells_running_from_interrupted(tmp_path, capsys):
    db = tmp_path / "e.db"
    with EventStore(db) as store:
        for run_id in ("run_alive", "run_dead", "run_old"):
            store.append(RunStarted(run_id=run_id, seq=0, task=run_id))
        store.claim_run(this_owner("run_alive"))
        store.claim_run(RunOwner("run_dead", 2**22 + 7, this_host(), None, time.time(), 2.0))
        statuses = {r.run_id: r.status for r in store.runs()}
    assert statuses == {"run_alive": "running", "run_dead": "interrupted", "run_old": "unknown"}
    assert main(["trace", "list", "--db", str(db)]) == 0
    listing = capsys.readouterr().out
    assert "interrupted" in listing and "running" in listing and "unknown" in listing
    assert main(["trace", "show", "run_dead", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "interrupted (its process is gone)" in shown
    assert "rolepool run --resume run_dead" in shown
    assert main(["trace", "show", "run_alive", "--db", str(db)]) == 0
    assert "interrupted" not in capsys.readouterr().out
    with EventStore(db) as store:
        page = render_run_html(store.events("run_dead"), store.state("run_dead"))
    assert 'class="row run interrupted"' in page and "process is gone" in page


def test_a_database_from_before_owners_gains_the_table(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript(store_module._SCHEMA)  # the events table alone, as databases were
    con.execute(
        store_module._INSERT,
        ("run_old", 0, "run.started", 1.0, "s", None, RunStarted(run_id="run_old", task="t")
         .model_dump_json()),
    )  # fmt: skip
    con.commit()
    con.close()
    with EventStore(db) as store:
        assert [(r.run_id, r.status) for r in store.runs()] == [("run_old", "unknown")]
        store.claim_run(this_owner("run_new"))
        assert store.owner("run_new").pid == os.getpid()


def test_a_database_that_cannot_take_the_table_still_lists(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_OWNERS", "CREATE TABLE ( broken")
    with EventStore(tmp_path / "e.db") as store:
        store.append(RunStarted(run_id="run_a", seq=0, task="t"))
        assert [r.status for r in store.runs()] == ["unknown"]
        assert store.owner("run_a") is None and store.resumed_by("run_a") is None


@pytest.mark.anyio
async def test_the_heartbeat_beats_while_the_run_goes_and_stops_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "HEARTBEAT_INTERVAL", 0.02)
    store = EventStore(tmp_path / "e.db")
    seen: list[str] = []

    async def slow(request):
        await anyio.sleep(0.3)
        seen.append(store.status(request.run_id))
        return "done"

    agent = Agent("a")
    result = await agent.run("go", worker=FunctionWorker(slow), store=store)
    owner = store.owner(result.run_id)
    first = store.events(result.run_id)[0].ts
    assert seen == ["running"]
    assert owner is not None and owner.heartbeat > first + 0.2  # it beat during the call
    assert owner.pid == os.getpid() and owner.host == this_host()
    beat = owner.heartbeat
    await anyio.sleep(0.1)
    assert store.owner(result.run_id).heartbeat == beat  # no beating after the run
    assert store.status(result.run_id) == "finished"


@pytest.mark.anyio
async def test_an_error_leaves_the_heartbeat_group_as_itself(tmp_path):
    def broken(request):
        raise KeyError("boom")

    with pytest.raises(Exception) as caught:
        await Agent("a").run("go", worker=FunctionWorker(broken), store=EventStore(tmp_path / "e"))
    assert not isinstance(caught.value, BaseExceptionGroup)


def test_of_two_resumes_of_one_run_only_the_first_claim_wins(tmp_path):
    with EventStore(tmp_path / "e.db") as store:
        store.claim_run(this_owner("run_b", resumed_from="run_a"))
        with pytest.raises(UserError, match="run_a was already resumed as run_b"):
            store.claim_run(this_owner("run_c", resumed_from="run_a"))
        assert store.owner("run_c") is None and store.resumed_by("run_a") == "run_b"
