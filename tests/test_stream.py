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
