"""Resuming an interrupted workflow (issue 28): a stored run is cut short after each of its
events, as a `kill -9` right after that commit leaves it, then resumed. The resumed run must
reach the uninterrupted run's answer, ask the model only what the store cannot answer, and run
no side-effecting call twice; a call that had started but not finished is not run again."""

from __future__ import annotations

import shutil

import pytest
from resume_support import cut_run, log_lines, scripted_worker, scripted_workflow

from rolepool.cli import main
from rolepool.core import events as ev
from rolepool.runtime import EventStore
from rolepool.runtime.owner import this_owner
from rolepool.runtime.replay import INTERRUPTED_CALL, ResumeDiverged, ResumeError
from rolepool.runtime.viewer import render_run_html

pytestmark = pytest.mark.anyio


async def _uninterrupted(tmp_path, native: bool = False):
    db, workspace = tmp_path / "full.db", tmp_path / "full"
    worker = scripted_worker(native)
    result = await scripted_workflow().run(
        "Plan it.", worker=worker, store=EventStore(db), workspace=workspace
    )
    with EventStore(db) as store:
        events = store.events(result.run_id)
    return result, events, len(worker.requests), log_lines(workspace)


@pytest.mark.parametrize("native", [False, True], ids=["text", "native-calls"])
async def test_resume_after_every_event_matches_the_uninterrupted_run(tmp_path, native):
    full, events, asked, effects = await _uninterrupted(tmp_path, native)
    stored_calls = [e.tool_calls for e in events if e.type == "model.completed" and e.tool_calls]
    assert bool(stored_calls) == native  # a worker's own calls are stored to be replayed
    assert sorted(effects) == sorted(set(effects)) and len(effects) == 8
    last = next(i for i, e in enumerate(events) if e.type == "run.finished")
    for n in range(1, last):
        db, workspace = tmp_path / f"cut{n}.db", tmp_path / f"ws{n}"
        run_id = cut_run(events, n, db, workspace)
        worker = scripted_worker(native)
        store = EventStore(db)
        resumed = await scripted_workflow().resume(
            run_id, worker=worker, store=store, workspace=workspace
        )
        assert resumed.output == full.output, n
        if not _in_flight(events[:n]):  # else the model was told that call was cut off
            assert resumed.plan == full.plan, n
            assert [s.answer for s in resumed.steps] == [s.answer for s in full.steps], n
            assert resumed.usage == full.usage, n  # replayed replies count their stored usage
        # no effect twice, none lost: a call cut off mid-way ran once, before the cut
        assert sorted(log_lines(workspace)) == sorted(effects), n
        answered = {e.span_id for e in events[:n] if e.type == "model.completed"}
        assert len(worker.requests) == asked - len(answered), n  # stored replies not asked
        new = store.events(resumed.run_id)
        assert new[0].resumed_from == run_id and new[-1].type == "run.finished"
        assert store.resumed_by(run_id) == resumed.run_id
        replayed = [e for e in new if e.type == "model.completed" and e.replayed]
        assert len(replayed) == len(answered), n
        store.close()
        shutil.rmtree(workspace)


def _in_flight(events) -> set[str]:
    """Spans of tool calls (not workflow steps) that started but had not finished."""
    started = {e.span_id for e in events if e.type == "tool.started" and e.tool != "assign"}
    return started - {e.span_id for e in events if e.type == "tool.finished"}


async def test_a_call_cut_off_mid_way_is_not_run_again(tmp_path):
    _, events, _, _ = await _uninterrupted(tmp_path)
    started = next(
        i for i, e in enumerate(events) if e.type == "tool.started" and e.tool == "record"
    )
    cut = events[started]
    db, workspace = tmp_path / "cut.db", tmp_path / "ws"
    run_id = cut_run(events, started + 1, db, workspace)
    (workspace / "effects.log").unlink()  # say the call never got to write: it must not now
    with EventStore(db) as store:
        resumed = await scripted_workflow().resume(
            run_id, worker=scripted_worker(), store=store, workspace=workspace
        )
        new = store.events(resumed.run_id)
    parsed = next(e for e in events if e.span_id == cut.span_id and e.type == "tool.call.parsed")
    assert parsed.arguments["note"] not in log_lines(workspace)
    assert len(log_lines(workspace)) == 7
    finished = [e for e in new if e.type == "tool.finished" and e.error == INTERRUPTED_CALL]
    assert len(finished) == 1 and finished[0].replayed


async def test_a_resumed_run_can_be_resumed_in_turn(tmp_path):
    full, events, _, effects = await _uninterrupted(tmp_path)
    db, workspace = tmp_path / "cut.db", tmp_path / "ws"
    first = cut_run(events, 9, db, workspace)
    before = log_lines(workspace)  # the effects of the first run, as it was killed
    with EventStore(db) as store:
        resumed = await scripted_workflow().resume(
            first, worker=scripted_worker(), store=store, workspace=workspace
        )
        second = store.events(resumed.run_id)
    # the resumed run's own events, cut short in turn, answer a second resume
    (tmp_path / "ws2").mkdir()
    (tmp_path / "ws2" / "effects.log").write_text("".join(n + "\n" for n in before))
    cut2 = cut_run(second, len(second) // 2, tmp_path / "cut2.db", tmp_path / "ws2")
    with EventStore(tmp_path / "cut2.db") as store:
        again = await scripted_workflow().resume(
            cut2, worker=scripted_worker(), store=store, workspace=tmp_path / "ws2"
        )
    assert again.output == full.output
    assert sorted(log_lines(tmp_path / "ws2")) == sorted(effects)


async def test_only_an_interrupted_run_can_be_resumed(tmp_path):
    full, events, _, _ = await _uninterrupted(tmp_path)
    flow, worker = scripted_workflow(), scripted_worker()
    with EventStore(tmp_path / "full.db") as store:
        with pytest.raises(ResumeError, match="cannot be resumed: it has finished"):
            await flow.resume(full.run_id, worker=worker, store=store)
        with pytest.raises(ResumeError, match="no run with id"):
            await flow.resume("run_nope", worker=worker, store=store)
    db = tmp_path / "cut.db"
    run_id = cut_run(events, 5, db, tmp_path / "ws")
    with EventStore(db) as store:
        store.claim_run(this_owner(run_id))  # alive and beating: this very process
        with pytest.raises(ResumeError, match="still running"):
            await flow.resume(run_id, worker=worker, store=store)
        store.beat(run_id, 1.0)  # alive, but its last beat is long gone: it may wake up
        with pytest.raises(ResumeError, match="stopped beating; stop it first"):
            await flow.resume(run_id, worker=worker, store=store)
    run_id = cut_run(events, 5, tmp_path / "cut2.db", tmp_path / "ws2")
    with EventStore(tmp_path / "cut2.db") as store:
        await flow.resume(run_id, worker=worker, store=store, workspace=tmp_path / "ws2")
        with pytest.raises(ResumeError, match="already resumed as run_"):
            await flow.resume(run_id, worker=worker, store=store)
    run_id = cut_run(events, 5, tmp_path / "cut3.db", tmp_path / "ws3")
    other = scripted_workflow()
    other.name = "other"
    with EventStore(tmp_path / "cut3.db") as store:
        with pytest.raises(ResumeError, match="ran workflow 'default'"):
            await other.resume(run_id, worker=worker, store=store)


async def test_no_owner_recorded_is_unknown_and_not_resumed(tmp_path):
    _, events, _, _ = await _uninterrupted(tmp_path)
    with EventStore(tmp_path / "old.db") as store:
        for event in events[:6]:
            store.append(event)
        assert store.status(events[0].run_id) == "unknown"
        with pytest.raises(ResumeError, match="no recorded owner"):
            await scripted_workflow().resume(
                events[0].run_id, worker=scripted_worker(), store=store
            )


async def test_a_changed_workflow_is_a_clear_divergence_not_a_guess(tmp_path):
    _, events, _, _ = await _uninterrupted(tmp_path)
    db = tmp_path / "cut.db"
    run_id = cut_run(events, 12, db, tmp_path / "ws")
    worker = scripted_worker()
    with EventStore(db) as store:
        changed = scripted_workflow(instructions="Plan differently.")
        with pytest.raises(ResumeDiverged, match="prompt differs from the stored one"):
            await changed.resume(run_id, worker=worker, store=store, workspace=tmp_path / "ws")
        new = store.events(store.resumed_by(run_id))
    assert new[-1].type == "run.failed" and new[-1].error_type == "ResumeDiverged"
    assert worker.requests == []  # nothing was asked live past the divergence
    assert isinstance(new[0], ev.RunStarted) and new[0].resumed_from == run_id


async def test_a_diverged_resume_is_resumed_with_the_right_code(tmp_path):
    """The coder's prompt changed: the search step (unchanged) goes on live while the coder
    diverges. The diverged run is resumed with the original code: it reads what both earlier
    runs did, so the coder's calls done before the kill are still not run again."""
    full, events, _, effects = await _uninterrupted(tmp_path)
    coder = next(
        i for i, e in enumerate(events) if e.type == "tool.finished" and e.tool == "record"
    )
    db, workspace = tmp_path / "cut.db", tmp_path / "ws"
    run_id = cut_run(events, coder + 3, db, workspace)
    with EventStore(db) as store:
        with pytest.raises(ResumeDiverged, match=r"t1/m0 \(agent 'coder'\)") as caught:
            await scripted_workflow(coder="Code differently.").resume(
                run_id, worker=scripted_worker(), store=store, workspace=workspace
            )
        diverged = store.resumed_by(run_id)
        assert f"resume {diverged} (it holds all that was done so far)" in str(caught.value)
        with pytest.raises(ResumeError, match="already resumed"):
            await scripted_workflow().resume(run_id, worker=scripted_worker(), store=store)
        again = await scripted_workflow().resume(
            diverged, worker=scripted_worker(), store=store, workspace=workspace
        )
    assert again.output == full.output
    assert sorted(log_lines(workspace)) == sorted(effects)  # each effect once over three runs


async def test_trace_show_and_the_viewer_link_the_two_runs(tmp_path, capsys):
    _, events, _, _ = await _uninterrupted(tmp_path)
    db = tmp_path / "cut.db"
    run_id = cut_run(events, 20, db, tmp_path / "ws")
    with EventStore(db) as store:
        resumed = await scripted_workflow().resume(
            run_id, worker=scripted_worker(), store=store, workspace=tmp_path / "ws"
        )
        pages = [render_run_html(store.events(r), store.state(r)) for r in (run_id, resumed.run_id)]
    assert f"resumed as run {resumed.run_id}" in pages[0]
    assert f"resumes interrupted run {run_id}" in pages[1] and "replayed" in pages[1]
    assert main(["trace", "show", run_id, "--db", str(db)]) == 0
    assert f"resumed as run {resumed.run_id}" in capsys.readouterr().out
    assert main(["trace", "show", resumed.run_id, "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert f"resumes interrupted run {run_id}" in shown and "(replayed" in shown
