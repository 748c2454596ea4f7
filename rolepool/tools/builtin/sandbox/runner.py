"""`run_python`: the coder role's code runner, in a sandboxed subprocess.

The model's code is untrusted, so it runs in a separate interpreter that is set up before the first
line of that code (`child.py`): a clean environment, resource limits, network, mount and PID
namespaces with private size-capped /tmp, /dev/shm and working directory, Landlock on files, a
seccomp filter against Unix sockets, and, when rolepool runs as root, a throwaway unprivileged uid
(root ignores the process-count limit). Where the kernel lacks a part, the run is refused unless
the user set `ROLEPOOL_SANDBOX_ALLOW_WEAK=1`. What is and is not enforced, and the test behind
each promise, is in docs/sandbox.md; keep the two in step.

A failed run (non-zero exit, killed by a limit, timed out, too much output) raises `ToolError`
carrying the same labelled report a successful run returns: the run loop turns it into a tool error,
so the model sees its traceback and the trace and evals see that the code failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import anyio
import anyio.to_thread
from anyio.abc import ByteReceiveStream, ByteSendStream
from pydantic import Field

from rolepool.core import RunContext, ToolError
from rolepool.tools.builtin.sandbox import child
from rolepool.tools.builtin.sandbox.result import (
    NOT_ENFORCED,
    Capture,
    SandboxLimits,
    SandboxResult,
    make_result,
)
from rolepool.tools.builtin.sandbox.uids import UidPool, kill_uid
from rolepool.tools.builtin.snapshot import snapshot_workspace
from rolepool.tools.tool import tool

_CHILD = Path(child.__file__)  # run by path: see its docstring
_MARKER = "--rolepool-sandbox"  # in every sandbox process's command line, to find strays
_log = logging.getLogger(__name__)
_UIDS = UidPool()  # as root, each run's throwaway uid
ALLOW_WEAK = "ROLEPOOL_SANDBOX_ALLOW_WEAK"  # "1": run where the kernel lacks an isolation, loudly
# Read-only for the code besides the interpreter's prefixes: programs, shared libraries, the
# loader's cache, the time zone. Not /etc as a whole (/etc/passwd), not /proc, not /home.
_SYSTEM_FILES = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/localtime")


MAX_SANDBOXES_ENV = "ROLEPOOL_MAX_SANDBOXES"
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def max_sandboxes() -> int:
    """Sandboxes one process runs at once (`$ROLEPOOL_MAX_SANDBOXES`, default twice the cores,
    at least 4): every run's tool calls together, so many runs in one process cannot start
    hundreds of interpreters between them."""
    default = max(4, 2 * (os.cpu_count() or 1))
    try:
        return max(1, int(os.environ.get(MAX_SANDBOXES_ENV, default)))
    except ValueError:
        return default


def _process_slots() -> anyio.CapacityLimiter:
    """The process's sandbox slots, one limiter per event loop (a limiter cannot be shared
    between loops; a process runs its agents on one)."""
    loop = asyncio.get_running_loop()
    limiter = _slots.get(loop)
    if limiter is None:
        limiter = _slots[loop] = anyio.CapacityLimiter(max_sandboxes())
    return limiter


async def run_sandboxed(
    code: str,
    timeout_s: float,
    *,
    parent_dir: Path | None = None,
    limits: SandboxLimits | None = None,
    workspace: Path | None = None,
) -> SandboxResult:
    """Run `code` in a fresh sandbox; never raises for anything the code does.

    The working directory is created under `parent_dir` (or the system temp dir) and removed
    afterwards, whatever happened; every process the run started is dead when this returns, also
    when the caller is cancelled. With `workspace`, it starts as a copy of that directory's files
    (`snapshot_workspace`).
    """
    async with _process_slots():  # past max_sandboxes(), a run waits for one to end
        return await _run_in_workdir(code, timeout_s, parent_dir, limits, workspace)


async def _run_in_workdir(
    code: str,
    timeout_s: float,
    parent_dir: Path | None,
    limits: SandboxLimits | None,
    workspace: Path | None,
) -> SandboxResult:
    limits = limits or SandboxLimits()
    if parent_dir is not None:
        parent_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=parent_dir))
    uid = None
    try:
        if os.geteuid() == 0:
            with anyio.CancelScope(shield=True):  # a leased uid is always released below
                uid = await anyio.to_thread.run_sync(_UIDS.lease)
        if workspace is not None:
            await anyio.to_thread.run_sync(snapshot_workspace, workspace, workdir, uid)
        if uid is not None:
            os.chown(workdir, uid, uid)
        return await _run(code, timeout_s, workdir, uid, limits)
    finally:
        with anyio.CancelScope(shield=True):
            if uid is not None:
                await anyio.to_thread.run_sync(_UIDS.release, uid)
            await anyio.to_thread.run_sync(shutil.rmtree, workdir, True)


async def _run(
    code: str, timeout_s: float, workdir: Path, uid: int | None, limits: SandboxLimits
) -> SandboxResult:
    config = {
        "rlimits": _rlimits(timeout_s, limits),
        "uid": uid,
        "prefixes": _prefixes(),
        "read_only": [*_prefixes(), *_SYSTEM_FILES],
        "workdir": str(workdir),
        "disk_bytes": limits.disk_bytes,
        "tmp_bytes": limits.tmp_bytes,
        "allow_weak": os.environ.get(ALLOW_WEAK) == "1",
    }
    argv = [sys.executable, "-I", str(_CHILD), json.dumps(config), _MARKER]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
           "LANG": "C.UTF-8"}  # fmt: skip
    out = Capture(limits.keep_head, limits.keep_tail)
    err = Capture(limits.keep_head, limits.keep_tail)
    started = time.perf_counter()
    process = await anyio.open_process(
        argv, cwd=workdir, env=env, start_new_session=True
    )  # stdin/stdout/stderr default to pipes
    kill = _killer(process.pid, uid)
    capped = False

    async def pump(stream: ByteReceiveStream | None, capture: Capture) -> None:
        nonlocal capped
        if stream is None:
            return
        async for chunk in stream:
            capture.add(chunk)
            if out.total + err.total > limits.max_output_bytes:
                capped = True
                await kill()
                return

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_feed, process.stdin, code.encode("utf-8", "surrogatepass"))
            tg.start_soon(pump, process.stdout, out)
            tg.start_soon(pump, process.stderr, err)
            with anyio.move_on_after(timeout_s) as timer:
                await process.wait()
            await kill()  # background children die with the run; their pipes then reach EOF
            tg.cancel_scope.deadline = anyio.current_time() + 2
    finally:
        with anyio.CancelScope(shield=True):
            await kill()
            with anyio.move_on_after(5):
                await process.wait()
            await process.aclose()
    result = make_result(process.returncode, out, err, limits, uid, started,
                         timed_out=timer.cancelled_caught, capped=capped)  # fmt: skip
    if result.not_enforced or result.network.startswith(NOT_ENFORCED):
        _log.warning("sandbox ran with weaker isolation (%s=1): %s", ALLOW_WEAK,
                     "; ".join([f"network: {result.network}", *result.not_enforced]))  # fmt: skip
    return result


async def _feed(stream: ByteSendStream | None, data: bytes) -> None:
    if stream is None:
        return
    try:
        await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # the child died before reading its code; the exit status says why
    finally:
        await stream.aclose()


def _rlimits(timeout_s: float, limits: SandboxLimits) -> list[tuple[str, int, int]]:
    cpu = int(timeout_s) + 1
    return [
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_CPU", cpu, cpu + 1),  # SIGXCPU, then SIGKILL a second later
        ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
        ("RLIMIT_FSIZE", limits.file_size_bytes, limits.file_size_bytes),
        ("RLIMIT_NOFILE", limits.open_files, limits.open_files),
        ("RLIMIT_NPROC", limits.max_processes, limits.max_processes),
    ]


def _prefixes() -> list[str]:
    """Where the interpreter's files live (the venv and the base installation)."""
    return sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), sys.prefix,
                   sys.base_prefix})  # fmt: skip


def _killer(pid: int, uid: int | None) -> Callable[[], Awaitable[None]]:
    """Kill the run's process group, and as root every process of its uid: a child that left
    the group with setsid() still dies. The uid sweep scans /proc, so it runs in a worker thread."""

    async def kill() -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if uid is not None:
            await anyio.to_thread.run_sync(kill_uid, uid)

    return kill


# The sandbox enforces `timeout_s` (at most 60 s) itself; the loop's bound only has to exceed it.
@tool(
    roles={"coder"},
    description="Run Python code in a sandbox and return its output.",
    timeout=75,
)
async def run_python(
    ctx: RunContext,
    code: str,
    timeout_s: Annotated[int, Field(ge=1, le=60, description="Wall-clock limit in seconds.")] = 10,
) -> str:
    """Run the model's code in the sandbox (see the module docstring for why it raises).

    Args:
        code: The Python source to run.
    """
    parent = ctx.workspace / ".sandbox" if ctx.workspace is not None else None
    result = await run_sandboxed(code, timeout_s, parent_dir=parent, workspace=ctx.workspace)
    text = result.report(timeout_s)
    if not result.ok:
        raise ToolError(text, tool="run_python")
    return text
