"""Fan-out of a run's events to any number of subscribers, durable store first.

`emit` is synchronous and never waits for a subscriber: it commits the event to the store (when
there is one), appends it to an in-memory buffer and wakes the subscribers. Each subscriber reads
the buffer at its own pace from its own cursor, so a slow subscriber cannot stall the run.

Memory holds the newest `buffer` to `2 * buffer` events. When a consumer falls behind (or
subscribes late) by more than that, the events it still needs have left the memory buffer; it
then reads them back from the event store, so it still sees every event, in order. Only a
stream without a store can lose events for a lagging subscriber, and then not silently: the
subscriber's iteration raises `EventsLost` saying how many it missed.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from rolepool.core import Event, EventsLost
from rolepool.runtime.store import EventStore

Listener = Callable[[Event], None]


class EventStream:
    """The events of one run, in order, with `seq` = position in the run."""

    def __init__(
        self, run_id: str, *, store: EventStore | None = None, buffer: int = 10_000
    ) -> None:
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self.run_id = run_id
        self.store = store
        self._buffer_size = buffer
        self._events: list[Event] = []
        self._base = 0  # seq of self._events[0]
        self._next_seq = 0
        self._closed = False
        self._wakeup = anyio.Event()
        self._armed = False  # a subscriber waits on _wakeup: only then is waking worth its cost
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Listener] = []

    @property
    def emitted(self) -> int:
        return self._next_seq

    @property
    def closed(self) -> bool:
        return self._closed

    def emit(self, event: Event) -> Event:
        """Number, persist and publish one event. Returns it with `seq` set."""
        if self._closed:
            raise RuntimeError(f"event stream of {self.run_id} is closed")
        event.seq = self._next_seq
        if self.store is not None:
            self.store.append(event)
        self._next_seq += 1
        self._events.append(event)
        for listener in self._listeners:
            listener(event)
        self._trim()
        self._wake()
        return event

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` synchronously on every emit (exporters, metrics, live views).

        A listener must be fast and must not raise; it runs on the run's own path.
        """
        self._listeners.append(listener)

    def close(self) -> None:
        """No more events: subscribers finish once they have read what was emitted."""
        self._closed = True
        self._armed = True
        self._wake()

    def subscribe(self, *, from_seq: int = 0) -> Subscription:
        """Iterate the run's events from `from_seq` (default: the first) as they arrive."""
        sub = Subscription(self, from_seq)
        self._subscribers.add(sub)
        return sub

    def _wake(self) -> None:
        if self._armed:
            self._armed = False
            self._wakeup.set()
            self._wakeup = anyio.Event()

    def _trim(self) -> None:
        """Keep the newest `buffer` events in memory, trimming in chunks to stay O(1) per emit."""
        if len(self._events) < 2 * self._buffer_size:
            return
        keep_from = self._next_seq - self._buffer_size
        del self._events[: keep_from - self._base]
        self._base = keep_from

    def _read(self, cursor: int) -> list[Event]:
        """Events from `cursor` on: from memory, or from the store for what left memory."""
        if cursor >= self._base:
            return self._events[cursor - self._base :]
        if self.store is not None:
            older = self.store.events(self.run_id, after_seq=cursor - 1, limit=self._base - cursor)
            if len(older) == self._base - cursor:
                return older
        raise EventsLost(
            f"subscriber fell {self._base - cursor} events behind run {self.run_id} and "
            "no event store holds them; subscribe with a store or consume faster"
        )


class Subscription:
    """An async iterator over a stream's events; leave early with `aclose()` or `break`."""

    def __init__(self, stream: EventStream, cursor: int) -> None:
        self._stream = stream
        self.cursor = cursor
        self._pending: list[Event] = []

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            stream = self._stream
            if self.cursor < stream._next_seq:
                self._pending = stream._read(self.cursor)[::-1]
                continue
            if stream.closed:
                await self.aclose()
                raise StopAsyncIteration
            stream._armed = True
            await stream._wakeup.wait()
        event = self._pending.pop()
        self.cursor = event.seq + 1
        return event

    async def aclose(self) -> None:
        self._stream._subscribers.discard(self)
