"""SECURITY.md, promise 3: sandbox escapes through `run_python`, end to end.

tests/test_sandbox.py checks each limit of the sandbox on its own; here a model asks for each
escape inside a real agent run, and the test checks the escape is contained (nothing leaks or
survives), reported (the model reads what happened, `tool.finished` carries it) and survivable
(the run goes on to a final answer). Rows of docs/sandbox.md marked "as root" skip otherwise.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from rel_support import check_run_log

from rolepool import Agent, FunctionWorker
from rolepool.core import Request
from rolepool.runtime import Limits
from rolepool.runtime.run import resolve_store
from rolepool.tools.builtin import run_python
from rolepool.tools.builtin.sandbox.confine import landlock_abi

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]
ROOT = os.geteuid() == 0
FILES_CONFINED = ROOT or landlock_abi() >= 1  # as non-root, Landlock confines files
SIGNALS_CONFINED = ROOT or landlock_abi() >= 6  # as non-root, Landlock's signal scope


def sandbox_pids(under: Path) -> list[int]:
    """Live sandbox processes (by their command-line marker) working under `under`: other
    test sessions on the same machine may run sandboxes of their own at the same time."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if b"--rolepool-sandbox" not in f.read():
                        continue
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(under)):
                pids.append(int(entry.name))
    return pids


def coder_running(code: str, timeout_s: int) -> FunctionWorker:
    def fn(request: Request) -> str:
        last = request.messages[-1]
        if last.role == "tool":
            return "REPORT\n" + last.content
        call = {"name": "run_python", "arguments": {"code": code, "timeout_s": timeout_s}}
        return json.dumps(call)

    return FunctionWorker(fn, name="coder-model")


async def escape(code: str, tmp_path: Path, timeout_s: int = 5) -> tuple[str, object]:
    """Run `code` through a coder agent; returns what the model read back and tool.finished."""
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    agent = Agent("coder", role="coder", tools=[run_python])
    result = await agent.run(
        "escape",
        worker=coder_running(code, timeout_s),
        workspace=workspace,
        limits=Limits(deadline=60),
    )
    events = resolve_store(None).events(result.run_id)
    check_run_log(events)
    (finished,) = [e for e in events if e.type == "tool.finished"]
    assert result.output.startswith("REPORT\n")
    assert sandbox_pids(tmp_path) == []  # nothing the code started outlives the run
    assert not list((workspace / ".sandbox").glob("*"))  # working directory removed
    return result.output, finished


async def test_secrets_in_the_environment_never_reach_the_code(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-rel-test-not-real-0123456789")
    monkeypatch.setenv("ROLEPOOL_SERVE_API_KEY", "serve-token-rel-test")
    code = "import os\nprint(dict(os.environ))"
    output, finished = await escape(code, tmp_path)
    assert finished.error is None
    assert "sk-rel-test" not in output and "serve-token-rel-test" not in output
    assert "OPENAI_API_KEY" not in output


@pytest.mark.skipif(not FILES_CONFINED, reason="as non-root, needs Landlock (docs/sandbox.md)")
async def test_reading_and_writing_outside_the_workspace_is_refused(tmp_path):
    place = Path(tempfile.mkdtemp(prefix="rolepool-outside-", dir="/var/tmp"))  # not /tmp: private
    secret = place / "secret.txt"
    secret.write_text("the launch codes")
    secret.chmod(0o600)
    outside = place / "planted.txt"
    code = (
        f"for attempt in (lambda: print(open({str(secret)!r}).read()),\n"
        f"                lambda: open({str(outside)!r}, 'w').write('pwned'),\n"
        "                lambda: open('/root/.bashrc', 'a').write('pwned')):\n"
        "    try:\n"
        "        attempt()\n"
        "    except PermissionError as exc:\n"
        "        print('refused', exc.errno)\n"
    )
    try:
        output, finished = await escape(code, tmp_path)
    finally:
        planted = outside.exists()
        shutil.rmtree(place)
    assert output.count("refused 13") == 3  # EACCES, three times
    assert "launch codes" not in output and not planted


@pytest.mark.skipif(not SIGNALS_CONFINED, reason="as non-root, needs Landlock ABI 6")
async def test_signals_to_rolepool_and_to_every_process_are_refused(tmp_path):
    # In the sandbox's PID namespace rolepool's pid and group name nothing (ESRCH); without the
    # namespace a uid of its own (root) or Landlock's signal scope refuses them (EPERM).
    code = (
        "import os, signal\n"
        f"for attempt in (lambda: os.kill({os.getpid()}, signal.SIGKILL),\n"
        f"                lambda: os.kill({os.getpid()}, signal.SIGTERM),\n"
        f"                lambda: os.killpg({os.getpgid(0)}, signal.SIGKILL)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except (PermissionError, ProcessLookupError) as exc:\n"
        "        print('refused', exc.errno)\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)  # every process it may signal (Linux spares the caller)\n"
        "except OSError:\n"
        "    pass  # none it may signal: nothing outside the sandbox is in reach\n"
        "print('after kill(-1)')\n"
    )
    output, finished = await escape(code, tmp_path)
    assert output.count("refused") == 3
    assert finished.error is None and "after kill(-1)" in output  # it reached nobody outside


async def test_network_is_unreachable(tmp_path):
    code = (
        "import socket\n"
        "for host in ('203.0.113.1', '127.0.0.1'):\n"
        "    s = socket.socket()\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((host, 80))\n"
        "    except OSError as exc:\n"
        "        print(host, 'refused', type(exc).__name__)\n"
    )
    output, finished = await escape(code, tmp_path)
    if "note: network not isolated" in output:
        pytest.skip("network isolation is unavailable on this host (reported to the model)")
    assert "203.0.113.1 refused" in output and "127.0.0.1 refused" in output


async def test_fork_bomb_is_contained(tmp_path):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    output, finished = await escape(code, tmp_path, timeout_s=2)
    assert "killed: wall-clock timeout of 2s" in finished.error


async def test_memory_bomb_is_contained(tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))"
    output, finished = await escape(code, tmp_path)
    assert "MemoryError" in finished.error and "memory limit is 512 MB" in output
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


async def test_cpu_spin_is_killed_at_the_wall_clock(tmp_path):
    started = time.perf_counter()
    output, finished = await escape("while True:\n    pass", tmp_path, timeout_s=1)
    assert "killed: wall-clock timeout of 1s" in finished.error
    assert time.perf_counter() - started < 10


async def test_huge_stdout_is_capped_and_the_model_sees_a_bounded_report(tmp_path):
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    output, finished = await escape(code, tmp_path)
    assert "killed: output over" in output and "[truncated:" in output
    assert len(output) < 30_000
