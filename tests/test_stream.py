"""The event stream: fan-out, late and slow subscribers, and what happens when one falls behind."""

from __future__ import annotations

import anyio
import pytest

from rolepool.core import EventsLost
from rolepool.core.events import RunStarted
from rolepool.runtime import EventStore, EventStream

pytestmark = pytest.mark.anyio


def ev(run_id: str = "run_x", i: int = 0) -> RunStarted:
    return RunStarted(run_id=run_id, task=f"t{i}")


async def test_several_subscribers_each_get_every_event_in_order():
    stream = EventStream("run_x", store=None)
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def consume(name: str, delay: float) -> None:
        async for event in stream.subscribe():
            seen[name].append(event.seq)
            await anyio.sleep(delay)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume, "a", 0)
        tg.start_soon(consume, "b", 0.001)
        await anyio.sleep(0)
        for i in range(50):
            stream.emit(ev(i=i))
            if i % 10 == 0:
                await anyio.sleep(0)
        stream.close()
    assert seen["a"] == seen["b"] == list(range(50))


async def test_late_subscriber_starts_from_the_first_event():
    stream = EventStream("run_x", store=None)
    for i in range(5):
        stream.emit(ev(i=i))
    stream.close()
    assert [e.seq async for e in stream.subscribe()] == [0, 1, 2, 3, 4]
    assert [e.seq async for e in stream.subscribe(from_seq=3)] == [3, 4]


async def test_emit_never_waits_for_a_stalled_subscriber():
    stream = EventStream("run_x", store=None, buffer=10)
    sub = stream.subscribe()
    for i in range(1000):  # synchronous: would deadlock if emit waited for the reader
        stream.emit(ev(i=i))
    assert stream.emitted == 1000
    await sub.aclose()


async def test_lagging_subscriber_without_store_gets_an_explicit_error():
    stream = EventStream("run_x", store=None, buffer=10)
    sub = stream.subscribe()
    for i in range(100):
        stream.emit(ev(i=i))
    stream.close()
    with pytest.raises(EventsLost, match="fell 90 events behind"):
        await sub.__anext__()


async def test_lagging_subscriber_catches_up_from_the_store(tmp_path):
    store = EventStore(tmp_path / "e.db")
    stream = EventStream("run_lag", store=store, buffer=10)
    sub = stream.subscribe()
    first = await _first_after_emit(stream, sub)
    for i in range(1, 500):
        stream.emit(ev("run_lag", i))
    stream.close()
    rest = [e.seq async for e in sub]
    assert [first] + rest == list(range(500))
    assert [e.task for e in store.events("run_lag")][-1] == "t499"


async def _first_after_emit(stream: EventStream, sub) -> int:
    stream.emit(ev(stream.run_id, 0))
    return (await sub.__anext__()).seq


async def test_emit_after_close_is_an_error():
    stream = EventStream("run_x", store=None)
    stream.close()
    with pytest.raises(RuntimeError):
        stream.emit(ev())


async def test_listener_sees_events_synchronously():
    stream = EventStream("run_x", store=None)
    got = []
    stream.add_listener(got.append)
    stream.emit(ev())
    assert [e.seq for e in got] == [0]


async def test_with_a_store_an_event_is_published_only_once_committed(tmp_path):
    store = EventStore(tmp_path / "e.db")
    stream = EventStream("run_gc", store=store)
    seen: list[tuple[int, int]] = []  # (seq, events stored when the listener saw it)
    stream.add_listener(lambda e: seen.append((e.seq, len(store.events("run_gc")))))
    for i in range(3):
        stream.emit(ev("run_gc", i))
    assert stream.emitted == 3 and stream.published == 0 and seen == []
    await anyio.sleep(0)  # the next loop iteration commits the group, then publishes it
    assert seen == [(0, 3), (1, 3), (2, 3)]
    assert stream.published == 3


async def test_one_transaction_per_loop_iteration_across_runs(tmp_path):
    store = EventStore(tmp_path / "e.db")
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    streams = [EventStream(f"run_{i}", store=store) for i in range(5)]
    for _ in range(20):
        for stream in streams:
            stream.emit(ev(stream.run_id))
    await anyio.sleep(0)
    assert len(commits) == 1
    assert all(len(store.events(s.run_id)) == 20 for s in streams)


async def test_close_commits_and_publishes_what_is_pending(tmp_path):
    store = EventStore(tmp_path / "e.db")
    stream = EventStream("run_c", store=store)
    sub = stream.subscribe()
    for i in range(5):
        stream.emit(ev("run_c", i))
    stream.close()  # a run's end: no loop iteration needed
    assert len(store.events("run_c")) == 5
    assert [e.seq async for e in sub] == [0, 1, 2, 3, 4]


def test_outside_an_event_loop_emit_commits_before_returning(tmp_path):
    store = EventStore(tmp_path / "e.db")
    stream = EventStream("run_sync", store=store)
    got = []
    stream.add_listener(got.append)
    stream.emit(ev("run_sync"))
    assert [e.seq for e in store.events("run_sync")] == [0] and len(got) == 1


async def test_a_failed_commit_is_raised_never_published(tmp_path):
    store = EventStore(tmp_path / "e.db")
    stream = EventStream("run_f", store=store)
    got = []
    stream.add_listener(got.append)
    sub = stream.subscribe()
    store._db.execute("DROP TABLE events")  # every later insert fails
    stream.emit(ev("run_f"))
    await anyio.sleep(0)
    assert got == [] and stream.published == 0
    with pytest.raises(Exception, match="no such table"):
        stream.emit(ev("run_f"))
    with pytest.raises(Exception, match="no such table"):
        await sub.__anext__()


async def test_listeners_run_in_the_emitters_context(tmp_path):
    """Publication comes later than the emit, in a loop callback; listeners (OTel reads the
    current span from context) must still see the context of the task that emitted."""
    import contextvars

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    store = EventStore(tmp_path / "e.db")
    streams = {name: EventStream(f"run_{name}", store=store) for name in ("a", "b")}
    seen: list[tuple[str, str]] = []
    for stream in streams.values():
        stream.add_listener(lambda e: seen.append((e.run_id, who.get())))

    async def emit_as(name: str) -> None:
        who.set(name)
        streams[name].emit(ev(f"run_{name}"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(emit_as, "a")
        tg.start_soon(emit_as, "b")
    await anyio.sleep(0)
    assert sorted(seen) == [("run_a", "a"), ("run_b", "b")]
