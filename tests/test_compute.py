"""The compute thread: one thread runs every job, in order; results, errors and cancellation;
the heap tuning it applies when it starts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time

import anyio
import pytest

from rolepool.pools import compute

pytestmark = pytest.mark.anyio


async def test_jobs_run_on_one_thread_that_is_not_the_event_loops():
    seen = [await compute.run_sync(threading.get_ident) for _ in range(5)]
    assert len(set(seen)) == 1
    assert seen[0] != threading.get_ident()
    assert seen[0] == compute.thread_ident()


async def test_concurrent_jobs_run_one_at_a_time_in_submission_order():
    running, order, overlap = [0], [], []

    def job(i: int) -> int:
        running[0] += 1
        overlap.append(running[0])
        time.sleep(0.01)
        order.append(i)
        running[0] -= 1
        return i * i

    results: dict[int, int] = {}

    async def call(i: int) -> None:
        results[i] = await compute.run_sync(job, i)

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(call, i)
            await anyio.sleep(0)  # submit in order
    assert max(overlap) == 1
    assert order == list(range(6))
    assert results == {i: i * i for i in range(6)}


async def test_an_exception_reaches_the_caller_and_the_thread_survives():
    def boom() -> None:
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        await compute.run_sync(boom)
    assert await compute.run_sync(lambda: 7) == 7


async def test_a_cancelled_caller_waits_for_the_job_then_is_cancelled():
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    with anyio.move_on_after(0.02) as scope:
        await compute.run_sync(slow)
    assert scope.cancelled_caught
    assert finished.is_set()  # torch work cannot be interrupted: the caller waited for it


async def test_jobs_waiting_is_seen_by_a_running_job():
    release = threading.Event()
    seen: list[bool] = []

    def first() -> None:
        release.wait(5)
        seen.append(compute.jobs_waiting())

    async with anyio.create_task_group() as tg:
        tg.start_soon(compute.run_sync, first)
        await anyio.sleep(0.05)
        tg.start_soon(compute.run_sync, lambda: None)
        await anyio.sleep(0.05)
        release.set()
    assert seen == [True]


_HEAP_PROBE = """
import ctypes, sys
from rolepool.pools import compute

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tune":
    print("tuned" if compute.tune_heap() else "untuned")
before = libc.mallinfo2().hblks
block = libc.malloc(4 << 20)
print("mmapped" if libc.mallinfo2().hblks > before else "heap")
libc.free(block)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap tuning is for glibc only")
@pytest.mark.parametrize(
    ("mode", "env", "expected"),
    [
        ("default", "1", ["mmapped"]),
        ("tune", "1", ["tuned", "heap"]),
        ("tune", "0", ["untuned", "mmapped"]),
    ],
)
def test_heap_tuning_keeps_mib_sized_blocks_in_the_heap_unless_turned_off(mode, env, expected):
    out = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE, mode],
        env={**os.environ, compute.HEAP_ENV: env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == expected


async def test_the_compute_thread_tunes_the_heap_when_it_starts():
    await compute.run_sync(lambda: None)
    assert compute.heap_tuned() is (platform.libc_ver()[0] == "glibc")


_EXIT_PROBE = """
import torch
from rolepool.pools import compute

def decode_loop():
    x = torch.randn(128, 128)
    while not compute.jobs_waiting():  # what a decode loop checks between steps
        x = torch.tanh(x @ x)
    print("returned at exit", flush=True)

compute._THREAD.submit(decode_loop)
"""


def test_at_exit_a_running_job_is_asked_to_return_and_the_thread_ends_first():
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_PROBE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "returned at exit"
