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

When the thread starts, it also tunes glibc's heap for this work (`tune_heap`, from
`rolepool.heap`, which says why and what it measured). `ROLEPOOL_HEAP_TUNING=0` turns it off.
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from rolepool.heap import HEAP_ENV, tune_heap

__all__ = [
    "HEAP_ENV",
    "heap_tuned",
    "jobs_waiting",
    "loop_caller",
    "run_sync",
    "thread_ident",
    "tune_heap",
]

T = TypeVar("T")


class _Thread:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.heap_tuned: bool | None = None
        self.stopping = False

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self.heap_tuned is None:
                self.heap_tuned = tune_heap()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="rolepool-compute", daemon=True
                )
                self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def waiting(self) -> bool:
        return self.stopping or not self._jobs.empty()

    def stop(self, timeout: float) -> None:
        """At interpreter exit: let the running job end (a decode loop returns at its next step,
        since `waiting()` now says so) and the thread finish, before C++ runtime teardown. A
        thread still inside torch while the process exits aborts it ("terminate called without
        an active exception"): seen on Ctrl-C during `rolepool eval`."""
        self.stopping = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._jobs.put(None)
            thread.join(timeout)

    @property
    def ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None


_THREAD = _Thread()
atexit.register(_THREAD.stop, 30.0)


def thread_ident() -> int | None:
    """The compute thread's id (None before its first job)."""
    return _THREAD.ident


def heap_tuned() -> bool | None:
    """Whether `tune_heap` took effect when the compute thread first started (None: not yet)."""
    return _THREAD.heap_tuned


def jobs_waiting() -> bool:
    """Whether jobs wait for the compute thread: a long-running job (a decode loop) checks this
    between steps and returns early, so another worker's requests are not starved."""
    return _THREAD.waiting()


def loop_caller() -> Callable[..., None]:
    """A function that, called from any thread, schedules `fn(*args)` on the event loop running
    the calling task (asyncio's loop or trio's token) without waiting for it; calls made after
    that loop has closed are dropped."""
    native = anyio.lowlevel.current_token().native_token
    soon = getattr(native, "call_soon_threadsafe", None) or native.run_sync_soon

    def call(fn: Callable[..., Any], *args: Any) -> None:
        try:
            soon(fn, *args)
        except RuntimeError:  # the loop is gone
            pass

    return call


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` on the compute thread and return its result (or raise its exception).

    Like `anyio.to_thread.run_sync`, a cancelled caller still waits for `fn` to finish (torch
    work cannot be interrupted), then the cancellation proceeds."""
    done = anyio.Event()
    call = loop_caller()
    box: dict[str, Any] = {}

    def job() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller, re-raised there
            box["error"] = exc
        call(done.set)

    _THREAD.submit(job)
    with anyio.CancelScope(shield=True):
        await done.wait()
    await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller is cancelled now
    if "error" in box:
        raise box["error"]
    return box["value"]
