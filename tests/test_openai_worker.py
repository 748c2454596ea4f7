"""OpenAIWorker against rolepool's own server (a real uvicorn on loopback) and against canned
answers (httpx.MockTransport) for the shapes our server never produces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from serving import running

from rolepool import Agent, FunctionWorker, ScriptedWorker, ToolCall, tool
from rolepool.core import Message, Request, RequestRefused, ToolSpec, WorkerError
from rolepool.core.requests import Sampling
from rolepool.pools.openai_worker import OpenAIWorker
from rolepool.pools.server_run import bind

pytestmark = pytest.mark.anyio

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


def ask(text: str = "hi", tools: list[ToolSpec] | None = None) -> Request:
    return Request(messages=[Message(role="user", content=text)], tools=tools or [])


def free_port() -> int:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    return port


async def test_plain_text_round_trip():
    worker = ScriptedWorker(["Hello there."], name="echo", architecture="dense")
    async with running(worker) as url:
        async with OpenAIWorker(url + "/v1/", "tiny", name="remote", architecture="moe") as remote:
            request = ask("say hello")
            request.sampling = Sampling(temperature=0.5, max_tokens=12, seed=7, stop=["\n\n"])
            completion = await remote.complete(request)
    assert completion.text == "Hello there."
    assert completion.tool_calls is None
    assert (completion.worker, completion.model, completion.architecture) == (
        "remote",
        "tiny",
        "moe",
    )
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 2 and completion.usage.completion_tokens == 2
    assert completion.latency > 0
    sent = worker.requests[0]
    assert sent.messages[0].content == "say hello"
    assert sent.sampling == Sampling(temperature=0.5, max_tokens=12, seed=7, stop=["\n\n"])


async def test_architecture_comes_from_the_server_when_unknown_here():
    worker = ScriptedWorker(["ok"], architecture="dense")
    async with running(worker) as url:
        async with OpenAIWorker(url, "tiny") as remote:
            completion = await remote.complete(ask())
    assert completion.architecture == "dense"


async def test_calls_written_as_text_come_back_as_tool_calls():
    text = 'Let me add.\n{"name": "add", "arguments": {"a": 2, "b": 3}}'
    direct = ToolCall(id="call_x", name="add", arguments={"a": 1, "b": 1})
    worker = ScriptedWorker([text, direct, text])
    async with running(worker) as url:
        async with OpenAIWorker(url, "tiny") as remote:
            first = await remote.complete(ask(tools=[ADD]))
            second = await remote.complete(ask(tools=[ADD]))
            no_tools = await remote.complete(ask())
    assert first.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert first.text == "Let me add."
    assert second.tool_calls == [direct]
    # without tools in the request the server does not parse: the text goes back untouched
    assert no_tools.tool_calls is None and no_tools.text == text
    assert worker.requests[0].tools == [ADD]


async def test_agent_loop_through_http():
    log: list[tuple[int, int]] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: first addend
            b: second addend
        """
        log.append((a, b))
        return a + b

    worker = ScriptedWorker(
        [
            json.dumps({"name": "add", "arguments": {"a": "two", "b": 3}}),  # invalid: fed back
            json.dumps({"name": "add", "arguments": {"a": 2, "b": 3}}),
            "The sum is 5.",
        ]
    )
    agent = Agent("calc", role="coder", instructions="Use tools.", tools=[add])
    async with running(worker) as url:
        async with OpenAIWorker(url, "tiny") as remote:
            result = await agent.run("what is 2+3?", worker=remote, store=False)
    assert result.output == "The sum is 5."
    assert log == [(2, 3)]
    assert [m.role for m in result.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    # the server saw the tool results and the assistant's calls, and the agent's role
    last = worker.requests[-1]
    assert last.role == "coder"
    assert last.messages[-1].role == "tool" and last.messages[-1].content == "5"
    assert last.messages[-2].tool_calls[0].arguments == {"a": 2, "b": 3}
    assert "not executed" in worker.requests[1].messages[-1].content


async def test_server_error_is_retried_then_raised():
    def broken(request):
        raise RuntimeError("secret internals")

    worker = FunctionWorker(broken, name="broken")
    async with running(worker) as url:
        remote = OpenAIWorker(url, "tiny", name="remote", max_retries=2, backoff=0.01)
        with pytest.raises(WorkerError) as err:
            await remote.complete(ask())
        await remote.aclose()
    assert len(worker.requests) == 3  # one try and two retries
    assert err.value.worker == "remote"
    assert "HTTP 500" in str(err.value) and "3 attempts" in str(err.value)
    assert "secret internals" not in str(err.value)


async def test_client_error_is_not_retried_and_the_key_never_shows():
    worker = ScriptedWorker(["never"])
    async with running(worker, api_key="right-key") as url:
        remote = OpenAIWorker(url, "tiny", api_key="wrong-key-123", backoff=0.01)
        with pytest.raises(WorkerError) as err:
            await remote.complete(ask())
        await remote.aclose()
    assert "HTTP 401" in str(err.value) and "API key" in str(err.value)
    assert "wrong-key-123" not in str(err.value) and "right-key" not in str(err.value)
    assert worker.requests == []


async def test_a_request_the_server_refuses_comes_back_as_request_refused():
    """A served worker's `RequestRefused` (a prompt over its context) is a 400 over HTTP, and the
    client raises `RequestRefused` again, so a client-side pool fails over without blaming the
    server; it is not retried."""

    def short_context(request):
        raise RequestRefused("prompt of 900 tokens does not fit the model's context of 512")

    worker = FunctionWorker(short_context, name="short")
    async with running(worker) as url:
        remote = OpenAIWorker(url, "tiny", name="remote", max_retries=3, backoff=0.01)
        with pytest.raises(RequestRefused) as err:
            await remote.complete(ask())
        await remote.aclose()
    assert len(worker.requests) == 1
    assert "HTTP 400" in str(err.value) and "context of 512" in str(err.value)


async def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("MY_KEY_VAR", "env-key")
    worker = ScriptedWorker(["ok"])
    async with running(worker, api_key="env-key") as url:
        async with OpenAIWorker(url, "tiny", api_key_env="MY_KEY_VAR") as remote:
            assert (await remote.complete(ask())).text == "ok"


async def test_hanging_worker_times_out_and_the_server_stops_asking():
    cancelled = anyio.Event()

    async def hang(request):
        try:
            await anyio.sleep(60)
        finally:
            cancelled.set()

    async with running(FunctionWorker(hang)) as url:
        remote = OpenAIWorker(url, "tiny", timeout=0.5, backoff=0.01)
        started = time.perf_counter()
        with pytest.raises(WorkerError, match="timeout=0.5s"):
            await remote.complete(ask())
        assert time.perf_counter() - started < 1.5
        await remote.aclose()
        with anyio.fail_after(5):  # the client hung up, so the server cancelled the worker call
            await cancelled.wait()


async def test_connection_refused():
    remote = OpenAIWorker(f"http://127.0.0.1:{free_port()}", "tiny", max_retries=1, backoff=0.01)
    started = time.perf_counter()
    with pytest.raises(WorkerError, match="connection failed"):
        await remote.complete(ask())
    assert time.perf_counter() - started < 2
    assert await remote.health() is False
    await remote.aclose()


SERVER_SCRIPT = textwrap.dedent(
    """
    import sys, anyio
    from rolepool import FunctionWorker
    from rolepool.pools.server_run import bind, serve

    async def slow(request):
        await anyio.sleep(30)
        return "too late"

    async def main():
        sock = bind("127.0.0.1", 0)
        print(sock.getsockname()[1], flush=True)
        await serve(FunctionWorker(slow), sock=sock, log_level="warning", models=["tiny"])

    anyio.run(main)
    """
)


@asynccontextmanager
async def slow_server_process():
    """`rolepool serve` in a child process over a worker that takes 30 s; yields (url, pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
        async with OpenAIWorker(url, "probe") as probe:
            with anyio.fail_after(10):
                while not await probe.health():
                    await anyio.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


async def kill_soon(pid: int, killed_at: list[float]) -> None:
    await anyio.sleep(0.3)  # the request is in flight inside the slow worker by now
    killed_at.append(time.perf_counter())
    os.kill(pid, signal.SIGKILL)


async def test_server_killed_mid_request():
    killed_at: list[float] = []
    async with slow_server_process() as (url, pid):
        async with OpenAIWorker(url, "tiny", max_retries=2, backoff=0.05) as remote:
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_soon, pid, killed_at)
                with pytest.raises(WorkerError, match="connection failed"):
                    await remote.complete(ask())
    assert time.perf_counter() - killed_at[0] < 3


async def test_server_killed_mid_request_fails_over_in_a_pool():
    pool_module = pytest.importorskip("rolepool.pools.pool")
    from rolepool.pools.policy import Choice, Route, RoutingPolicy

    killed_at: list[float] = []
    route = Route(choices=[Choice(worker="remote")], fallbacks=["local"])
    async with slow_server_process() as (url, pid):
        async with OpenAIWorker(url, "tiny", max_retries=1, backoff=0.05) as remote:
            workers = {"remote": remote, "local": ScriptedWorker(["from the fallback"])}
            pool = pool_module.Pool(workers, RoutingPolicy(version="v7", default=route))
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_soon, pid, killed_at)
                completion = await pool.complete(ask())
    assert time.perf_counter() - killed_at[0] < 3
    assert (completion.text, completion.worker, completion.policy_version) == (
        "from the fallback",
        "local",
        "v7",
    )


async def test_health_against_the_server():
    async with running(ScriptedWorker([])) as url:
        async with OpenAIWorker(url, "tiny") as remote:
            assert await remote.health() is True


# -- canned answers --------------------------------------------------------------------------


def canned(handler) -> OpenAIWorker:
    """An OpenAIWorker whose HTTP client answers with `handler(request) -> httpx.Response`."""
    worker = OpenAIWorker(
        "http://model.test/v1", "m", name="canned", backoff=0.01, api_key="sk-test-0001"
    )
    worker._client = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), headers=worker._client.headers
    )
    return worker


def answer(message: dict, **extra) -> httpx.Response:
    body = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], **extra}
    return httpx.Response(200, json=body)


def calls(*arguments) -> dict:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "add", "arguments": a}}
            for i, a in enumerate(arguments)
        ],
    }


@pytest.mark.parametrize("bad", ['{"a": 1', "[1, 2]", '"text"', '{"a": 1, "a": 2}'])
async def test_broken_arguments_go_to_the_loop_as_text(bad):
    worker = canned(lambda r: answer(calls('{"a": 1, "b": 2}', bad)))
    completion = await worker.complete(ask(tools=[ADD]))
    assert completion.tool_calls is None
    assert bad in json.loads(completion.text)[1]["function"]["arguments"]
    await worker.aclose()


async def test_good_arguments_string_and_object_both_decode():
    worker = canned(lambda r: answer(calls('{"a": 1, "b": 2}', {"a": 3, "b": 4}), usage={}))
    completion = await worker.complete(ask(tools=[ADD]))
    assert [(c.id, c.arguments) for c in completion.tool_calls] == [
        ("c0", {"a": 1, "b": 2}),
        ("c1", {"a": 3, "b": 4}),
    ]
    await worker.aclose()


async def test_request_body_and_headers():
    seen: list[httpx.Request] = []

    def handler(request):
        seen.append(request)
        return answer({"role": "assistant", "content": '{"answer": "five"}'})

    worker = canned(handler)
    worker.structured_output = True
    request = ask(tools=[ADD])
    request.role = "coder"
    completion = await worker.complete(request)
    assert completion.text == "five"  # the guided-decoding answer wrapper is removed
    sent = json.loads(seen[0].content)
    assert str(seen[0].url) == "http://model.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-test-0001"
    assert sent["tools"] == [ADD.to_openai()] and sent["tool_choice"] == "auto"
    assert seen[0].headers["x-rolepool-role"] == "coder"
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["anyOf"][0]["properties"]["name"] == {"const": "add"}
    await worker.aclose()


async def test_429_is_retried_after_the_servers_delay():
    statuses = iter([429, 503, 200])

    def handler(request):
        status = next(statuses)
        if status == 200:
            return answer({"role": "assistant", "content": "done"})
        return httpx.Response(status, headers={"retry-after": "0.05"}, json={"error": "busy"})

    worker = canned(handler)
    assert (await worker.complete(ask())).text == "done"
    await worker.aclose()


async def test_errors_name_the_worker_and_hide_the_key():
    def handler(request):
        return httpx.Response(400, json={"error": {"message": "bad key sk-test-0001 for model"}})

    worker = canned(handler)
    with pytest.raises(WorkerError) as err:
        await worker.complete(ask())
    assert err.value.worker == "canned"
    assert "sk-test-0001" not in str(err.value) and "[redacted]" in str(err.value)
    await worker.aclose()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>oops</html>"),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json=[1, 2]),
    ],
)
async def test_garbage_answers_are_worker_errors(response):
    worker = canned(lambda r: response)
    with pytest.raises(WorkerError):
        await worker.complete(ask())
    await worker.aclose()


def test_bad_settings_are_config_errors():
    from rolepool.core import ConfigError

    with pytest.raises(ConfigError, match="base_url"):
        OpenAIWorker("localhost:8000", "m")
    with pytest.raises(ConfigError, match="timeout"):
        OpenAIWorker("http://localhost:8000", "m", timeout=0)


async def test_health_falls_back_to_models():
    paths: list[str] = []

    def handler(request):
        paths.append(request.url.path)
        return httpx.Response(404 if request.url.path == "/health" else 200, json={})

    worker = canned(handler)
    assert await worker.health() is True
    assert paths == ["/health", "/v1/models"]
    await worker.aclose()
