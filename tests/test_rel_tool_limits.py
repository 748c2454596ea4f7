"""SECURITY.md, promise 2 (tool faults): a reply's parallel calls are bounded, and every call
that started ends with a `tool.finished`, also when the run is ended around it.

The red-team pass started 120 sandboxes at once from one reply with 120 parallel `run_python`
calls (nothing bounded them but the uid pool), and found calls cancelled by `StepLimitExceeded`
with no finished event.
"""

from __future__ import annotations

import anyio
import pytest
from workflow_scripts import calls, finish, last, role_worker

from rolepool import Agent, FunctionWorker, ToolCall, Workflow, tool
from rolepool.core import LimitExceeded, RolepoolError
from rolepool.runtime import EventStore, Limits

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]


class Gauge:
    def __init__(self) -> None:
        self.now = self.peak = self.total = 0

    async def hold(self, seconds: float) -> None:
        self.now += 1
        self.total += 1
        self.peak = max(self.peak, self.now)
        try:
            await anyio.sleep(seconds)
        finally:
            self.now -= 1


def one_reply_of(n: int, name: str) -> FunctionWorker:
    def reply(request):
        if last(request).role == "user":
            return [ToolCall(id=f"c{i}", name=name, arguments={}) for i in range(n)]
        return "done"

    return FunctionWorker(reply, name="w")


@pytest.mark.parametrize("limit", [1, 8])
async def test_a_reply_of_120_parallel_calls_runs_at_most_max_parallel_tools_at_once(
    limit, isolated_store
):
    gauge = Gauge()

    @tool
    async def work() -> str:
        """Work a little."""
        await gauge.hold(0.01)
        return "ok"

    agent = Agent("a", role="coder", instructions="x", tools=[work])
    limits = Limits(max_parallel_tools=limit, tool_timeout=0.5)  # a wait for a slot is not timed
    result = await agent.run("go", worker=one_reply_of(120, "work"), limits=limits)
    assert result.output == "done"
    assert (gauge.total, gauge.peak) == (120, limit)
    with EventStore(isolated_store) as store:
        events = store.events(result.run_id)
    finished = [e for e in events if e.type == "tool.finished"]
    assert len(finished) == 120 and all(e.error is None for e in finished)


async def test_steps_take_no_tool_slot_so_a_workflow_cannot_deadlock(tmp_path):
    """Four parallel steps, each calling a tool, with one tool slot for the whole run: the
    steps (assign calls) hold no slot, so their agents' calls take turns instead of waiting on
    each other for ever."""
    planner_calls = [("assign", {"role": "coder", "task": f"print {i}"}) for i in range(4)]

    def planner(request):
        if last(request).role == "user":
            return calls(*planner_calls)
        return finish("all done")

    def coder(request):
        if last(request).role == "user":
            return calls(("run_python", {"code": "print(1)"}))
        return finish("1")

    worker = role_worker(planner, coder=coder)
    with anyio.fail_after(120):
        result = await Workflow().run(
            "Go.", worker=worker, workspace=tmp_path, limits=Limits(max_parallel_tools=1)
        )
    assert [s.answer for s in result.steps] == ["1"] * 4


async def test_calls_cancelled_when_a_limit_ends_the_run_still_finish(isolated_store):
    """One call hits a run limit while two others are still running: the run fails typed, and
    each started call has its tool.finished, saying it was cancelled."""

    @tool
    async def slow() -> str:
        """Take long."""
        await anyio.sleep(30)
        return "late"

    class Over(LimitExceeded):
        limit = "test"

    @tool
    async def over() -> str:
        """Hit a limit."""
        await anyio.sleep(0.05)
        raise Over("over the limit")

    def reply(request):
        return [
            ToolCall(id="s1", name="slow", arguments={}),
            ToolCall(id="s2", name="slow", arguments={}),
            ToolCall(id="o", name="over", arguments={}),
        ]

    agent = Agent("a", role="coder", instructions="x", tools=[slow, over])
    with anyio.fail_after(20), pytest.raises(RolepoolError) as info:
        await agent.run("go", worker=FunctionWorker(reply, name="w"), run_id="run_cancel")
    assert isinstance(info.value, LimitExceeded)
    with EventStore(isolated_store) as store:
        events = store.events("run_cancel")
    started = {e.call_id for e in events if e.type == "tool.started"}
    finished = {e.call_id: e.error for e in events if e.type == "tool.finished"}
    assert started == {"s1", "s2", "o"} == set(finished)
    assert "cancelled" in finished["s1"] and "cancelled" in finished["s2"]
    assert "over the limit" in finished["o"]


async def test_a_planner_over_max_steps_leaves_no_call_unfinished(tmp_path, isolated_store):
    """The pass's case: a planner assigning far more steps than max_steps ends the run with
    StepLimitExceeded; every tool call that started, steps and their agents' calls, finished."""
    from rolepool.runtime.limits import StepLimitExceeded

    def planner(request):
        if last(request).role == "user":
            return calls(*[("assign", {"role": "coder", "task": f"print {i}"}) for i in range(50)])
        return finish("x")

    with pytest.raises(StepLimitExceeded):
        await Workflow().run("Go.", worker=role_worker(planner), workspace=tmp_path,
                             limits=Limits(max_steps=3), run_id="run_steps")  # fmt: skip
    with EventStore(isolated_store) as store:
        events = store.events("run_steps")
    started = {e.span_id for e in events if e.type == "tool.started"}
    finished = {e.span_id for e in events if e.type == "tool.finished"}
    assert len(started) >= 4 and started == finished
