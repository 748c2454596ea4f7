"""`read_file` / `write_file`: the coder role's access to the run's workspace, and nothing else.

The path comes from the model, so it is hostile until proven otherwise. Checking a resolved path
and then opening it leaves a window in which a symlink can be swapped in; instead every component
is opened relative to the directory before it with `O_NOFOLLOW`, so a symlink anywhere along the
path makes the open fail, and what is checked is what is read or written.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import PurePosixPath

from rolepool.core import RunContext, ToolError
from rolepool.tools.tool import tool

MAX_READ_BYTES = 100_000
"""Longer files are cut with a marker: the run loop would cut the result further anyway."""
MAX_WRITE_BYTES = 1_000_000

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str, tool_name: str) -> list[str]:
    """The path's components, refusing anything that could name a place outside the workspace."""
    if not path or not path.strip():
        raise ToolError("path is empty", tool=tool_name)
    if "\0" in path:
        raise ToolError("path contains a NUL character", tool=tool_name)
    if path.startswith(("/", "\\", "~")) or PurePosixPath(path).is_absolute():
        raise ToolError(
            f"{path!r} is absolute; give a path relative to the workspace", tool=tool_name
        )
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ToolError(f"{path!r} uses '..'; paths may not leave the workspace", tool=tool_name)
    if not parts:
        raise ToolError(f"{path!r} names the workspace itself, not a file", tool=tool_name)
    return parts


def _workspace_fd(ctx: RunContext, tool_name: str) -> int:
    if ctx.workspace is None:
        raise ToolError("no workspace for this run", tool=tool_name)
    try:
        return os.open(ctx.workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        message = f"the run's workspace cannot be opened: {exc.strerror}"
        raise ToolError(message, tool=tool_name) from None


def _open_parent(ctx: RunContext, parts: list[str], tool_name: str, *, create: bool) -> int:
    """A descriptor of the directory holding the last component, opened one step at a time."""
    fd = _workspace_fd(ctx, tool_name)
    try:
        for index, name in enumerate(parts[:-1]):
            where = "/".join(parts[: index + 1])
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise ToolError(f"no such directory: {where!r}", tool=tool_name) from None
                os.mkdir(name, 0o755, dir_fd=fd)
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _component_error(exc, where, fd, name, tool_name) from None
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _component_error(exc: OSError, where: str, dir_fd: int, name: str, tool_name: str) -> ToolError:
    """A message naming what is wrong with one component (a symlink, a file, ...)."""
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode) or exc.errno == errno.ELOOP:
        return ToolError(f"{where!r} is a symbolic link; symlinks are refused", tool=tool_name)
    if exc.errno == errno.ENOTDIR:
        return ToolError(f"{where!r} is not a directory", tool=tool_name)
    if exc.errno == errno.EISDIR:
        return ToolError(f"{where!r} is a directory", tool=tool_name)
    return ToolError(f"{where!r}: {exc.strerror}", tool=tool_name)


def _check_regular(fd: int, path: str, tool_name: str) -> os.stat_result:
    """The open file's status; closes `fd` and refuses anything but a singly linked file."""
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"{path!r} is not a regular file"
    elif info.st_nlink > 1:  # a hard link may share its contents with a file outside
        problem = f"{path!r} has other hard links; refused"
    if problem:
        os.close(fd)
        raise ToolError(problem, tool=tool_name)
    return info


@tool(roles={"coder"}, description="Read a file from the workspace.")
def read_file(ctx: RunContext, path: str) -> str:
    """Read a text file of the run's workspace (invalid UTF-8 is replaced, long files cut).

    Args:
        path: Path inside the workspace.
    """
    parts = _parts(path, "read_file")
    parent = _open_parent(ctx, parts, "read_file", create=False)
    try:
        # O_NONBLOCK: opening a FIFO planted in the workspace must not hang the tool.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, dir_fd=parent)
    except FileNotFoundError:
        raise ToolError(f"no such file: {path!r}", tool="read_file") from None
    except OSError as exc:
        raise _component_error(exc, path, parent, parts[-1], "read_file") from None
    finally:
        os.close(parent)
    size = _check_regular(fd, path, "read_file").st_size
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_READ_BYTES)
    text = data.decode("utf-8", "replace")
    if size > MAX_READ_BYTES:
        text += f"\n…[truncated: {size} bytes in all, showing the first {MAX_READ_BYTES}]"
    return text


@tool(roles={"coder"}, description="Write a file in the workspace.")
def write_file(ctx: RunContext, path: str, content: str) -> str:
    """Create or replace a file of the run's workspace; missing directories are created.

    Args:
        path: Path inside the workspace.
        content: The file's text.
    """
    parts = _parts(path, "write_file")
    data = content.encode("utf-8", "surrogatepass")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(
            f"content is {len(data)} bytes, over the {MAX_WRITE_BYTES}-byte limit",
            tool="write_file",
        )
    parent = _open_parent(ctx, parts, "write_file", create=True)
    try:
        # No O_TRUNC here: the file is truncated only after it is known to be a regular file
        # with a single link, so a hard link cannot be used to clobber a file outside.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, 0o644, dir_fd=parent)
    except OSError as exc:
        raise _component_error(exc, path, parent, parts[-1], "write_file") from None
    finally:
        os.close(parent)
    _check_regular(fd, path, "write_file")
    with os.fdopen(fd, "wb") as f:
        f.truncate(0)
        f.write(data)
    return f"wrote {len(data)} bytes to {'/'.join(parts)}"
