"""The run loop against scripted workers: validation, retries, concurrency, limits, events."""

from __future__ import annotations

import json

import anyio
import pytest

from rolepool import Agent, FunctionWorker, ScriptedWorker, ToolCall, tool
from rolepool.core import (
    DeadlineExceeded,
    MaxTurnsExceeded,
    ModelBehaviorError,
    RunCancelled,
    TokenBudgetExceeded,
    WorkerError,
)
from rolepool.runtime import EventStore, Limits

pytestmark = pytest.mark.anyio


def call(name: str, **arguments) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def make_adder(log: list):
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: first addend
            b: second addend
        """
        log.append((a, b))
        return a + b

    return add


async def test_tool_call_then_final_answer():
    log: list = []
    worker = ScriptedWorker([call("add", a=2, b=3), "The sum is 5."])
    agent = Agent("calc", role="coder", instructions="Use tools.", tools=[make_adder(log)])
    result = await agent.run("what is 2+3?", worker=worker)
    assert result.output == "The sum is 5."
    assert log == [(2, 3)]
    assert result.turns == 2
    roles = [m.role for m in result.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert result.messages[3].content == "5"
    # the tool result reached the model on the second request
    second = worker.requests[1]
    assert second.messages[-1].role == "tool" and second.messages[-1].content == "5"
    assert [t.name for t in second.tools] == ["add"]


async def test_invalid_call_gets_feedback_and_is_never_executed():
    log: list = []
    worker = ScriptedWorker(
        [
            call("add", a="two", b=3),  # schema error
            call("add", a=2, b=3),  # fixed
            "5",
        ]
    )
    agent = Agent("calc", tools=[make_adder(log)])
    async with agent.start("2+3", worker=worker) as run:
        events = [e async for e in run.events()]
        result = await run.result()
    assert result.output == "5"
    assert log == [(2, 3)]  # the invalid call never ran
    feedback = worker.requests[1].messages[-1]
    assert feedback.role == "tool"
    assert "$.a" in feedback.content and "not executed" in feedback.content
    invalid = [e for e in events if e.type == "tool.call.invalid"]
    parsed = [e for e in events if e.type == "tool.call.parsed"]
    assert len(invalid) == 1 and invalid[0].kind == "schema" and invalid[0].attempt == 0
    assert len(parsed) == 1 and parsed[0].attempt == 1


async def test_unparseable_reply_gets_feedback():
    log: list = []
    worker = ScriptedWorker(
        ['<tool_call>{"name": "add", "arguments": {"a": 1,', call("add", a=1, b=1), "2"]
    )
    result = await Agent("calc", tools=[make_adder(log)]).run("1+1", worker=worker)
    assert result.output == "2" and log == [(1, 1)]
    feedback = worker.requests[1].messages[-1]
    assert feedback.role == "user" and "could not be read" in feedback.content


async def test_retry_budget_exhausted_raises_typed_error(isolated_store):
    log: list = []
    worker = ScriptedWorker([call("add", a="x", b=1)] * 3)
    agent = Agent("calc", tools=[make_adder(log)], max_retries=2)
    with pytest.raises(ModelBehaviorError) as info:
        await agent.run("1+1", worker=worker)
    assert info.value.attempts == 3
    assert "$.a" in (info.value.last_error or "")
    assert log == []
    events = EventStore(isolated_store).events(EventStore(isolated_store).runs()[0].run_id)
    assert events[-1].type == "run.failed" and events[-1].error_type == "ModelBehaviorError"


async def test_retries_reset_after_a_valid_turn():
    log: list = []
    bad, good = call("add", a="x", b=1), call("add", a=1, b=1)
    worker = ScriptedWorker([bad, good, bad, good, "done"])
    result = await Agent("calc", tools=[make_adder(log)], max_retries=1).run("go", worker=worker)
    assert result.output == "done" and log == [(1, 1), (1, 1)]


async def test_unknown_and_forbidden_tools_are_not_executed():
    from rolepool.runtime import LoopInputs, new_scope, run_agent

    log: list = []
    worker = ScriptedWorker([call("rm_rf", path="/"), call("deploy"), "ok"])
    spec = LoopInputs(
        name="a",
        role="writer",
        instructions="",
        tools=[make_adder(log)],
        forbidden_tools=frozenset({"deploy"}),
    )
    scope = new_scope(store=False)
    sub = scope.stream.subscribe()
    out = await run_agent(spec, "go", worker, scope)
    scope.stream.close()
    assert out.output == "ok" and log == []
    kinds = [e.kind async for e in sub if e.type == "tool.call.invalid"]
    assert kinds == ["unknown_tool", "forbidden"]
    assert "no tool named 'rm_rf'" in worker.requests[1].messages[-1].content


async def test_parallel_calls_run_concurrently():
    started = {"a": anyio.Event(), "b": anyio.Event()}

    @tool
    async def wait_for(me: str, other: str) -> str:
        """Signal that `me` started, then wait until `other` has started too."""
        started[me].set()
        with anyio.fail_after(5):  # sequential execution would dead-wait here
            await started[other].wait()
        return f"{me} saw {other}"

    reply = json.dumps(
        [
            {"name": "wait_for", "arguments": {"me": "a", "other": "b"}},
            {"name": "wait_for", "arguments": {"me": "b", "other": "a"}},
        ]
    )
    worker = ScriptedWorker([reply, "both ran"])
    result = await Agent("p", tools=[wait_for]).run("go", worker=worker)
    tool_msgs = [m.content for m in result.messages if m.role == "tool"]
    assert tool_msgs == ["a saw b", "b saw a"]


async def test_tool_timeout_and_crash_go_back_to_the_model():
    @tool(timeout=0.2)
    async def slow() -> str:
        """Never finishes in time."""
        await anyio.sleep(30)
        return "late"

    @tool
    def boom() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    worker = ScriptedWorker(
        [
            json.dumps([{"name": "slow", "arguments": {}}, {"name": "boom", "arguments": {}}]),
            "recovered",
        ]
    )
    with anyio.fail_after(10):
        result = await Agent("t", tools=[slow, boom]).run("go", worker=worker)
    assert result.output == "recovered"
    tool_msgs = [m.content for m in result.messages if m.role == "tool"]
    assert tool_msgs == ["ERROR: timed out after 0.2s", "ERROR: RuntimeError: disk on fire"]


async def test_max_turns():
    worker = FunctionWorker(lambda req: call("add", a=1, b=1))
    with pytest.raises(MaxTurnsExceeded):
        await Agent("loop", tools=[make_adder([])], max_turns=3).run("go", worker=worker)
    assert len(worker.requests) == 3


async def test_worker_failure_is_a_worker_error():
    def broken(req):
        raise ConnectionError("gpu fell off")

    with pytest.raises(WorkerError, match="gpu fell off"):
        await Agent("w").run("go", worker=FunctionWorker(broken, name="flaky"))


async def test_deadline_and_model_timeout():
    async def hang(req):
        await anyio.sleep(60)

    with anyio.fail_after(10):
        with pytest.raises(DeadlineExceeded):
            await Agent("w").run("go", worker=FunctionWorker(hang), limits=Limits(deadline=0.2))
        with pytest.raises(WorkerError, match="model_timeout"):
            await Agent("w").run(
                "go", worker=FunctionWorker(hang), limits=Limits(model_timeout=0.2)
            )


async def test_token_budget():
    worker = FunctionWorker(lambda req: call("add", a=1, b=1))
    with pytest.raises(TokenBudgetExceeded):
        await Agent("w", tools=[make_adder([])], max_turns=50).run(
            "go " * 20, worker=worker, limits=Limits(max_tokens=100)
        )


async def test_cancellation_cancels_tools_and_ends_the_run(isolated_store):
    tool_started = anyio.Event()
    cancelled = []

    @tool
    async def forever() -> str:
        """Runs until cancelled."""
        tool_started.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise
        return "never"

    worker = ScriptedWorker([call("forever")])
    with anyio.fail_after(10):
        async with Agent("c", tools=[forever]).start("go", worker=worker) as run:
            await tool_started.wait()
            run.cancel()
            with pytest.raises(RunCancelled):
                await run.result()
    assert cancelled == [True]
    store = EventStore(isolated_store)
    last = store.events(run.run_id)[-1]
    assert last.type == "run.failed" and last.error_type == "RunCancelled"


async def test_event_order_and_nesting():
    worker = ScriptedWorker([call("add", a=1, b=2), "3"])
    async with Agent("calc", tools=[make_adder([])]).start("1+2", worker=worker) as run:
        events = [e async for e in run.events()]
    assert [e.type for e in events] == [
        "run.started",
        "agent.started",
        "model.requested",
        "model.completed",
        "tool.call.parsed",
        "tool.started",
        "tool.finished",
        "model.requested",
        "model.completed",
        "agent.finished",
        "run.finished",
    ]
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(e.run_id == run.run_id for e in events)
    by_type = {e.type: e for e in events}
    run_span = by_type["run.started"].span_id
    agent_span = by_type["agent.started"].span_id
    assert by_type["run.started"].parent_id is None
    assert by_type["run.finished"].span_id == run_span
    assert by_type["agent.started"].parent_id == run_span
    assert by_type["agent.finished"].span_id == agent_span
    assert by_type["tool.started"].parent_id == agent_span
    assert (
        by_type["tool.started"].span_id
        == by_type["tool.finished"].span_id
        == by_type["tool.call.parsed"].span_id
    )
    models = [e for e in events if e.type.startswith("model.")]
    assert models[0].span_id == models[1].span_id != models[2].span_id == models[3].span_id
    assert all(e.parent_id == agent_span for e in models)
    assert by_type["run.finished"].output == "3"


async def test_native_tool_calls_from_worker_skip_parsing():
    log: list = []
    worker = ScriptedWorker([ToolCall(name="add", arguments={"a": 4, "b": 5}), "9"])
    result = await Agent("calc", tools=[make_adder(log)]).run("4+5", worker=worker)
    assert log == [(4, 5)] and result.output == "9"


def test_run_sync_and_its_misuse():
    result = Agent("s").run_sync("hi", worker=ScriptedWorker(["hello"]))
    assert result.output == "hello"

    async def inside():
        Agent("s").run_sync("hi", worker=ScriptedWorker(["hello"]))

    from rolepool.core import UserError

    with pytest.raises(UserError, match="running event loop"):
        anyio.run(inside)


def test_agent_definition_errors():
    from rolepool.core import ConfigError

    @tool(roles=["coder"])
    def compile_it() -> str:
        """Coders only."""
        return ""

    with pytest.raises(ConfigError, match="not 'writer'"):
        Agent("w", role="writer", tools=[compile_it])
    with pytest.raises(ConfigError, match="two tools"):
        Agent("w", tools=[make_adder([]), make_adder([])])
    with pytest.raises(ConfigError, match="agent name"):
        Agent("bad name!")


async def test_layers_below_the_runtime_emit_into_the_current_run():
    from rolepool.core.emit import emit
    from rolepool.core.events import PoolRouted

    def routed(req):
        emit(
            PoolRouted(
                run_id=req.run_id,
                parent_id=req.span_id,
                role=req.role or "",
                worker="w1",
                policy_version="v1",
            )
        )
        return "done"

    async with Agent("a", role="writer").start("go", worker=FunctionWorker(routed)) as run:
        events = [e async for e in run.events()]
    routed_event = next(e for e in events if e.type == "pool.routed")
    model_span = next(e for e in events if e.type == "model.requested").span_id
    assert routed_event.parent_id == model_span and routed_event.role == "writer"
    emit(PoolRouted(run_id="x", role="r", worker="w", policy_version="v"))  # no run: a no-op


async def test_a_successful_finish_call_ends_the_run():
    @tool(ends_run=True)
    def finish(answer: str) -> str:
        """Give the final answer."""
        return answer

    log: list = []
    worker = ScriptedWorker(
        [
            call("add", a=1, b=2),
            call("finish", answer=7),  # invalid: fed back, the run goes on
            json.dumps(
                [
                    {"name": "add", "arguments": {"a": 2, "b": 2}},
                    {"name": "finish", "arguments": {"answer": "1+2 is 3"}},
                ]
            ),
        ]
    )
    result = await Agent("f", tools=[make_adder(log), finish]).run("go", worker=worker)
    assert result.output == "1+2 is 3" and result.turns == 3
    assert log == [(1, 2), (2, 2)]  # calls beside finish in its turn still ran
    assert worker.remaining == 0


def _fits(limit: int):
    """A worker with a context of `limit` characters of message content (refusing longer
    prompts as a real worker refuses prompts over its context): it reads three documents, one
    call per turn, then answers."""
    from rolepool.core import RequestRefused

    def fn(request):
        size = sum(len(m.content) for m in request.messages)
        if size > limit:
            raise RequestRefused(f"prompt of {size} does not fit the context of {limit}")
        done = sum(m.role == "tool" for m in request.messages)
        return call("read", doc=f"d{done}") if done < 3 else "summary"

    return FunctionWorker(fn)


@tool
def read(doc: str) -> str:
    """Read a document.

    Args:
        doc: its id
    """
    return f"{doc}: " + "x" * 100


async def test_a_prompt_over_the_context_is_asked_again_with_the_oldest_results_elided():
    worker = _fits(250)  # turn 4's prompt fits with two of three results elided
    agent = Agent("reader", tools=[read])
    async with agent.start("read d0 to d2", worker=worker) as run:
        events = [e async for e in run.events()]
        result = await run.result()
    assert result.output == "summary"
    # the transcript keeps every result whole ...
    assert [m.content[:3] for m in result.messages if m.role == "tool"] == ["d0:", "d1:", "d2:"]
    # ... while the last request showed the two oldest as markers and the newest whole
    shown = [m.content for m in worker.requests[-1].messages if m.role == "tool"]
    assert shown[:2] == ["…[elided: 104 chars, to fit the model's context]"] * 2
    assert shown[2].startswith("d2: x")
    asked = [e for e in events if e.type == "model.requested"]
    assert [(e.turn, e.elided) for e in asked] == [(1, 0), (2, 0), (3, 0), (4, 0), (4, 1), (4, 2)]
    refused = [e for e in events if e.type == "model.completed" and e.error]
    assert len(refused) == 2 and "does not fit" in refused[0].error


async def test_a_prompt_that_cannot_fit_even_elided_is_a_typed_refusal():
    """The newest result (what answers the latest call) is never elided: a prompt that does not
    fit without it fails as the worker refused it, after eliding everything older."""
    from rolepool.core import RequestRefused

    worker = _fits(150)
    agent = Agent("reader", tools=[read])
    with pytest.raises(RequestRefused, match="does not fit"):
        await agent.run("read d0 to d2", worker=worker)
    last = worker.requests[-1].messages
    assert [m.content.startswith("…[elided") for m in last if m.role == "tool"] == [True, False]


async def test_a_retry_that_does_not_fit_elides_the_unreadable_replies_it_retries_from():
    """A reply that ran on to the token limit can fill a small model's context: the retry is
    asked with it as a marker (the feedback after it still says what was wrong), and the
    transcript keeps it whole."""
    from rolepool.core import RequestRefused

    runaway = '<tool_call>{"name": "read", "arguments": {"doc": "' + "d" * 300

    def fn(request):
        size = sum(len(m.content) for m in request.messages)
        if size > 1000:  # the first retry fits, the second only with the first reply elided
            raise RequestRefused(f"prompt of {size} does not fit the context of 1000")
        if sum(m.role == "assistant" for m in request.messages) < 2:
            return runaway  # twice, each cut off unparseable
        return "done"

    worker = FunctionWorker(fn)
    agent = Agent("reader", tools=[read])
    async with agent.start("read d0", worker=worker) as run:
        events = [e async for e in run.events()]
        result = await run.result()
    assert result.output == "done"
    assert [m.content for m in result.messages if m.role == "assistant"][:2] == [runaway] * 2
    marker = "…[elided: 350 chars, to fit the model's context]"
    shown = [m.content for m in worker.requests[-1].messages if m.role == "assistant"]
    assert shown == [marker, runaway]  # the oldest first: enough to fit
    asked = [(e.turn, e.elided) for e in events if e.type == "model.requested"]
    assert asked == [(1, 0), (2, 0), (3, 0), (3, 1)]
    assert "could not be read" in worker.requests[-1].messages[-1].content


async def test_a_retry_never_elides_the_results_it_retries_from():
    """After an unparseable (or invalid) reply, the results of the latest valid call are still
    what the model must act on: a refused retry elides only older ones, then fails typed."""
    from rolepool.core import RequestRefused

    def fn(request):
        tools = [m.content for m in request.messages if m.role == "tool"]
        retrying = sum(m.role == "user" for m in request.messages) > 1
        if retrying and sum(len(t) for t in tools) > 60:
            raise RequestRefused("prompt does not fit the context")
        if len(tools) < 2:
            return call("read", doc=f"d{len(tools)}")
        return '<tool_call>{"name": "read", "arguments": {'  # cut off: unparseable

    worker = FunctionWorker(fn)
    with pytest.raises(RequestRefused, match="does not fit"):
        await Agent("reader", tools=[read]).run("read d0 and d1", worker=worker)
    shown = [[m.content[:3] for m in r.messages if m.role == "tool"] for r in worker.requests]
    assert shown[-1] == ["…[e", "d1:"]  # d0 elided, d1 (the latest valid call's) whole
    assert all(s[-1] == "d1:" for s in shown if len(s) == 2)
