"""run_python's sandbox: every escape attempt ends as a contained, reported failure.

Each test also checks, through the autouse fixture, that no sandbox process outlives it.
docs/sandbox.md names the test behind each promise; keep the two in step.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from rolepool import Agent
from rolepool.core import RunContext, ToolCall, ToolError
from rolepool.pools.testing import ScriptedWorker
from rolepool.tools.builtin import (
    SandboxLimits,
    SandboxResult,
    read_file,
    run_python,
    run_sandboxed,
    write_file,
)
from rolepool.tools.builtin.sandbox.confine import landlock_abi
from rolepool.zoo import toolset

pytestmark = pytest.mark.anyio
ROOT = os.geteuid() == 0
as_root = pytest.mark.skipif(not ROOT, reason="only when rolepool runs as root")
files_confined = pytest.mark.skipif(
    not ROOT and landlock_abi() < 1, reason="as non-root, needs Landlock (docs/sandbox.md)"
)
signals_confined = pytest.mark.skipif(
    not ROOT and landlock_abi() < 6, reason="as non-root, needs Landlock ABI 6 (docs/sandbox.md)"
)


def _sandbox_pids(under: Path) -> list[int]:
    """Live processes whose command line carries the sandbox marker (zombies have none) and
    whose working directory is below `under`: other test sessions on this machine may run
    sandboxes of their own meanwhile."""
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


def _live_pids_of(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(f"/proc/{entry.name}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                pids.append(int(entry.name))
    return pids


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path):
    yield
    assert _sandbox_pids(tmp_path) == []


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory the sandbox can see but must not touch: not under /tmp, which each run
    replaces with a private one (so a file there would simply be missing)."""
    path = Path(tempfile.mkdtemp(prefix="rolepool-outside-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return RunContext(run_id="run-1", agent="coder", role="coder", workspace=workspace)


async def _run(ctx: RunContext, code: str, timeout_s: int = 5) -> str:
    return await run_python.call({"code": code, "timeout_s": timeout_s}, ctx)


async def _fail(ctx: RunContext, code: str, timeout_s: int = 5) -> str:
    with pytest.raises(ToolError) as info:
        await _run(ctx, code, timeout_s)
    return str(info.value)


def test_schema_is_the_one_the_models_were_trained_on() -> None:
    assert run_python.parameters == toolset.schema("run_python")
    assert run_python.description == toolset.tool_spec("run_python").description
    assert run_python.roles == frozenset({"coder"})
    assert run_python.validate({"code": "1", "timeout_s": 61}) != []


async def test_success_reports_stdout_stderr_and_status(ctx: RunContext) -> None:
    text = await _run(ctx, "import sys\nprint('hello')\nprint('warn', file=sys.stderr)")
    assert text.startswith("exit status 0\n")
    assert "--- stdout ---\nhello\n" in text
    assert "--- stderr ---\nwarn\n" in text
    assert "SANDBOX" not in text and "\0" not in text


async def test_nonzero_exit_and_traceback_are_tool_errors(ctx: RunContext) -> None:
    assert "exit status 3" in await _fail(ctx, "import sys\nprint('x')\nsys.exit(3)")
    message = await _fail(ctx, "def f():\n    return 1 / 0\nf()")
    assert "exit status 1" in message
    assert 'File "<code>", line 2, in f' in message and "ZeroDivisionError" in message


async def test_fresh_working_directory_inside_workspace_removed_after(ctx: RunContext) -> None:
    code = "import os\nopen('made.txt', 'w').write('x')\nprint(os.getcwd())"
    first = (await _run(ctx, code)).split("--- stdout ---\n")[1].split("\n")[0]
    second = (await _run(ctx, code)).split("--- stdout ---\n")[1].split("\n")[0]
    assert first != second
    assert Path(first).parent == ctx.workspace / ".sandbox"
    assert not Path(first).exists() and not Path(second).exists()


async def test_infinite_loop_hits_the_wall_clock_and_dies(ctx: RunContext) -> None:
    started = time.perf_counter()
    message = await _fail(ctx, "while True:\n    pass", timeout_s=1)
    assert "wall-clock timeout of 1s" in message
    assert time.perf_counter() - started < 5


async def test_memory_bomb_is_refused_by_the_address_space_limit(ctx: RunContext) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 2**20))"
    message = await _fail(ctx, code)
    assert "MemoryError" in message and "memory limit is 512 MB" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


async def test_file_size_and_open_file_limits(ctx: RunContext) -> None:
    assert "File too large" in await _fail(ctx, "open('big', 'wb').write(b'x' * (20 * 2**20))")
    assert "Too many open files" in await _fail(ctx, "f = [open(str(i), 'w') for i in range(100)]")


async def test_fork_bomb_is_contained_and_leaves_nothing(ctx: RunContext) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = await run_sandboxed(code, 2, parent_dir=ctx.workspace)
    assert not result.ok and result.timed_out
    if result.uid is not None:
        assert _live_pids_of(result.uid) == []


async def test_background_children_die_with_the_run(ctx: RunContext) -> None:
    # start_new_session: the child leaves the process group; as root the uid sweep still gets it.
    code = (
        "import subprocess\n"
        "subprocess.Popen(['sleep', '61.25'], start_new_session=True)\n"
        "print('started')"
    )
    result = await run_sandboxed(code, 5, parent_dir=ctx.workspace)
    assert result.ok, result.report(5)
    if result.uid is not None:
        assert _live_pids_of(result.uid) == []
    await anyio.sleep(0.05)
    leftover = [
        p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == b"sleep\x0061.25\x00"
    ]
    assert leftover == []  # as non-root too: the PID namespace dies with the run


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def test_huge_stdout_is_capped_and_truncated_with_a_marker(ctx: RunContext) -> None:
    message = await _fail(ctx, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert "killed: output over" in message and "[truncated:" in message
    assert len(message) < 30_000
    text = await _run(ctx, "print('a' * 200_000)\nprint('THE END')")
    assert (
        text.startswith("exit status 0")
        and "[truncated: 200009 bytes in all; showing the first 6000 and the last 3000]" in text
    )
    assert "THE END" in text  # the tail is kept, so the last lines (a traceback) show


async def test_environment_secrets_do_not_reach_the_code(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLEPOOL_FAKE_SECRET", "hunter2-not-a-real-secret")
    text = await _run(ctx, "import os\nprint(sorted(os.environ))\nprint(dict(os.environ))")
    assert "hunter2" not in text and "ROLEPOOL_FAKE_SECRET" not in text
    assert "['HOME', 'LANG', 'PATH', 'TMPDIR']" in text


@files_confined
async def test_parent_environment_cannot_be_read_through_proc(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLEPOOL_FAKE_SECRET", "hunter2-not-a-real-secret")
    message = await _fail(ctx, f"print(open('/proc/{os.getpid()}/environ').read())")
    assert "PermissionError" in message and "hunter2" not in message


@files_confined
async def test_writing_and_reading_outside_the_workspace_is_refused(
    ctx: RunContext, outside: Path
) -> None:
    target = outside / "outside.txt"
    message = await _fail(ctx, f"open({str(target)!r}, 'w').write('pwned')")
    assert "PermissionError" in message and not target.exists()
    secret = outside / "secret.txt"
    secret.write_text("top secret")
    secret.chmod(0o600)
    message = await _fail(ctx, f"print(open({str(secret)!r}).read())")
    assert "PermissionError" in message and "top secret" not in message
    assert "PermissionError" in await _fail(ctx, "open('/root/owned-by-sandbox', 'w')")
    # World-readable and world-writable places outside are closed too (Landlock).
    assert "PermissionError" in await _fail(ctx, "print(open('/etc/passwd').read())")
    assert "PermissionError" in await _fail(ctx, "open('/var/tmp/planted-by-sandbox', 'w')")
    assert not Path("/var/tmp/planted-by-sandbox").exists()


async def test_network_to_an_outside_address_fails_fast(ctx: RunContext) -> None:
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.settimeout(4)\n"
        "s.connect(('203.0.113.1', 80))  # TEST-NET-3: never a real host"
    )
    started = time.perf_counter()
    result = await run_sandboxed(code, 10, parent_dir=ctx.workspace)
    assert not result.ok
    if result.network != "isolated":
        assert "note: network not isolated" in result.report(10)
        pytest.skip(f"network isolation unavailable here: {result.network}")
    assert "Network is unreachable" in result.stderr
    assert time.perf_counter() - started < 3


@signals_confined
async def test_signals_to_the_parent_are_refused(ctx: RunContext) -> None:
    # rolepool is out of reach: in the sandbox's PID namespace its pid names no process (ESRCH);
    # without that namespace, a uid of its own (root) or Landlock's signal scope refuses (EPERM).
    code = (
        "import os, signal\n"
        f"for attempt in (lambda: os.kill({os.getpid()}, signal.SIGKILL),\n"
        f"                lambda: os.killpg({os.getpgid(0)}, signal.SIGKILL)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except (PermissionError, ProcessLookupError) as exc:\n"
        "        print('refused', exc.errno)\n"
    )
    text = await _run(ctx, code)
    assert text.count("refused") == 2  # and we are still here to read it


async def test_concurrent_runs_get_separate_directories_and_uids(ctx: RunContext) -> None:
    results = []

    async def one() -> None:
        code = "import os\nprint(os.getuid(), os.getcwd())"
        results.append(await run_sandboxed(code, 5, parent_dir=ctx.workspace))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    assert all(r.ok for r in results)
    assert len({r.stdout for r in results}) == 3
    if os.geteuid() == 0:
        assert len({r.uid for r in results}) == 3 and 0 not in {r.uid for r in results}


async def test_cancelling_the_caller_kills_the_child(ctx: RunContext) -> None:
    with anyio.move_on_after(0.5):
        await run_sandboxed("while True:\n    pass", 30, parent_dir=ctx.workspace)
    assert _sandbox_pids(ctx.workspace) == []
    assert list(ctx.workspace.iterdir()) == []  # the working directory is gone too


async def test_agent_run_survives_a_runaway_tool_call(tmp_path: Path) -> None:
    worker = ScriptedWorker(
        [
            ToolCall(
                id="call-1",
                name="run_python",
                arguments={"code": "while True: pass", "timeout_s": 1},
            ),
            "The code never finished.",
        ]
    )
    agent = Agent("coder", role="coder", tools=[run_python, read_file, write_file])
    result = await agent.run("loop forever", worker=worker, store=False, workspace=tmp_path)
    assert result.output == "The code never finished."
    tool_messages = [m for m in result.messages if m.role == "tool"]
    assert len(tool_messages) == 1
    assert tool_messages[0].content.startswith("ERROR: ToolError")
    assert "wall-clock timeout of 1s" in tool_messages[0].content


@as_root
async def test_cleaning_up_a_uid_never_blocks_the_event_loop(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rolepool.tools.builtin.sandbox import runner, uids

    real_kill_uid = uids.kill_uid

    def slow_kill_uid(uid: int) -> None:
        time.sleep(0.3)  # a /proc sweep racing a fork bomb
        real_kill_uid(uid)

    monkeypatch.setattr(uids, "kill_uid", slow_kill_uid)
    monkeypatch.setattr(runner, "kill_uid", slow_kill_uid)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        result = await run_sandboxed("print('hi')", 5, parent_dir=ctx.workspace)
        tg.cancel_scope.cancel()
    assert result.ok and len(gaps) > 10
    assert max(gaps) < 0.2


@as_root
async def test_held_descriptors_do_not_walk_up_to_closed_directories(
    ctx: RunContext, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root the child holds descriptors to the interpreter's prefixes; `..` from one of them
    # must not reach a world-readable file under a directory the sandbox may not enter.
    from rolepool.tools.builtin.sandbox import runner

    closed = outside / "closed"  # like /root above /root/.pyenv/versions/3.11
    prefix = closed / "open" / "prefix"
    prefix.mkdir(parents=True)
    (closed / "open" / "secret.txt").write_text("behind a closed door")
    (closed / "open" / "secret.txt").chmod(0o644)
    closed.chmod(0o700)
    real_prefixes = runner._prefixes
    monkeypatch.setattr(runner, "_prefixes", lambda: [*real_prefixes(), str(prefix)])
    code = (
        "import os\n"
        f"fd = next(n for n in range(3, 64) if os.path.exists(f'/proc/self/fd/{{n}}') and\n"
        f"          os.readlink(f'/proc/self/fd/{{n}}') == {str(prefix)!r})\n"
        "def through_proc():\n"
        "    return open(f'/proc/self/fd/{fd}/../secret.txt').read()\n"
        "def through_openat():\n"
        "    up = os.open('..', os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)\n"
        "    return os.read(os.open('secret.txt', os.O_RDONLY, dir_fd=up), 100)\n"
        "def through_o_path():\n"
        "    up = os.open('..', os.O_PATH, dir_fd=fd)\n"
        "    return os.read(os.open('secret.txt', os.O_RDONLY, dir_fd=up), 100)\n"
        "for attempt in (through_proc, through_openat, through_o_path):\n"
        "    try:\n"
        "        print('READ', attempt())\n"
        "    except PermissionError as exc:\n"
        "        print('refused', exc.errno)\n"
    )
    text = await _run(ctx, code)
    assert "closed door" not in text
    assert text.count("refused 13") == 3


async def test_unix_sockets_outside_the_sandbox_are_unreachable(ctx: RunContext) -> None:
    # Host services on Unix sockets in a world-writable directory the sandbox sees (not /tmp,
    # which is private): a stream socket, a datagram
    # socket (reached with sendto, also from a socketpair) and an abstract one.
    import socket
    import tempfile
    import threading

    place = Path(tempfile.mkdtemp(prefix="rolepool-sock-", dir="/var/tmp"))
    place.chmod(0o777)
    stream_path, dgram_path = str(place / "stream"), str(place / "dgram")
    abstract = f"\0rolepool-test-{os.getpid()}"
    received: list[bytes] = []
    servers = []
    for address in (stream_path, abstract):
        server = socket.socket(socket.AF_UNIX)
        server.bind(address)
        server.listen()
        server.settimeout(0.2)
        servers.append(server)
    os.chmod(stream_path, 0o777)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(dgram_path)
    os.chmod(dgram_path, 0o777)
    dgram.settimeout(0.2)
    stop = threading.Event()

    def serve(server: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                received.append(conn.recv(10))
                conn.sendall(b"pong")

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    code = (
        "import socket\n"
        "def stream(address):\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    s.settimeout(2)\n"
        "    s.connect(address)\n"
        "    s.sendall(b'ping')\n"
        "    return s.recv(10)\n"
        "def dgram():\n"
        "    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'ping', "
        f"{dgram_path!r})\n"
        "def pair():\n"
        "    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        f"    a.sendto(b'ping', {dgram_path!r})\n"
        f"for name, attempt in (('path', lambda: stream({stream_path!r})), ('dgram', dgram),\n"
        f"                      ('pair', pair), ('abstract', lambda: stream({abstract!r}))):\n"
        "    try:\n"
        "        print('REACHED', name, attempt())\n"
        "    except OSError as exc:\n"
        "        print('refused', name, type(exc).__name__)\n"
        "a, b = socket.socketpair()\n"
        "a.sendall(b'own pair')\n"
        "print(b.recv(10))\n"
    )
    try:
        text = await _run(ctx, code)
        try:
            received.append(dgram.recv(10))
        except OSError:
            pass
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in (*servers, dgram):
            sock.close()
        for path in (stream_path, dgram_path):
            os.unlink(path)
        place.rmdir()
    assert "REACHED" not in text and received == []
    assert text.count("refused") == 4
    assert "b'own pair'" in text  # a socketpair inside the sandbox still works (asyncio needs it)


async def test_the_working_directory_has_a_disk_quota(ctx: RunContext) -> None:
    # Single files stop at RLIMIT_FSIZE (16 MB); many files together stop at the quota.
    code = (
        "written = 0\n"
        "try:\n"
        "    for i in range(40):\n"
        "        with open(f'part{i}', 'wb') as f:\n"
        "            for _ in range(15):\n"
        "                f.write(b'x' * 2**20)\n"
        "                f.flush()\n"
        "                written += 1\n"
        "except OSError as exc:\n"
        "    print('stopped', exc.errno, 'after MiB', written)\n"
    )
    text = await _run(ctx, code)
    assert "stopped 28 after MiB" in text  # ENOSPC
    written = int(text.split("after MiB ")[1].split()[0])
    assert written <= SandboxLimits().disk_bytes // 2**20


async def test_tmp_and_shm_are_private_capped_and_gone_after_the_run(ctx: RunContext) -> None:
    name = f"rolepool-left-{os.getpid()}"
    code = (
        "import os\n"
        f"print('seen before', [p for p in ('/tmp', '/dev/shm') if os.path.exists(p + '/{name}')])\n"
        "for place in ('/tmp', '/dev/shm'):\n"
        f"    open(place + '/{name}', 'w').write('left behind')\n"
        "    written = 0\n"
        "    try:\n"
        "        for i in range(40):\n"
        "            with open(f'{place}/fill{i}', 'wb') as f:\n"
        "                for _ in range(8):\n"
        "                    f.write(b'x' * 2**20)\n"
        "                    f.flush()\n"
        "                    written += 1\n"
        "    except OSError as exc:\n"
        "        print(place, 'stopped', exc.errno, 'after MiB', written)\n"
    )
    first = await _run(ctx, code)
    second = await _run(ctx, code)
    for text in (first, second):
        assert "seen before []" in text
        assert "/tmp stopped 28" in text and "/dev/shm stopped 28" in text
        for place in ("/tmp", "/dev/shm"):
            written = int(text.split(f"{place} stopped 28 after MiB ")[1].split()[0])
            assert written <= SandboxLimits().tmp_bytes // 2**20
    assert not Path(f"/tmp/{name}").exists() and not Path(f"/dev/shm/{name}").exists()
    assert not list(Path("/dev/shm").glob("fill*")) and not list(Path("/tmp").glob("fill*"))


def test_a_missing_isolation_refuses_the_run_unless_the_user_accepts_it() -> None:
    from rolepool.tools.builtin.sandbox import child

    def missing() -> str:
        raise OSError("Landlock is not available")

    status: dict[str, object] = {}
    with pytest.raises(OSError, match="refusing to run.*ROLEPOOL_SANDBOX_ALLOW_WEAK=1"):
        child.guarded(status, "filesystem", False, missing)
    child.guarded(status, "filesystem", True, missing)
    assert status["filesystem"] == "NOT ENFORCED: Landlock is not available"
    result = SandboxResult(
        exit_code=0, stdout="", stderr="", network="isolated", filesystem="NOT ENFORCED: why"
    )
    assert result.ok and result.not_enforced == ["filesystem: NOT ENFORCED: why"]
    assert "WARNING: sandbox isolation filesystem: NOT ENFORCED: why" in result.report(5)


async def test_every_isolation_is_in_place_here(ctx: RunContext) -> None:
    # What this host gives (CI: Landlock ABI 7, user namespaces); a weaker host fails here first.
    result = await run_sandboxed("print('hi')", 5, parent_dir=ctx.workspace)
    assert result.ok and result.not_enforced == [], result.report(5)
    assert result.network == "isolated" and result.mounts.startswith("private tmpfs")
    assert result.filesystem.startswith("confined (Landlock ABI")
    assert result.unix_sockets == "refused (seccomp)" and result.signals.startswith("refused")


_WITHOUT_NAMESPACES = """
import json, os, platform, sys
import anyio
from rolepool.tools.builtin import run_sandboxed
from rolepool.tools.builtin.sandbox import confine
# A host without namespaces: unshare(2) fails with EPERM for this process and its children.
confine.install_filter([(0x20, 0, 0, 4), (0x15, 1, 0, 0xC000003E), (0x06, 0, 0, 0x7FFF0000),
                        (0x20, 0, 0, 0), (0x15, 0, 1, 272), (0x06, 0, 0, 0x00050001),
                        (0x06, 0, 0, 0x7FFF0000)])
code = "open('/tmp/weak-sandbox-was-here', 'w')"
result = anyio.run(run_sandboxed, code, 5)
print(json.dumps({"report": result.report(5), "setup_error": result.setup_error,
                  "mounts": result.mounts, "filesystem": result.filesystem}))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the test's filter is for x86_64")
@pytest.mark.parametrize("accept", [False, True])
def test_without_namespaces_the_run_is_refused_or_loudly_weaker(accept: bool) -> None:
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ROLEPOOL_SANDBOX_ALLOW_WEAK"}
    if accept:
        env["ROLEPOOL_SANDBOX_ALLOW_WEAK"] = "1"
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_NAMESPACES], env=env, capture_output=True, timeout=60
    )
    assert run.returncode == 0, run.stderr.decode()
    result = json.loads(run.stdout.decode().strip().splitlines()[-1])
    if not accept:
        assert "network isolation unavailable" in result["setup_error"]
        assert "ROLEPOOL_SANDBOX_ALLOW_WEAK=1" in result["setup_error"]
        return
    assert result["setup_error"] is None and result["filesystem"].startswith("confined")
    assert "note: network NOT ENFORCED" in result["report"]
    assert "WARNING: sandbox isolation mounts: NOT ENFORCED" in result["report"]
    # Nothing was mounted on the host, and Landlock still keeps the code out of the host's /tmp.
    assert "PermissionError" in result["report"]
    assert not Path("/tmp/weak-sandbox-was-here").exists()


async def test_the_codes_exit_status_or_signal_is_the_runs(ctx: RunContext) -> None:
    # The code runs as pid 2 of the run's PID namespace; its end is relayed to the parent as is.
    cases = {
        "import os\nos.kill(os.getpid(), 9)": -9,
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)": -15,
        "import sys\nsys.exit(7)": 7,
        "import os\nprint(os.getpid(), os.getppid(), flush=True)\nos._exit(200)": 200,
    }
    for code, expected in cases.items():
        result = await run_sandboxed(code, 5, parent_dir=ctx.workspace)
        assert result.exit_code == expected, result.report(5)
        assert "Traceback" not in result.stderr
    assert result.stdout == "2 1\n"


async def test_the_process_limit_counts_only_the_runs_own_processes(ctx: RunContext) -> None:
    # The user already has more processes than the sandbox may have; the sandbox still starts
    # its own (as non-root the kernel counts them per user namespace, as root per uid), and a
    # fork bomb inside stops at the limit.
    import subprocess

    others = [subprocess.Popen(["sleep", "30"]) for _ in range(SandboxLimits().max_processes + 8)]
    try:
        code = (
            "import os\n"
            "children = []\n"
            "try:\n"
            "    while len(children) < 100:\n"
            "        pid = os.fork()\n"
            "        if pid == 0:\n"
            "            import time\n"
            "            time.sleep(5)\n"
            "            os._exit(0)\n"
            "        children.append(pid)\n"
            "except OSError as exc:\n"
            "    print('stopped', exc.errno, 'after', len(children), flush=True)\n"
            "os._exit(0)\n"
        )
        text = await _run(ctx, code)
    finally:
        for process in others:
            process.kill()
            process.wait()
    assert "stopped 11 after" in text  # EAGAIN
    started = int(text.split("stopped 11 after ")[1].split()[0])
    assert 20 <= started < SandboxLimits().max_processes
