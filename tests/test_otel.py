"""OTel export: span names, nesting, GenAI attributes, content privacy, failover, invalid calls."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rolepool import Agent, Completion, FunctionWorker, Request, ScriptedWorker, tool
from rolepool.core import ConfigError, WorkerError
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.runtime import EventStore
from rolepool.runtime import run as run_module
from rolepool.runtime.otel import disable_otel, enable_otel, export_events, provider_from_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans():
    """Every run exports into an in-memory exporter; returns a function reading finished spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory, provider
    disable_otel()


def by_name(finished) -> dict:
    return {s.name: s for s in finished}


@tool
def lookup(city: str) -> str:
    """Look a city up.

    Args:
        city: the city's name
    """
    return f"{city}: sunny, secret-result"


def parallel_worker() -> ScriptedWorker:
    calls = [
        {"name": "lookup", "arguments": {"city": "Paris"}},
        {"name": "lookup", "arguments": {"city": "Oslo"}},
    ]
    return ScriptedWorker(
        [
            Completion(
                text=json.dumps(calls), model="moe-8x", expert_load=[[6, 2, 0, 0], [2, 2, 2, 2]]
            ),
            '{"name": "lookup", "arguments": {"city": 7}}',  # invalid: schema
            "Paris and Oslo are sunny.",
        ],
        architecture="moe",
    )


async def test_parallel_calls_nest_under_agent_and_run(spans):
    memory, provider = spans
    enable_otel(provider)
    agent = Agent("weather", role="search", tools=[lookup])
    result = await agent.run("Weather in Paris and Oslo? secret-task", worker=parallel_worker())
    finished = memory.get_finished_spans()
    names = [s.name for s in finished]
    assert names.count("execute_tool lookup") == 3  # two valid, one invalid
    assert names.count("chat moe-8x") == 1 and names.count("chat test:scripted") == 2
    root = by_name(finished)["rolepool.run weather"]
    agent_span = by_name(finished)["invoke_agent weather"]
    assert root.parent is None and agent_span.parent.span_id == root.context.span_id
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}
    for s in finished:
        if s.name.startswith(("chat", "execute_tool")):
            assert s.parent.span_id == agent_span.context.span_id
    assert agent_span.kind == SpanKind.INTERNAL
    assert agent_span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent_span.attributes["gen_ai.agent.name"] == "weather"
    assert agent_span.attributes["rolepool.role"] == "search"
    assert agent_span.attributes["gen_ai.conversation.id"] == result.run_id

    chat = by_name(finished)["chat moe-8x"]
    assert chat.kind == SpanKind.CLIENT
    a = chat.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "rolepool"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "moe-8x"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["rolepool.architecture"] == "moe" and a["rolepool.worker"] == "scripted"
    assert a["rolepool.expert_load.layers"] == 2 and a["rolepool.expert_load.experts"] == 4
    assert a["rolepool.expert_load.max_over_mean_max"] == 3.0  # 6 of 8 on one of 4 experts
    assert tuple(a["rolepool.expert_load.entropy"])[1] == 1.0

    tools = [s for s in finished if s.name == "execute_tool lookup"]
    valid = [s for s in tools if s.attributes["rolepool.validation.outcome"] == "valid"]
    assert len(valid) == 2 and all(s.status.status_code != StatusCode.ERROR for s in valid)
    assert {s.attributes["gen_ai.tool.call.id"] for s in valid} != {None}
    assert all(s.attributes["gen_ai.tool.name"] == "lookup" for s in tools)
    assert all(s.start_time <= s.end_time for s in finished)
    # the two parallel calls overlap in time: both start before either ends
    assert max(s.start_time for s in valid) <= min(s.end_time for s in valid)


async def test_invalid_call_is_an_error_span_with_the_validation_errors(spans):
    memory, provider = spans
    enable_otel(provider)
    await Agent("weather", tools=[lookup]).run("go", worker=parallel_worker())
    invalid = [
        s
        for s in memory.get_finished_spans()
        if s.attributes.get("rolepool.validation.outcome") == "schema"
    ]
    assert len(invalid) == 1
    span = invalid[0]
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "invalid_call.schema"
    assert any("$.city" in e for e in span.attributes["rolepool.validation.errors"])
    assert span.start_time == span.end_time  # never executed


async def test_content_is_recorded_only_when_asked(spans):
    memory, provider = spans
    enable_otel(provider)
    await Agent("weather", tools=[lookup]).run("secret-task", worker=parallel_worker())
    private = json.dumps([dict(s.attributes) for s in memory.get_finished_spans()])
    assert "secret-task" not in private and "secret-result" not in private
    assert "Paris" not in private and "gen_ai.tool.call.arguments" not in private

    memory.clear()
    enable_otel(provider, record_content=True)
    await Agent("weather", tools=[lookup]).run("secret-task", worker=parallel_worker())
    finished = memory.get_finished_spans()
    agent_span = by_name(finished)["invoke_agent weather"]
    assert "secret-task" in agent_span.attributes["gen_ai.input.messages"]
    assert "sunny" in agent_span.attributes["gen_ai.output.messages"]
    tool_span = next(s for s in finished if "gen_ai.tool.call.result" in s.attributes)
    assert "secret-result" in tool_span.attributes["gen_ai.tool.call.result"]
    assert json.loads(tool_span.attributes["gen_ai.tool.call.arguments"])["city"] in {
        "Paris",
        "Oslo",
    }


async def test_failover_is_a_span_event_on_the_model_call(spans):
    memory, provider = spans
    enable_otel(provider)

    def down(request: Request) -> str:
        raise RuntimeError("primary is down")

    pool = Pool(
        [
            FunctionWorker(down, name="a", architecture="moe"),
            FunctionWorker(lambda r: "ok", name="b"),
        ],
        RoutingPolicy(
            version="v7",
            routes={"coder": Route(choices=[Choice(worker="a")], fallbacks=["b"])},
        ),
    )
    await Agent("dev", role="coder").run("write code", worker=pool)
    chat = next(s for s in memory.get_finished_spans() if s.name.startswith("chat"))
    assert chat.attributes["rolepool.worker"] == "b"
    assert chat.attributes["rolepool.policy_version"] == "v7"
    events = {e.name: e for e in chat.events}
    failover = events["rolepool.pool.failover"]
    assert failover.attributes["rolepool.from_worker"] == "a"
    assert failover.attributes["rolepool.to_worker"] == "b"
    assert "primary is down" in failover.attributes["rolepool.error"]
    assert events["rolepool.pool.routed"].attributes["rolepool.choice"] == "fallback"
    assert chat.start_time <= failover.timestamp <= chat.end_time


async def test_failed_run_and_worker_error_have_error_status(spans):
    memory, provider = spans
    enable_otel(provider)
    with pytest.raises(WorkerError):
        await Agent("a").run("go", worker=ScriptedWorker([]))
    finished = by_name(memory.get_finished_spans())
    assert finished["chat"].status.status_code == StatusCode.ERROR
    assert finished["chat"].attributes["error.type"] == "WorkerError"
    assert finished["rolepool.run a"].attributes["error.type"] == "WorkerError"
    assert finished["invoke_agent a"].status.status_code == StatusCode.ERROR


async def test_off_by_default_and_disable(spans):
    memory, provider = spans
    await Agent("a").run("go", worker=ScriptedWorker(["hi"]))
    assert memory.get_finished_spans() == ()
    enable_otel(provider)
    disable_otel()
    await Agent("a").run("go", worker=ScriptedWorker(["hi"]))
    assert memory.get_finished_spans() == ()


async def test_stored_run_exports_the_same_spans(spans, tmp_path):
    memory, provider = spans
    store = EventStore(tmp_path / "e.db")
    result = await Agent("weather", tools=[lookup]).run("go", worker=parallel_worker(), store=store)
    export_events(store.events(result.run_id), provider)
    names = sorted(s.name for s in memory.get_finished_spans())
    assert names.count("execute_tool lookup") == 3 and "invoke_agent weather" in names


def test_exporter_from_env():
    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert provider.resource.attributes["service.name"] == "rolepool"
    provider_from_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_SERVICE_NAME": "svc"})
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        provider_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_otlp_without_the_extra_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_otlp(name, *args, **kwargs):
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otlp)
    with pytest.raises(ConfigError, match=r"rolepool\[otel\]"):
        provider_from_env({"OTEL_TRACES_EXPORTER": "otlp"})


def test_cli_otel_switch(monkeypatch, capsys, spans):
    from rolepool.cli import main

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    assert main(["--otel", "trace", "list"]) == 2
    assert "OTEL_TRACES_EXPORTER" in capsys.readouterr().err
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    main(["--otel", "trace", "list"])  # no store yet: exit 2, but OTel was switched on
    assert run_module._run_hooks


async def test_a_request_with_elided_results_says_so_on_its_chat_span(spans):
    from rolepool.core import RequestRefused

    memory, provider = spans
    enable_otel(provider)

    @tool
    def page(n: int) -> str:
        """A long page.

        Args:
            n: its number
        """
        return f"page {n}: " + "x" * 100

    def small_context(request: Request) -> str:
        results = [m.content for m in request.messages if m.role == "tool"]
        if sum(len(r) for r in results) > 250:
            raise RequestRefused("prompt does not fit the context")
        if len(results) < 3:
            return json.dumps({"name": "page", "arguments": {"n": len(results)}})
        return "Read them all."

    await Agent("w", tools=[page]).run("read", worker=FunctionWorker(small_context))
    chats = [s for s in memory.get_finished_spans() if s.name.startswith("chat")]
    elided = [s.attributes.get("rolepool.request.elided") for s in chats]
    assert elided == [None, None, None, None, 1, 2]


async def test_a_tenants_run_labels_every_span(spans):
    memory, provider = spans
    enable_otel(provider)
    agent = Agent("weather", role="search", tools=[lookup])
    await agent.run("Weather?", worker=parallel_worker(), tenant="team-a")
    await agent.run("Weather?", worker=parallel_worker())
    finished = memory.get_finished_spans()
    labels = [s.attributes.get("rolepool.tenant") for s in finished]
    assert labels.count("team-a") == len(finished) // 2 and labels.count(None) == len(finished) // 2
