"""Throwaway uids for sandboxes run as root, and the sweep that kills every process of one.

Root ignores `RLIMIT_NPROC` and may signal or read anything, so as root each run gets a uid that
no account and no process uses: the kernel then counts only that run's processes, and clean-up may
kill every process of the uid, also children that left the run's process group. Both scan `/proc`
and may sleep: call them from a worker thread, never on the event loop.
"""

from __future__ import annotations

import os
import pwd
import signal
import threading
import time

from rolepool.core import ToolError


class UidPool:
    """Leases uids from `uids` (never in /etc/passwd) to one run at a time."""

    def __init__(self, uids: range = range(60100, 61000)) -> None:
        self._uids = uids
        self._leased: set[int] = set()
        self._next = 0  # round-robin start: a just-freed uid may still own zombies
        self._lock = threading.Lock()

    def lease(self) -> int:
        """A uid no account and no process uses (zombies count: they hold `RLIMIT_NPROC`)."""
        with self._lock:
            busy = {uid for _, uid, _ in processes()}
            for step in range(len(self._uids)):
                uid = self._uids[(self._next + step) % len(self._uids)]
                if uid in self._leased or uid in busy or _has_account(uid):
                    continue
                self._next = (self._next + step + 1) % len(self._uids)
                self._leased.add(uid)
                return uid
        raise ToolError("no free sandbox uid: too many concurrent runs", tool="run_python")

    def release(self, uid: int) -> None:
        """Kill what is left of `uid`'s processes, then free it for another run."""
        kill_uid(uid)
        with self._lock:
            self._leased.discard(uid)


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def processes() -> list[tuple[int, int, bool]]:
    """(pid, real uid, is a zombie) of every process."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        zombie = fields.get("State", "").strip().startswith("Z")
        found.append((int(entry.name), int(fields.get("Uid", "-1").split()[0]), zombie))
    return found


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left (a fork bomb races the sweep)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = [pid for pid, owner, zombie in processes() if owner == uid and not zombie]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
