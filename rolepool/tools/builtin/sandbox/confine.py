"""Kernel confinement for the sandbox's child, by direct system calls: Landlock, seccomp, mounts.

The child's bootstrap loads this file by path (standard library only, like `child.py`); the
parent and the tests import it to ask what the kernel offers. Each call raises `OSError` when the
kernel refuses, so the bootstrap can refuse the run or, when the user accepted it, say what is
missing. Numbers are the kernel's UAPI (linux/landlock.h, linux/seccomp.h, linux/filter.h).
"""

from __future__ import annotations

import ctypes
import os
import platform
import stat
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2

# Landlock file-system rights (bit n) and the ABI that added each.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
TRUNCATE, IOCTL_DEV = 1 << 14, 1 << 15
READ = EXECUTE | READ_FILE | READ_DIR
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # what a file rule may hold
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


def _check(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _syscall(number: int, *args: int | bytes | None) -> int:
    cargs = [ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a or 0) for a in args]
    return _check(_libc.syscall(ctypes.c_long(number), *cargs))


def _prctl(option: int, arg2: int, arg3: int | bytes) -> None:
    third = ctypes.c_char_p(arg3) if isinstance(arg3, bytes) else ctypes.c_ulong(arg3)
    zero = ctypes.c_ulong(0)
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), third, zero, zero))


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers this process; 0 when it has none."""
    try:
        return _syscall(_LANDLOCK_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    except OSError:
        return 0


def all_rights(abi: int) -> int:
    """Every file-system right this ABI can restrict: REFER from 2, TRUNCATE 3, IOCTL_DEV 5."""
    rights = (1 << 13) - 1
    for version, right in ((2, 1 << 13), (3, TRUNCATE), (5, IOCTL_DEV)):
        if abi >= version:
            rights |= right
    return rights


class Landlock:
    """A ruleset under construction: every handled right is denied except beneath its rules.

    Where the ABI has scopes (6+), abstract Unix sockets and signals are also confined to the
    sandbox's own Landlock domain. Rules are added by path while still privileged; `enforce`
    then restricts this process and every child for good.
    """

    def __init__(self) -> None:
        self.abi = landlock_abi()
        if self.abi < 1:
            raise OSError("Landlock is not available (kernel too old, or not in the LSM list)")
        self.rights = all_rights(self.abi)
        attr = struct.pack("=QQQ", self.rights, 0, _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL)
        size = 8 if self.abi < 4 else 16 if self.abi < 6 else 24
        self._fd = _syscall(_LANDLOCK_CREATE_RULESET, attr[:size], size, 0)

    def allow(self, path: str, rights: int) -> None:
        """Allow `rights` beneath `path` (a directory) or on it (a file); a missing path is
        skipped: there is nothing to reach there."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                rights &= FILE_RIGHTS
            rule = struct.pack("=Qi", rights & self.rights, fd)  # landlock_path_beneath_attr
            _syscall(_LANDLOCK_ADD_RULE, self._fd, 1, rule, 0)  # LANDLOCK_RULE_PATH_BENEATH
        finally:
            os.close(fd)

    def enforce(self) -> None:
        no_new_privileges()
        try:
            _syscall(_LANDLOCK_RESTRICT_SELF, self._fd, 0)
        finally:
            os.close(self._fd)


# seccomp: (audit arch, socket, socketpair) per machine; io_uring_setup is 425 on both.
_ARCHES = {"x86_64": (0xC000003E, 41, 53), "aarch64": (0xC00000B7, 198, 199)}
_IO_URING_SETUP = 425
_AF_UNIX, _SOCK_DGRAM, _EACCES = 1, 2, 13
_ALLOW, _KILL, _DENY = 0x7FFF0000, 0x80000000, 0x00050000 | _EACCES  # SECCOMP_RET_*
_LD, _JEQ, _JGE, _AND, _RET = 0x20, 0x15, 0x35, 0x54, 0x06  # BPF ld/jeq/jge/and/ret, K forms


def _unix_socket_filter(machine: str) -> list[tuple[int, int, int, int]]:
    """The BPF program: refuse to create a Unix socket that could reach a path or an abstract
    name (`socket(AF_UNIX, ...)`, a datagram `socketpair`, whose `sendto` takes an address) and
    io_uring (it creates sockets without these system calls); allow everything else. A stream
    `socketpair` stays: it reaches only itself, and asyncio needs one."""
    arch, socket_nr, socketpair_nr = _ARCHES[machine]
    x32 = machine == "x86_64"
    return [
        (_LD, 0, 0, 4),  # 0: seccomp_data.arch
        (_JEQ, 1, 0, arch),
        (_RET, 0, 0, _KILL),  # 2: another ABI (i386 entry points): no way around the filter
        (_LD, 0, 0, 0),  # 3: seccomp_data.nr
        (_JGE, 11, 0, 0x40000000) if x32 else (_JEQ, 0, 0, 0),  # 4: x32 numbers: refuse
        (_JEQ, 10, 0, _IO_URING_SETUP),
        (_JEQ, 7, 0, socket_nr),  # 6: to 14
        (_JEQ, 1, 0, socketpair_nr),  # 7: to 9
        (_RET, 0, 0, _ALLOW),
        (_LD, 0, 0, 16),  # 9: socketpair's args[0], the domain
        (_JEQ, 0, 6, _AF_UNIX),  # not Unix: allow
        (_LD, 0, 0, 24),  # 11: args[1], the type with its flags
        (_AND, 0, 0, 0xF),
        (_JEQ, 2, 3, _SOCK_DGRAM),  # 13: a datagram pair: refuse
        (_LD, 0, 0, 16),  # 14: socket's args[0], the domain
        (_JEQ, 0, 1, _AF_UNIX),
        (_RET, 0, 0, _DENY),  # 16
        (_RET, 0, 0, _ALLOW),  # 17
    ]


def forbid_unix_sockets() -> None:
    """Install the filter for this process and its children."""
    machine = platform.machine()
    if machine not in _ARCHES:
        raise OSError(f"no seccomp filter for {machine}")
    install_filter(_unix_socket_filter(machine))


def install_filter(program: list[tuple[int, int, int, int]]) -> None:
    """Install a seccomp BPF program of (code, jump if true, jump if false, k) instructions."""
    filters = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(filters, len(filters))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))  # sock_fprog
    no_new_privileges()
    _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog)


MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 1 << 12, 1 << 14, 1 << 18
_CAPABILITY_VERSION_3 = 0x20080522


def mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2); the standard library has no call for it."""
    args = [s.encode() if s is not None else None for s in (source, target, fstype, data)]
    result = _libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3])
    _check(result)


def map_own_user(uid: int, gid: int) -> None:
    """In a user namespace this process just made, be the same uid and gid as outside (files
    keep their owners), with supplementary groups off, as an unprivileged user must."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def drop_capabilities() -> None:
    """Give up every capability (a user namespace grants them all inside it): the code must not
    unmount the private /tmp to see the host's, whatever else holds."""
    header = struct.pack("=Ii", _CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two __user_cap_data_struct: effective, permitted, inheritable all 0
    _check(_libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)))


def no_new_privileges() -> None:
    """No setuid binary or file capability can raise privileges again (needed by both filters)."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0)
