"""The sandbox's bootstrap: the child interpreter runs this file before the model's code.

The parent starts `python -I <this file> CONFIG --rolepool-sandbox` with the model's code on stdin.
It is run by path, never imported through the package: importing rolepool would load the whole
SDK into the sandbox before the code's first line. So it uses the standard library only.

It sets up what the config asks for (limits, namespaces and private mounts, Landlock, the seccomp
filter, the uid; `set_up`), then reports what it got as its first stderr line,
`\\0SANDBOX {json}`: the parent must never claim an isolation the child could not get. A setup
failure is reported the same way and exits with `SETUP_FAILED`; a missing isolation is a setup
failure unless the user accepted weaker isolation (`guarded`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable
from types import ModuleType

STATUS_PREFIX = "\0SANDBOX "
SETUP_FAILED = 121
CLONE_NEWNET = getattr(os, "CLONE_NEWNET", 0x40000000)
CLONE_NEWUSER = getattr(os, "CLONE_NEWUSER", 0x10000000)
CLONE_NEWNS = getattr(os, "CLONE_NEWNS", 0x00020000)
CLONE_NEWPID = getattr(os, "CLONE_NEWPID", 0x20000000)


def unshare(flags: int) -> None:
    """`os.unshare` where Python has it (3.12+), else the libc call."""
    if hasattr(os, "unshare"):
        os.unshare(flags)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def enter_namespaces(confine: ModuleType) -> str:
    """New network, mount and PID namespaces, inside a new user namespace when not root (mapping
    the user to itself): nothing on the network is reachable, what is mounted here is the
    sandbox's alone, and the code's processes (its children, see `run_in_pid_namespace`) see no
    process outside and all die with it."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | (0 if uid == 0 else CLONE_NEWUSER))
    if uid != 0:
        confine.map_own_user(uid, gid)
    confine.mount("none", "/", None, confine.MS_REC | confine.MS_PRIVATE)
    return "isolated"


def private_mounts(config: dict, confine: ModuleType) -> str:
    """A size-capped tmpfs on /tmp, /dev/shm and the working directory (its quota), holding a
    copy of the snapshot the parent made there. In the mount namespace only."""
    workdir, owner = config["workdir"], config["uid"]
    below = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for place in ("/tmp", "/dev/shm"):
            if os.path.isdir(place):
                kept = hold_open(place)
                tmpfs(confine, place, config["tmp_bytes"], 0o1777, None)
                bind_back(confine, kept)
        os.makedirs(workdir, exist_ok=True)  # again, when a private /tmp covered it
        tmpfs(confine, workdir, config["disk_bytes"], 0o700, owner)
        copy_tree(below, workdir, owner)
    finally:
        os.close(below)
    os.chdir(workdir)
    mib = 2**20
    return (f"private tmpfs: working directory {config['disk_bytes'] // mib} MiB, "
            f"/tmp and /dev/shm {config['tmp_bytes'] // mib} MiB each")  # fmt: skip


def hold_open(place: str) -> dict[str, int]:
    """Descriptors to what the interpreter needs that lies under `place` (a virtualenv or a
    checkout under /tmp, this bootstrap's own directory), opened before a private tmpfs covers
    `place`, so `bind_back` can show them again at the same paths."""
    needed = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(__file__)}
    kept = {}
    for path in sorted({os.path.realpath(p) for p in needed}):
        if path.startswith(place.rstrip("/") + "/") and not any(
            path.startswith(k + "/") for k in kept
        ):
            kept[path] = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return kept


def bind_back(confine: ModuleType, kept: dict[str, int]) -> None:
    """Bind each held directory at its old path inside the new tmpfs (read-only to the code:
    Landlock grants reads there, not writes)."""
    for path, fd in kept.items():
        try:
            os.makedirs(path, exist_ok=True)
            confine.mount(f"/proc/self/fd/{fd}", path, None, confine.MS_BIND | confine.MS_REC)
        finally:
            os.close(fd)


def tmpfs(confine: ModuleType, place: str, size: int, mode: int, owner: int | None) -> None:
    options = f"size={size},nr_inodes=4096,mode={mode:o}"
    if owner is not None:
        options += f",uid={owner},gid={owner}"
    confine.mount("tmpfs", place, "tmpfs", confine.MS_NOSUID | confine.MS_NODEV, options)


def copy_tree(source: int, target: str, owner: int | None) -> None:
    """Copy the directories and regular files below the directory `source` (a descriptor) into
    `target`, never following a link."""
    for entry in os.scandir(source):
        path = os.path.join(target, entry.name)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        if entry.is_dir(follow_symlinks=False):
            os.mkdir(path, 0o700)
            inner = os.open(entry.name, flags | os.O_DIRECTORY, dir_fd=source)
            try:
                copy_tree(inner, path, owner)
            finally:
                os.close(inner)
        elif entry.is_file(follow_symlinks=False):
            with open(os.open(entry.name, flags, dir_fd=source), "rb") as src:
                with open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                    os.fchmod(dst.fileno(), os.fstat(src.fileno()).st_mode & 0o777)
        else:
            continue
        if owner is not None:
            os.chown(path, owner, owner)


def drop_to(uid: int, prefixes: list[str]) -> None:
    """Become `uid`, keeping the interpreter importable.

    The interpreter's own files may sit under a directory the sandbox uid cannot enter
    (/root/.pyenv): reach them through descriptors opened while still privileged.
    """
    fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in prefixes}
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)

    def moved(path: object) -> object:
        for prefix, fd in fds.items():
            if isinstance(path, str) and (path == prefix or path.startswith(prefix + "/")):
                return f"/proc/self/fd/{fd}{path[len(prefix) :]}"
        return path

    sys.path[:] = [moved(p) for p in sys.path]
    for module in list(sys.modules.values()):
        if isinstance(getattr(module, "__path__", None), list):
            module.__path__[:] = [moved(p) for p in module.__path__]
    sys.path_importer_cache.clear()
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"could not drop to uid {uid}")


def load_confine() -> ModuleType:
    """`confine.py` beside this file, loaded by path under a private name (see the docstring)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "confine.py")
    spec = importlib.util.spec_from_file_location("_rolepool_sandbox_confine", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def confine_files(config: dict, writable: list[str], confine: ModuleType) -> str:
    """Landlock: reads only beneath the interpreter's and the system's files, reads and writes
    only beneath the working directory; a `..` from anything held open leads nowhere else."""
    landlock = confine.Landlock()
    for path in config["read_only"]:
        landlock.allow(path, confine.READ)
    for path in writable:
        landlock.allow(path, landlock.rights)
    for path in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"):
        landlock.allow(path, confine.FILE_RIGHTS & ~confine.EXECUTE)
    landlock.enforce()
    return f"confined (Landlock ABI {landlock.abi})"


def confine_signals(config: dict, status: dict[str, object], confine: ModuleType) -> str:
    """Signals may reach only the sandbox's own processes: in its PID namespace no other process
    has a pid; besides, as root a uid of its own (the kernel refuses another uid's) and, from
    ABI 6, Landlock's signal scope."""
    ways = ["PID namespace"] if status["network"] == "isolated" else []
    if config["uid"] is not None:
        ways.append("a uid of its own")
    if str(status["filesystem"]).startswith("confined") and confine.landlock_abi() >= 6:
        ways.append("Landlock scope")
    if not ways:
        raise OSError("no PID namespace, no Landlock ABI 6, and rolepool is not root")
    return f"refused outside ({', '.join(ways)})"


def forbid_unix_sockets(confine: ModuleType) -> str:
    """A network namespace does not hide Unix sockets named by a path: a seccomp filter refuses
    to create one that could reach outside (see `confine.forbid_unix_sockets`)."""
    confine.forbid_unix_sockets()
    return "refused (seccomp)"


def guarded(
    status: dict[str, object], name: str, allow_weak: bool, step: Callable[[], str]
) -> None:
    """Run one isolation step; without it the run is refused unless the user accepted weaker
    isolation, and then the status says loudly what is missing."""
    try:
        status[name] = step()
    except OSError as exc:
        if not allow_weak:
            raise OSError(
                f"{name} isolation unavailable ({exc}); refusing to run "
                f"(set ROLEPOOL_SANDBOX_ALLOW_WEAK=1 to run without it)"
            ) from exc
        status[name] = f"NOT ENFORCED: {exc}"


def set_up(config: dict) -> dict[str, object]:
    """Apply the limits, the namespaces, the confinement and the uid; returns what was set up."""
    confine = load_confine()
    weak = config["allow_weak"]
    status: dict[str, object] = {}
    guarded(status, "network", weak, lambda: enter_namespaces(confine))
    # After the user namespace is made: there RLIMIT_NPROC counts only this run's processes (the
    # kernel counts per user namespace, and the user's own limit still bounds the namespace).
    for name, soft, hard in config["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    writable = [config["workdir"]]
    if status["network"] == "isolated":  # never mount outside a namespace of our own
        guarded(status, "mounts", weak, lambda: private_mounts(config, confine))
        writable += ["/tmp", "/dev/shm"] if status["mounts"].startswith("private") else []
    else:
        status["mounts"] = "NOT ENFORCED: no mount namespace"
    guarded(status, "filesystem", weak, lambda: confine_files(config, writable, confine))
    guarded(status, "unix_sockets", weak, lambda: forbid_unix_sockets(confine))
    guarded(status, "signals", weak, lambda: confine_signals(config, status, confine))
    if config["uid"] is not None:
        drop_to(config["uid"], config["prefixes"])
    else:
        confine.drop_capabilities()
    status["uid"] = os.getuid()
    return status


def report(status: dict[str, object]) -> None:
    sys.stderr.write(STATUS_PREFIX + json.dumps(status) + "\n")
    sys.stderr.flush()


def run_code(code: bytes) -> None:
    """Run the model's code as `__main__`; its traceback starts at its own first frame."""
    source = code.decode("utf-8", "replace")
    import linecache

    linecache.cache["<code>"] = (len(source), None, source.splitlines(True), "<code>")
    try:
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(source, "<code>", "exec"), namespace)
    except SystemExit:
        raise
    except BaseException as exc:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        sys.exit(1)


def run_in_pid_namespace(code: bytes) -> None:
    """Fork the namespace's first process (its init), which runs the code in a child of its own
    and reaps every orphan; this process then ends as the code's process ended, so the parent
    sees the same exit status or signal as without a namespace."""
    read_end, write_end = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(read_end)
        runner = os.fork()
        if runner == 0:
            os.close(write_end)
            run_code(code)
            return  # the code's process ends as any interpreter does
        while True:  # init: reap everything until the code's process is done
            pid, wait_status = os.wait()
            if pid == runner:
                os.write(write_end, str(wait_status).encode())
                os._exit(0)  # the kernel then kills whatever is left in the namespace
    os.close(write_end)
    os.waitpid(init, 0)
    with os.fdopen(read_end, "rb") as pipe:
        relayed = pipe.read()
    end_as(int(relayed) if relayed else None)


def end_as(wait_status: int | None) -> None:
    """Exit with the code's exit status, or die of its signal (SIGKILL if unknown)."""
    number = signal.SIGKILL if wait_status is None else 0
    if wait_status is not None and os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
    if number:
        if number not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.waitstatus_to_exitcode(wait_status))


def main() -> None:
    config = json.loads(sys.argv[1])
    code = sys.stdin.buffer.read()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        status = set_up(config)
    except Exception as exc:
        report({"error": repr(exc)})
        os._exit(SETUP_FAILED)
    report(status)
    if status["network"] == "isolated":  # the namespaces, a PID namespace among them
        run_in_pid_namespace(code)
    else:
        run_code(code)


if __name__ == "__main__":
    main()
