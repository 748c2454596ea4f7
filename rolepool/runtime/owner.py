"""Who owns a run, and whether that owner is still there: the liveness behind `trace list`.

A run records its owner (process id, host, and the process's start time, so a reused pid is not
mistaken for the owner) and a heartbeat in the event store. An unfinished run is `running` while
its owner is alive and its heartbeat fresh; `interrupted` once the owner is gone: a dead process on
this host, or (on another host, where the pid cannot be checked) a heartbeat older than
`STALE_AFTER` intervals. An owner that is alive on this host but has stopped beating (stopped with
SIGSTOP, or its event loop blocked) is `stalled`: not running, and not safe to resume either, since
it may wake up and go on.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from functools import cache
from typing import Literal

HEARTBEAT_INTERVAL = 2.0
"""Seconds between a run's heartbeats: one UPDATE of one row each time."""
STALE_AFTER = 6
"""Heartbeat intervals without a beat after which an owner counts as gone (or stalled)."""

Liveness = Literal["running", "interrupted", "stalled"]


@dataclass(frozen=True)
class RunOwner:
    """The process that runs (or ran) a run, as stored beside its events."""

    run_id: str
    pid: int
    host: str
    process_start: float | None
    """When the process started (seconds since the epoch), to tell it from a later process
    with the same pid; None where the platform does not say."""
    heartbeat: float
    """The last beat (seconds since the epoch)."""
    interval: float
    """Seconds between beats the owner promised."""
    resumed_from: str | None = None
    """The interrupted run this run continues, if any."""


def process_start(pid: int) -> float | None:
    """The start time of process `pid` from /proc (Linux), or None where there is none."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def _stat(pid: int) -> tuple[str, float | None] | None:
    """The process's state letter (Z: a zombie, dead but not reaped) and start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        state, ticks = fields[0].decode(), int(fields[19])  # fields 3 and 22 (starttime)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    boot = _boot_time()
    return state, None if boot is None else round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)


@cache
def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def this_host() -> str:
    return socket.gethostname()


def this_owner(run_id: str, resumed_from: str | None = None) -> RunOwner:
    """The current process as the owner of `run_id`, beating now."""
    pid = os.getpid()
    return RunOwner(
        run_id=run_id,
        pid=pid,
        host=this_host(),
        process_start=process_start(pid),
        heartbeat=time.time(),
        interval=HEARTBEAT_INTERVAL,
        resumed_from=resumed_from,
    )


def process_alive(pid: int, started: float | None) -> bool:
    """Whether process `pid` on this host exists and is the one that started at `started`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _stat(pid)
    if stat is None:  # no /proc to look at: the pid exists, which is all we know
        return True
    state, start = stat
    if state in ("Z", "X"):  # exited, waiting to be reaped
        return False
    return started is None or start is None or abs(start - started) < 1.0


def liveness(owner: RunOwner, now: float | None = None) -> Liveness:
    """What an unfinished run's owner says about the run (see the module docstring)."""
    now = time.time() if now is None else now
    fresh = now - owner.heartbeat <= STALE_AFTER * owner.interval
    if owner.host != this_host():
        return "running" if fresh else "interrupted"
    if not process_alive(owner.pid, owner.process_start):
        return "interrupted"
    return "running" if fresh else "stalled"
