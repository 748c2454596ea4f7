"""What one sandboxed run did: its limits, its captured output and the labelled report.

The child's first stderr line says what isolation it set up (see `child.py`); `SandboxResult`
carries each part, and its report warns the model, loudly, about any part that was not enforced
(only possible when the user accepted weaker isolation, `ROLEPOOL_SANDBOX_ALLOW_WEAK=1`).
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field

from rolepool.tools.builtin.sandbox import child

_STATUS_PREFIX = child.STATUS_PREFIX.encode()
NOT_ENFORCED = "NOT ENFORCED"


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
    network: str = "unknown"  # "isolated": a network namespace of its own
    filesystem: str = "unknown"  # "confined (Landlock ABI n)"
    unix_sockets: str = "unknown"  # "refused (seccomp)"
    mounts: str = "unknown"  # "private tmpfs: ..." (/tmp, /dev/shm, the working directory)
    signals: str = "unknown"  # how signals to processes outside the sandbox are refused
    uid: int | None = None
    setup_error: str | None = None
    duration: float = 0.0
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    @property
    def not_enforced(self) -> list[str]:
        """Each isolation besides the network that this run went without, as "name: why"."""
        parts = {"filesystem": self.filesystem, "unix_sockets": self.unix_sockets,
                 "mounts": self.mounts, "signals": self.signals}  # fmt: skip
        return [f"{k}: {v}" for k, v in parts.items() if v.startswith(NOT_ENFORCED)]

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
        parts += [f"WARNING: sandbox isolation {item}" for item in self.not_enforced]
        return "\n".join(parts)


class Capture:
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


def make_result(
    code: int | None,
    out: Capture,
    err: Capture,
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
        filesystem=str(status.get("filesystem", "unknown")),
        unix_sockets=str(status.get("unix_sockets", "unknown")),
        mounts=str(status.get("mounts", "unknown")),
        signals=str(status.get("signals", "unknown")),
        uid=uid,
        setup_error=setup_error,
        duration=time.perf_counter() - started,
        limits=limits,
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
