"""A stdio transport for the SDK's `Client` with a bound on the size of one message.

The SDK's own stdio transport joins a long line chunk by chunk: one 50 MB line took it 45 s of
CPU here, and a larger one grows memory without limit. This transport reads lines with anyio's
bounded `receive_until`; a message over the bound closes the connection (the call in flight gets
an error, the next call restarts the server). The rest follows the SDK: the server runs in its own
session (process group), and shutdown closes its stdin, waits, then terminates the whole group,
shielded from cancellation so Ctrl-C cannot skip it. A process that outlives all that (a program
killed between spawn and cleanup) is killed at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import anyio
import mcp_types as types
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

from rolepool.core import ConfigError

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""One JSON-RPC message from a server may be this large; a larger one ends the connection."""
EXIT_GRACE = 2.0
"""Seconds a server has to exit after its stdin closes, and again after SIGTERM."""
SAFE_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR")
"""What a server inherits from rolepool's environment, as the SDK does: not API keys."""

_LIVE_GROUPS: set[int] = set()


class MessageTooLarge(Exception):
    """The server sent one message larger than the transport accepts."""


@atexit.register
def _kill_leftovers() -> None:
    for group in list(_LIVE_GROUPS):
        with suppress(OSError):
            os.killpg(group, signal.SIGKILL)


@asynccontextmanager
async def bounded_stdio(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stderr_log: Path | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> AsyncIterator[tuple[object, object]]:
    """Start the server and yield the (read, write) streams the SDK's session expects."""
    full_env = {k: v for k in SAFE_ENV if (v := os.environ.get(k)) is not None}
    full_env.update(env or {})
    log = _open_log(stderr_log) if stderr_log is not None else None
    try:
        process = await anyio.open_process(
            list(command), env=full_env, cwd=cwd, stderr=log, start_new_session=True
        )
    finally:
        if log is not None:
            log.close()  # the server holds its own copy of the descriptor
    _LIVE_GROUPS.add(process.pid)
    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[SessionMessage](0)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_read, process, incoming_send, max_message_bytes)
            tg.start_soon(_write, process, outgoing_receive, incoming_send)
            try:
                yield incoming, outgoing
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(process)
                tg.cancel_scope.cancel()
    finally:
        _LIVE_GROUPS.discard(process.pid)


def _open_log(path: Path) -> BinaryIO:
    try:
        return path.open("ab")
    except OSError as exc:
        message = f"cannot open {path}: {exc.strerror or exc}"
        raise ConfigError(message, where="stderr_log") from None


async def _read(process: Process, incoming: MemoryObjectSendStream, limit: int) -> None:
    """Server stdout -> session, one line at a time, none longer than `limit` bytes."""
    assert process.stdout is not None
    lines = BufferedByteReceiveStream(process.stdout)
    async with incoming:
        while True:
            try:
                line = await lines.receive_until(b"\n", limit)
            except anyio.DelimiterNotFound:
                await incoming.send(MessageTooLarge(f"it sent a message over {limit:,} bytes"))
                return
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                return
            if line.strip():
                await incoming.send(_parse(line))


async def _write(
    process: Process, outgoing: MemoryObjectReceiveStream, incoming: MemoryObjectSendStream
) -> None:
    """Session -> server stdin; a broken pipe closes the incoming side, so no request hangs."""
    assert process.stdin is not None
    async with outgoing:
        async for message in outgoing:
            text = message.message.model_dump_json(by_alias=True, exclude_unset=True)
            try:
                await process.stdin.send(text.encode() + b"\n")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await incoming.aclose()
                return


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        text = line.decode("utf-8", errors="replace")
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(text, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError is one: the session reports it
        return exc


async def _stop(process: Process) -> None:
    """Close stdin, give the server a grace period, then stop its whole process group."""
    with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await process.stdin.aclose()  # type: ignore[union-attr]
    if not await _exited(process, EXIT_GRACE):
        await terminate_posix_process_tree(process, EXIT_GRACE)
    with suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)  # children the server left in its group
    with anyio.move_on_after(EXIT_GRACE):
        await process.aclose()  # closes the pipes and reaps the process


async def _exited(process: Process, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while process.returncode is None:
            await anyio.sleep(0.01)
        return True
    return False
