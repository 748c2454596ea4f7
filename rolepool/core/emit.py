"""How layers below the runtime report events without importing it.

The runtime sets the current run's emitter for everything a run does (`emitting`); a pool or a
worker calls `emit(event)` from the task that is serving the request, and the event lands in that
run's stream. Outside a run, `emit` does nothing. Background tasks shared by many runs (a worker's
batching loop) must not emit: they would inherit whichever run happened to start them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rolepool.core.events import Event

Emitter = Callable[[Event], object]
_current: ContextVar[Emitter | None] = ContextVar("rolepool_emitter", default=None)


def emit(event: Event) -> None:
    """Send `event` to the current run's stream, if there is a current run."""
    emitter = _current.get()
    if emitter is not None:
        emitter(event)


def current_emitter() -> Emitter | None:
    return _current.get()


@contextmanager
def emitting(emitter: Emitter) -> Iterator[None]:
    """Make `emitter` the current one for the code (and tasks started) inside the block."""
    token = _current.set(emitter)
    try:
        yield
    finally:
        _current.reset(token)
