"""The one thread that runs rolepool's in-process model work: loading weights, prefill, decode
steps, `generate`.

On a CPU, torch runs each op on an OpenMP team that belongs to the calling thread, and each thread
that calls into torch gets a team of its own. Once the teams' threads outnumber the cores, GNU
OpenMP stops spinning between parallel regions and parks its threads instead, so every one of the
hundreds of small ops in a decode step pays for waking them. Measured on the shipped dense-s1 (2
cores, 32 rows): a decode step took ~2.9 ms when one thread ran torch and ~4.7 ms once a second
thread had (`bench/pool_throughput.py` runs its baselines here too, for that reason).

So every `TransformersWorker` in a process runs its torch work here, one job at a time, in the
order submitted. Workers in one process compete for the same cores anyway; one thread also means
two models never load concurrently (which can leave meta tensors behind in transformers).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["jobs_waiting", "run_sync", "thread_ident"]

T = TypeVar("T")


class _Thread:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="rolepool-compute", daemon=True
                )
                self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            self._jobs.get()()

    def waiting(self) -> bool:
        return not self._jobs.empty()

    @property
    def ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None


_THREAD = _Thread()


def thread_ident() -> int | None:
    """The compute thread's id (None before its first job)."""
    return _THREAD.ident


def jobs_waiting() -> bool:
    """Whether jobs wait for the compute thread: a long-running job (a decode loop) checks this
    between steps and returns early, so another worker's requests are not starved."""
    return _THREAD.waiting()


def _waker(event: anyio.Event) -> Callable[[], None]:
    """A callable that sets `event` from another thread without waiting for the event loop
    (asyncio's loop or trio's token, whichever runs this task)."""
    native = anyio.lowlevel.current_token().native_token
    if hasattr(native, "call_soon_threadsafe"):
        return lambda: native.call_soon_threadsafe(event.set)
    return lambda: native.run_sync_soon(event.set)


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on the compute thread and return its result (or raise its exception).

    Like `anyio.to_thread.run_sync`, a cancelled caller still waits for `fn` to finish (torch
    work cannot be interrupted), then the cancellation proceeds."""
    done = anyio.Event()
    wake = _waker(done)
    box: dict[str, Any] = {}

    def job() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller, re-raised there
            box["error"] = exc
        try:
            wake()
        except RuntimeError:  # the caller's event loop is gone
            pass

    _THREAD.submit(job)
    with anyio.CancelScope(shield=True):
        await done.wait()
    await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller is cancelled now
    if "error" in box:
        raise box["error"]
    return box["value"]
