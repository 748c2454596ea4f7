"""`run_python`: the coder role's code runner, in a sandboxed subprocess.

The model's code is untrusted, so it runs in a separate interpreter that is set up before the first
line of that code: a clean environment, resource limits, no network where the kernel lets us make a
network namespace, and, when rolepool runs as root, a throwaway unprivileged uid (root ignores the
process-count limit and may signal or read anything). What is and is not enforced, and the test
behind each promise, is in docs/sandbox.md; keep the two in step.

A failed run (non-zero exit, killed by a limit, timed out, too much output) raises `ToolError`
carrying the same labelled report a successful run returns: the run loop turns it into a tool error,
so the model sees its traceback and the trace and evals see that the code failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import anyio
import anyio.to_thread
from anyio.abc import ByteReceiveStream, ByteSendStream
from pydantic import Field

from rolepool.core import RunContext, ToolError
from rolepool.tools.builtin.sandbox import child
from rolepool.tools.builtin.sandbox.uids import UidPool, kill_uid
from rolepool.tools.builtin.snapshot import snapshot_workspace
from rolepool.tools.tool import tool

_CHILD = Path(child.__file__)  # run by path: see its docstring
_STATUS_PREFIX = child.STATUS_PREFIX.encode()
_MARKER = "--rolepool-sandbox"  # in every sandbox process's command line, to find strays
_UIDS = UidPool()  # as root, each run's throwaway uid
ALLOW_WEAK = "ROLEPOOL_SANDBOX_ALLOW_WEAK"  # "1": run where the kernel lacks an isolation, loudly
# Read-only for the code besides the interpreter's prefixes: programs, shared libraries, the
# loader's cache, the time zone. Not /etc as a whole (/etc/passwd), not /proc, not /home.
_SYSTEM_FILES = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/localtime")


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Output is kept as head + tail per stream so a traceback's last line shows."""

    memory_bytes: int = 512 * 2**20
    max_processes: int = 32
    file_size_bytes: int = 16 * 2**20
    open_files: int = 64
    keep_head: int = 6_000
    keep_tail: int = 3_000
    max_output_bytes: int = 8 * 2**20  # stdout + stderr; beyond it the process group is killed
    disk_bytes: int = 64 * 2**20  # the working directory, a tmpfs: the snapshot and all writes
    tmp_bytes: int = 32 * 2**20  # each of the private /tmp and /dev/shm (tmpfs, so RAM)


@dataclass
class SandboxResult:
    """What happened to one sandboxed run; `ok` is a clean exit with status 0."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    output_capped: bool = False
    network: str = "unknown"
    uid: int | None = None
    setup_error: str | None = None
    duration: float = 0.0
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.output_capped)

    def status(self, timeout_s: float) -> str:
        if self.setup_error:
            return f"sandbox setup failed: {self.setup_error}"
        if self.timed_out:
            return f"killed: wall-clock timeout of {timeout_s:g}s"
        if self.output_capped:
            return f"killed: output over {self.limits.max_output_bytes} bytes"
        code = self.exit_code
        if code is not None and code < 0:
            name = _signal_name(-code)
            why = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (CPU time or memory limit)"}
            return f"killed by {name}{why.get(name, '')}"
        text = f"exit status {code}"
        if code and "MemoryError" in self.stderr[-self.limits.keep_tail :]:
            text += f" (memory limit is {self.limits.memory_bytes // 2**20} MB)"
        return text

    def report(self, timeout_s: float) -> str:
        """The labelled text the model reads, for success and failure alike."""
        parts = [
            self.status(timeout_s),
            f"--- stdout ---\n{self.stdout}",
            f"--- stderr ---\n{self.stderr}",
        ]
        if self.network != "isolated":
            parts.append(f"note: network {self.network}")
        return "\n".join(parts)


class _Capture:
    """Keeps the first `head` and last `tail` bytes of a stream: bounded memory, any volume."""

    def __init__(self, head: int, tail: int) -> None:
        self.head, self.tail = bytearray(), bytearray()
        self.head_max, self.tail_max = head, tail
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_max:
            self.tail += chunk
            del self.tail[: max(0, len(self.tail) - self.tail_max)]

    def text(self) -> str:
        head = bytes(self.head)
        if head.startswith(_STATUS_PREFIX):
            head = head.split(b"\n", 1)[1] if b"\n" in head else b""
        shown = len(self.head) + len(self.tail)
        if self.total > shown:
            marker = (
                f"\n…[truncated: {self.total} bytes in all; showing the first "
                f"{len(self.head)} and the last {len(self.tail)}]…\n"
            )
            return head.decode("utf-8", "replace") + marker + self.tail.decode("utf-8", "replace")
        return (head + bytes(self.tail)).decode("utf-8", "replace")

    def status(self) -> dict[str, object]:
        if not self.head.startswith(_STATUS_PREFIX) or b"\n" not in self.head:
            return {}
        line = bytes(self.head).split(b"\n", 1)[0][len(_STATUS_PREFIX) :]
        try:
            value = json.loads(line)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


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
    out = _Capture(limits.keep_head, limits.keep_tail)
    err = _Capture(limits.keep_head, limits.keep_tail)
    started = time.perf_counter()
    process = await anyio.open_process(
        argv, cwd=workdir, env=env, start_new_session=True
    )  # stdin/stdout/stderr default to pipes
    kill = _killer(process.pid, uid)
    capped = False

    async def pump(stream: ByteReceiveStream | None, capture: _Capture) -> None:
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
    return _result(process.returncode, out, err, limits, uid, started,
                   timed_out=timer.cancelled_caught, capped=capped)  # fmt: skip


def _result(
    code: int | None,
    out: _Capture,
    err: _Capture,
    limits: SandboxLimits,
    uid: int | None,
    started: float,
    *,
    timed_out: bool,
    capped: bool,
) -> SandboxResult:
    """The result, with what the child said it set up (its first stderr line)."""
    status = err.status()
    setup_error = str(status["error"]) if "error" in status else None
    if not status and code == child.SETUP_FAILED:
        setup_error = "the sandbox did not start"
    return SandboxResult(
        exit_code=code,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        output_capped=capped,
        network=str(status.get("network", "unknown")),
        uid=uid,
        setup_error=setup_error,
        duration=time.perf_counter() - started,
        limits=limits,
    )


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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


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
