"""glibc heap tuning for torch work on a CPU, shared by the pool's compute thread
(`rolepool.pools.compute`) and zoo training (`rolepool.zoo.train`). It lives beside the packages,
importing nothing of rolepool, so that neither of them imports the other for it.

A prefill, a decode step or a training step allocates many short-lived tensors of 128 KiB to a few
MiB. By default glibc serves blocks that large with a fresh `mmap` and returns freed memory above
128 KiB to the kernel, so every such tensor pays page faults on first touch. Measured on the shipped
dense-s1 (2-core CPU, the 64 prefills of `bench/pool_throughput.py`, ad hoc timing): 177 ms with
glibc's defaults, 120 ms with the heap keeping blocks up to 32 MiB and trimming only above 64 MiB;
setting the first alone gained nothing. The cost is that the process keeps up to 64 MiB of freed
heap. `ROLEPOOL_HEAP_TUNING=0` turns it off; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["HEAP_ENV", "tune_heap"]

HEAP_ENV = "ROLEPOOL_HEAP_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit
_TRIM_THRESHOLD = 64 << 20


def tune_heap() -> bool:
    """Have glibc keep blocks up to 32 MiB in its heap and trim only above 64 MiB (see the
    module's docstring); True if it took effect. Off with `ROLEPOOL_HEAP_TUNING=0`, and a no-op
    on other C libraries."""
    if os.environ.get(HEAP_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
