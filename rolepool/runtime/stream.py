"""Fan-out of a run's events to any number of subscribers, durable store first.

`emit` is synchronous and never waits for a subscriber. It numbers the event and, with a store,
hands it to the store's group commit (`EventStore.append_soon`): every event emitted in one
event-loop iteration, by any run sharing the store, is committed in one transaction at the start of
the next iteration, and only then published: appended to the in-memory buffer, passed to the
listeners, and made readable by subscribers. So nobody observes an event that a crash could still
lose. Without a store (or outside an event loop) an event is published before `emit` returns.
`close()` (a run's end) commits and publishes whatever is still pending. Each subscriber reads the
buffer at its own pace from its own cursor, so a slow subscriber cannot stall the run.

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
        self,
        run_id: str,
        *,
        store: EventStore | None = None,
        buffer: int = 10_000,
        tenant: str | None = None,
    ) -> None:
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self.run_id = run_id
        self.tenant = tenant
        """Stamped on every event this stream emits (`EventBase.tenant`)."""
        self.store = store
        self._buffer_size = buffer
        self._events: list[Event] = []
        self._base = 0  # seq of self._events[0]
        self._next_seq = 0  # emitted so far
        self._published = 0  # committed (when there is a store) and visible to readers
        self._failure: BaseException | None = None  # the store could not commit an event
        self._closed = False
        # set when a subscriber waits; made by the waiter, so an emit nobody waits for is cheap
        self._wakeup: anyio.Event | None = None
        self._event_type: Callable[[], anyio.Event] | None = None
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Listener] = []

    @property
    def emitted(self) -> int:
        return self._next_seq

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def published(self) -> int:
        """Events that subscribers and listeners can see: with a store, only committed ones."""
        return self._published

    def emit(self, event: Event) -> Event:
        """Number one event, and persist and publish it (see the module docstring for when).
        Returns it with `seq` set. Raises the store's error once a commit has failed."""
        if self._closed:
            raise RuntimeError(f"event stream of {self.run_id} is closed")
        if self._failure is not None:
            raise self._failure
        event.seq = self._next_seq
        if self.tenant is not None:
            event.tenant = self.tenant
        self._next_seq += 1
        if self.store is None:
            self.committed(event)
        else:
            self.store.append_soon(event, self)
            if self._failure is not None:
                raise self._failure
        return event

    def committed(self, event: Event) -> None:
        """Publish `event` (the store calls this once it is durable)."""
        self._events.append(event)
        self._published = event.seq + 1
        for listener in self._listeners:
            listener(event)
        self._trim()
        self._wake()

    def commit_failed(self, error: BaseException) -> None:
        """The store lost a commit: the next emit raises `error`, subscribers get it too."""
        self._failure = error
        self._wake()

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` for every event as it is published (exporters, metrics, live
        views): at once without a store; with one, right after the commit of its group, within
        one event-loop iteration of the emit. A listener must be fast and must not raise; it
        runs on the run's own path.
        """
        self._listeners.append(listener)

    def close(self) -> None:
        """No more events: commit what is pending; subscribers finish once they have read it."""
        try:
            if self.store is not None:
                self.store.flush()
        finally:
            self._closed = True
            self._wake()
        if self._failure is not None:
            raise self._failure

    def subscribe(self, *, from_seq: int = 0) -> Subscription:
        """Iterate the run's events from `from_seq` (default: the first) as they arrive."""
        sub = Subscription(self, from_seq)
        self._subscribers.add(sub)
        return sub

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    async def _wait(self) -> None:
        """Wait for the next publication, close or failure."""
        if self._wakeup is None:
            if self._event_type is None:  # anyio.Event() looks up the async backend each time;
                self._wakeup = anyio.Event()  # the backend's own class does not
                self._event_type = type(self._wakeup)
            else:
                self._wakeup = self._event_type()
        await self._wakeup.wait()

    def _trim(self) -> None:
        """Keep the newest `buffer` events in memory, trimming in chunks to stay O(1) per emit."""
        if len(self._events) < 2 * self._buffer_size:
            return
        keep_from = self._published - self._buffer_size
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
        self._chunk: list[Event] = []  # read but not yet handed out, from self._next on
        self._next = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while self._next >= len(self._chunk):
            stream = self._stream
            if self.cursor < stream._published:
                self._chunk, self._next = stream._read(self.cursor), 0
                continue
            if stream._failure is not None:
                raise stream._failure
            if stream.closed:
                await self.aclose()
                raise StopAsyncIteration
            await stream._wait()
        event = self._chunk[self._next]
        self._next += 1
        self.cursor += 1
        return event

    async def aclose(self) -> None:
        self._stream._subscribers.discard(self)
