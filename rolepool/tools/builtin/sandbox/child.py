"""The sandbox's bootstrap: the child interpreter runs this file before the model's code.

The parent starts `python -I <this file> CONFIG --rolepool-sandbox` with the model's code on stdin.
It is run by path, never imported through the package: importing rolepool would load the whole
SDK into the sandbox before the code's first line. So it uses the standard library only.

It sets up what the config asks for (limits, namespaces, the uid), then reports what it got as its
first stderr line, `\\0SANDBOX {json}`: the parent must never claim an isolation the child could
not get. A setup failure is reported the same way and exits with `SETUP_FAILED`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
from collections.abc import Callable
from types import ModuleType

STATUS_PREFIX = "\0SANDBOX "
SETUP_FAILED = 121
CLONE_NEWNET = getattr(os, "CLONE_NEWNET", 0x40000000)
CLONE_NEWUSER = getattr(os, "CLONE_NEWUSER", 0x10000000)


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


def isolate_network() -> str:
    """A new network namespace (with a user namespace when not root): nothing is reachable."""
    flags = CLONE_NEWNET | (0 if os.geteuid() == 0 else CLONE_NEWUSER)
    try:
        unshare(flags)
    except OSError as exc:
        return f"not isolated: unshare failed ({exc})"
    return "isolated"


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


def confine_files(config: dict, confine: ModuleType) -> str:
    """Landlock: reads only beneath the interpreter's and the system's files, reads and writes
    only beneath the working directory; a `..` from anything held open leads nowhere else."""
    landlock = confine.Landlock()
    for path in config["read_only"]:
        landlock.allow(path, confine.READ)
    for path in config["read_write"]:
        landlock.allow(path, landlock.rights)
    for path in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"):
        landlock.allow(path, confine.FILE_RIGHTS & ~confine.EXECUTE)
    landlock.enforce()
    return f"confined (Landlock ABI {landlock.abi})"


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
    for name, soft, hard in config["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    status: dict[str, object] = {"network": isolate_network()}
    confine = load_confine()
    weak = config["allow_weak"]
    guarded(status, "filesystem", weak, lambda: confine_files(config, confine))
    guarded(status, "unix_sockets", weak, lambda: forbid_unix_sockets(confine))
    if config["uid"] is not None:
        drop_to(config["uid"], config["prefixes"])
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
    run_code(code)


if __name__ == "__main__":
    main()
