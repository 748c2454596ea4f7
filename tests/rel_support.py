"""Shared pieces of the reliability tests (tests/test_rel_*.py): a real `rolepool serve` in a
child process that the test may kill, and the checks every run's event log must pass."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

SERVER_TEMPLATE = """
import sys, anyio
from rolepool import FunctionWorker
from rolepool.pools.server_run import bind, serve

{worker_code}

async def main():
    sock = bind("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    # answers to the worker's name and to "tiny", the name the tests' clients send
    models = list(dict.fromkeys([worker.info.name, "tiny"]))
    await serve(worker, sock=sock, log_level="warning", models=models, {serve_kwargs})

anyio.run(main)
"""


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        """Resident memory of the server process, from /proc (Linux)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")


@contextmanager
def server_process(worker_code: str, serve_kwargs: str = "", env=None) -> Iterator[ServerProcess]:
    """`serve(worker)` in a child process on a free loopback port. `worker_code` must bind a
    name `worker`. Waits until /health answers; kills the child on exit."""
    script = SERVER_TEMPLATE.format(
        worker_code=textwrap.dedent(worker_code), serve_kwargs=serve_kwargs
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else os.environ.copy(),
    )
    try:
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()}")
        url = f"http://127.0.0.1:{int(line)}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server never answered /health")
            time.sleep(0.05)
        yield ServerProcess(url, proc)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def check_run_log(events, *, finished: bool = True) -> None:
    """A run's event log is whole: seq 0..n-1 exactly once, one start, one end, last."""
    seqs = [e.seq for e in events]
    assert seqs == list(range(len(events))), f"gaps or duplicates in seq: {seqs}"
    kinds = Counter(e.type for e in events)
    assert events[0].type == "run.started" and kinds["run.started"] == 1
    ends = kinds["run.finished"] + kinds["run.failed"]
    assert ends == 1 and events[-1].type in ("run.finished", "run.failed")
    if finished:
        assert events[-1].type == "run.finished", events[-1]
    assert kinds["tool.started"] == kinds["tool.finished"]
    assert kinds["model.requested"] == kinds["model.completed"]
    assert kinds["agent.started"] == kinds["agent.finished"]
