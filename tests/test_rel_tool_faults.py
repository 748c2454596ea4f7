"""SECURITY.md, promise 2: tool faults.

A tool that raises, hangs, returns something that is not JSON, returns a huge result or ignores
cancellation never ends the run: the model gets the error (or the truncated result) as the tool's
answer, within the tool timeout, and the run goes on to its next turn.
"""

from __future__ import annotations

import json
import threading
import time

import anyio
import pytest
from rel_support import check_run_log

from rolepool import Agent, FunctionWorker, tool
from rolepool.core import Request
from rolepool.runtime import Limits
from rolepool.runtime.run import resolve_store

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]


def calls_then_answers(tool_name: str) -> FunctionWorker:
    """Calls `tool_name` once, then answers with what the tool said (so tests can read it)."""

    def fn(request: Request) -> str:
        last = request.messages[-1]
        if last.role == "tool":
            return "the tool said: " + last.content
        return json.dumps({"name": tool_name, "arguments": {}})

    return FunctionWorker(fn, name="model")


async def run_tool(t, limits: Limits | None = None):
    limits = limits or Limits(tool_timeout=0.5, deadline=20)
    started = time.perf_counter()
    result = await Agent("t", tools=[t]).run("go", worker=calls_then_answers(t.name), limits=limits)
    events = resolve_store(None).events(result.run_id)
    check_run_log(events)
    (finished,) = [e for e in events if e.type == "tool.finished"]
    return result.output, finished, time.perf_counter() - started


class Opaque:
    pass


def _recursive() -> list:
    value: list = []
    value.append(value)
    return value


RAISERS = {
    "runtime_error": RuntimeError("disk on fire"),
    "os_error": OSError(28, "No space left on device"),
    "recursion": RecursionError("maximum recursion depth exceeded"),
    "memory": MemoryError(),
    "unicode": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
}


@pytest.mark.parametrize("name", sorted(RAISERS))
async def test_a_raising_tool_is_an_error_for_the_model(name):
    @tool(name=f"raise_{name}")
    def failing() -> str:
        """Fails."""
        raise RAISERS[name]

    output, finished, _ = await run_tool(failing)
    assert finished.error.startswith(type(RAISERS[name]).__name__)
    assert output.startswith("the tool said: ERROR: " + type(RAISERS[name]).__name__)


async def test_a_tool_calling_sys_exit_is_an_error_for_the_model():
    @tool
    def cli_wrapper() -> str:
        """Wraps a command-line tool that exits on bad input."""
        raise SystemExit(2)

    try:
        output, finished, _ = await run_tool(cli_wrapper)
    except SystemExit:
        pytest.fail("SystemExit escaped the run")
    assert finished.error.startswith("SystemExit")


@pytest.mark.parametrize("style", ["async", "sync-sleep", "sync-ignores-cancel"])
async def test_a_hanging_tool_times_out_and_the_run_goes_on(style):
    release = threading.Event()
    if style == "async":

        @tool
        async def hang() -> str:
            """Hangs."""
            await anyio.sleep(3600)
            return "never"

    elif style == "sync-sleep":

        @tool
        def hang() -> str:
            """Blocks its thread."""
            release.wait(60)
            return "never"

    else:

        @tool
        def hang() -> str:
            """Spins and cannot be interrupted: a thread has no cancellation."""
            deadline = time.monotonic() + 60
            while not release.is_set() and time.monotonic() < deadline:
                pass
            return "never"

    try:
        output, finished, seconds = await run_tool(hang)
    finally:
        release.set()  # let the abandoned thread end so it does not outlive the test
    assert finished.error == "timed out after 0.5s"
    assert output == "the tool said: ERROR: timed out after 0.5s"
    assert seconds < 10  # the 0.5 s timeout, not the tool's hour


async def test_an_async_tool_that_swallows_cancellation_is_still_a_timeout():
    @tool
    async def stubborn() -> str:
        """Catches its cancellation and keeps going."""
        for _ in range(100):  # bounded so the test itself ends
            try:
                await anyio.sleep(0.05)
            except anyio.get_cancelled_exc_class():
                pass
        return "finally"

    output, finished, seconds = await run_tool(stubborn, Limits(tool_timeout=0.2, deadline=20))
    assert seconds < 2  # anyio re-delivers the cancellation at every await, so it ends soon
    assert finished.error == "timed out after 0.2s"  # ... but its late result must not count


UNSERIALISABLE = {
    "object": Opaque,
    "set": lambda: {1, 2},
    "bytes": lambda: b"\x00\xff",
    "circular": _recursive,
    "tuple_keys": lambda: {(1, 2): "x"},
    "nested_object": lambda: {"rows": [1, Opaque()]},
}


@pytest.mark.parametrize("name", sorted(UNSERIALISABLE))
async def test_an_unserialisable_result_is_an_error_not_a_crash(name):
    @tool(name=f"returns_{name}")
    def returns() -> object:
        """Returns something JSON cannot hold."""
        return UNSERIALISABLE[name]()

    output, finished, _ = await run_tool(returns)
    assert "not serialisable to JSON" in finished.error
    assert output.startswith("the tool said: ERROR: ToolError")


@pytest.mark.parametrize("shape", ["text", "json"])
async def test_a_huge_result_is_truncated_with_a_marker(shape):
    @tool(name=f"huge_{shape}")
    def huge() -> object:
        """Returns about 30 MB."""
        if shape == "text":
            return "y" * 30_000_000
        return [{"row": i, "value": "z" * 100} for i in range(250_000)]

    limits = Limits(tool_timeout=20, deadline=30, max_result_chars=5_000)
    output, finished, _ = await run_tool(huge, limits)
    assert finished.error is None
    assert len(finished.result) <= 2_000  # the event keeps a short preview
    assert "…[truncated: " in output and "showing first 5000]" in output
    assert len(output) < 6_000
