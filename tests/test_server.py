"""`rolepool serve` over test workers, driven with raw HTTP: the wire format, errors, security
(token, body limit, no echoed secrets), /health, /models and /metrics."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager, contextmanager

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving import running

from rolepool import FunctionWorker, ScriptedWorker
from rolepool.cli import main
from rolepool.core import Completion, ToolCall, Usage, WorkerError
from rolepool.pools.server import create_app
from rolepool.pools.server_metrics import stat_rows

pytestmark = pytest.mark.anyio

needs_transformers_worker = pytest.mark.skipif(
    importlib.util.find_spec("rolepool.pools.transformers_worker") is None,
    reason="rolepool.pools.transformers_worker is not there yet",
)
HELLO = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def client_for(worker, **kwargs):
    """A real server on a free loopback port and an httpx client pointed at it."""
    async with running(worker, **kwargs) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def test_chat_completion_shape_and_history_translation():
    worker = ScriptedWorker(
        [Completion(text="fine", usage=Usage(prompt_tokens=9, completion_tokens=1))]
    )
    body = {
        "model": "tiny",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "add "}, {"type": "text", "text": "2 and 3"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "5"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
        ],
        "max_completion_tokens": 5,
        "stop": "END",
        "metadata": {"role": "writer", "run_id": "r1"},
        "user": "ignored-extra-field",
    }
    async with client_for(worker) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "scripted"  # the worker that served, not the name asked for
    assert data["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "fine"},
        "finish_reason": "stop",
    }
    assert data["usage"] == {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
    assert data["rolepool"]["worker"] == "scripted"
    request = worker.requests[0]
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    assert request.messages[1].content == "add 2 and 3"
    assert request.messages[2].tool_calls == [
        ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3})
    ]
    assert request.messages[3].tool_call_id == "c1"
    assert request.tools[0].name == "add"
    assert (request.role, request.run_id) == ("writer", "r1")
    assert request.sampling.max_tokens == 5 and request.sampling.stop == ["END"]


async def test_tool_calls_in_text_become_tool_calls():
    text = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    worker = ScriptedWorker([text, text])
    tools = [{"type": "function", "function": {"name": "add"}}]
    async with client_for(worker) as client:
        response = await client.post("/v1/chat/completions", json={**HELLO, "tools": tools})
        none = await client.post(
            "/v1/chat/completions", json={**HELLO, "tools": tools, "tool_choice": "none"}
        )
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "add"
    assert json.loads(call["function"]["arguments"]) == {"a": 1, "b": 2}
    # tool_choice "none": the worker gets no tools and the text is returned as it is
    assert worker.requests[1].tools == []
    assert none.json()["choices"][0]["message"]["content"] == text


async def test_stream_true_gets_the_answer_as_server_sent_events():
    worker = ScriptedWorker(['{"name": "add", "arguments": {"a": 1}}'])
    body = {
        **HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "add"}}],
    }
    async with client_for(worker) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    (head,) = deltas[0]["tool_calls"]
    assert head["index"] == 0 and head["type"] == "function" and head["id"]
    assert head["function"] == {"name": "add", "arguments": ""}
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:])
    assert json.loads(arguments) == {"a": 1}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


async def test_arguments_that_are_not_json_are_a_502():
    worker = ScriptedWorker([ToolCall(name="add", arguments={"a": float("nan")})])
    async with client_for(worker) as client:
        response = await client.post("/v1/chat/completions", json=HELLO)
    assert response.status_code == 502 and "not JSON" in error_of(response)["message"]


async def test_role_header():
    worker = ScriptedWorker(["ok"])
    async with client_for(worker) as client:
        response = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"X-Rolepool-Role": "planner"}
        )
    assert response.status_code == 200
    assert worker.requests[0].role == "planner"


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"model": "m"}).encode(), "messages"),
        (json.dumps({"messages": []}).encode(), "messages"),
        (
            json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(),
            "messages[0].role",
        ),
        (json.dumps({**HELLO, "temperature": -1}).encode(), "temperature"),
        (json.dumps({**HELLO, "n": 2}).encode(), "n"),
        (json.dumps({**HELLO, "stream": "maybe"}).encode(), "stream"),
        (
            json.dumps(
                {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
            ).encode(),
            "messages[0].content[0]",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
            "messages[0].content",
        ),
        (json.dumps({**HELLO, "metadata": {"role": "no spaces allowed"}}).encode(), "role"),
        (
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "assistant",
                            "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}],
                        }
                    ]
                }
            ).encode(),
            "messages[0].tool_calls[0].function",
        ),
    ],
)
async def test_bad_bodies_are_400_with_the_field_named(content, param):
    worker = ScriptedWorker(["never"])
    async with client_for(worker) as client:
        response = await client.post(
            "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert worker.requests == []


async def test_token_required_when_set():
    worker = ScriptedWorker(["ok"])
    async with client_for(worker, api_key="s3cret-token") as client:
        missing = await client.post("/v1/chat/completions", json=HELLO)
        wrong = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"Authorization": "Bearer nope"}
        )
        metrics = await client.get("/metrics")
        health = await client.get("/health")
        good = await client.post(
            "/v1/chat/completions", json=HELLO, headers={"Authorization": "Bearer s3cret-token"}
        )
    assert missing.status_code == wrong.status_code == metrics.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert error_of(wrong)["type"] == "authentication_error"
    assert "s3cret" not in wrong.text and "nope" not in wrong.text
    assert health.status_code == 200  # probes need no token and learn nothing
    assert good.status_code == 200 and worker.requests and len(worker.requests) == 1


async def test_body_limit():
    worker = ScriptedWorker(["never"])
    huge = {**HELLO, "messages": [{"role": "user", "content": "x" * 5000}]}

    async def chunked():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    async with client_for(worker, max_body_bytes=2000) as client:
        declared = await client.post("/v1/chat/completions", json=huge)
        streamed = await client.post("/v1/chat/completions", content=chunked())
    assert declared.status_code == streamed.status_code == 413
    assert "2000 bytes" in error_of(streamed)["message"]
    assert worker.requests == []


async def test_worker_errors_and_crashes():
    def fail(request):
        if request.messages[-1].content == "worker":
            raise WorkerError("model overloaded", worker="inner")
        raise RuntimeError("password=hunter2 in a traceback")

    worker = FunctionWorker(fail, name="flaky")

    def body(text):
        return {"messages": [{"role": "user", "content": text}]}

    async with client_for(worker, api_key="key-0123456789") as client:
        headers = {"Authorization": "Bearer key-0123456789"}
        typed = await client.post("/v1/chat/completions", json=body("worker"), headers=headers)
        crash = await client.post("/v1/chat/completions", json=body("crash"), headers=headers)
        metrics = (await client.get("/metrics", headers=headers)).text
    assert typed.status_code == 502
    assert error_of(typed) == {
        "message": "worker 'inner': model overloaded",
        "type": "worker_error",
        "param": None,
        "code": None,
    }
    assert crash.status_code == 500
    assert "hunter2" not in crash.text and "Traceback" not in crash.text
    assert error_of(crash)["type"] == "internal_error"
    assert 'rolepool_failures_total{kind="worker_error",worker="inner"} 1.0' in metrics


async def test_health_and_models():
    healthy = {"value": True}

    class Flaky(FunctionWorker):
        async def health(self) -> bool:
            return healthy["value"]

    async with client_for(Flaky(lambda r: "x", name="w"), models=["tiny-moe", "tiny-dense"]) as c:
        up = await c.get("/health")
        healthy["value"] = False
        down = await c.get("/health")
        models = await c.get("/v1/models")
        missing = await c.get("/v1/nothing")
    assert (up.status_code, up.json()) == (200, {"status": "ok"})
    assert (down.status_code, down.json()) == (503, {"status": "unavailable"})
    assert [m["id"] for m in models.json()["data"]] == ["tiny-moe", "tiny-dense"]
    assert missing.status_code == 404 and error_of(missing)


async def test_metrics_parse_and_count():
    worker = ScriptedWorker(["a", "b", "c"], name="w1")
    worker.stats = {"queue_depth": 3, "batch_sizes": {1: 2, 4: 1}, "loaded": True, "note": "x"}
    async with client_for(worker) as client:
        for role in ("coder", "coder", "x" * 100):
            await client.post("/v1/chat/completions", json={**HELLO, "metadata": {"role": role}})
        await client.post("/v1/chat/completions", content=b"{")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    requests = {
        (s.labels["role"], s.labels["status"]): s.value
        for s in families["rolepool_requests"].samples
        if s.name == "rolepool_requests_total"
    }
    assert requests[("coder", "ok")] == 2
    assert requests[("none", "bad_request")] == 2  # bad JSON and the invalid role
    assert ("x" * 100, "bad_request") not in requests  # an invalid role is refused, not a label
    latency = families["rolepool_request_latency_seconds"]
    counts = [s for s in latency.samples if s.name.endswith("_count")]
    assert sum(s.value for s in counts) == 4
    assert families["rolepool_requests_in_flight"].samples[0].value == 0
    depth = families["rolepool_worker_queue_depth"].samples[0]
    assert (depth.labels, depth.value) == ({"worker": "w1"}, 3)
    buckets = {s.labels["bucket"]: s.value for s in families["rolepool_worker_batch_sizes"].samples}
    assert buckets == {"1": 2, "4": 1}


async def test_metrics_readable_from_python():
    app = create_app(ScriptedWorker(["a"], name="w"), models=["tiny"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post("/v1/chat/completions", json=HELLO)
    assert response.status_code == 200
    snapshot = app.state.metrics.snapshot()
    assert snapshot["rolepool_requests_total{role=none,status=ok,worker=w}"] == 1


async def test_in_flight_gauge():
    started, release = anyio.Event(), anyio.Event()

    async def slow(request):
        started.set()
        await release.wait()
        return "done"

    def in_flight(text: str) -> float:
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return families["rolepool_requests_in_flight"].samples[0].value

    async with client_for(FunctionWorker(slow)) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.post("/v1/chat/completions", json=HELLO))
            await started.wait()
            assert in_flight((await client.get("/metrics")).text) == 1
            release.set()
        assert in_flight((await client.get("/metrics")).text) == 0


def test_stat_rows_of_a_pool_and_its_members():
    class Member:
        stats = {"requests": 2}

    class FakePool:
        info = type("I", (), {"name": "pool"})()
        stats = {"a": {"requests": 5, "breaker": "open", "breaker_state": 2}}
        workers = {"a": Member()}

    rows = stat_rows(FakePool())
    assert ("rolepool_pool_requests", {"worker": "a"}, 5.0) in rows
    assert ("rolepool_pool_breaker_state", {"worker": "a"}, 2.0) in rows
    assert ("rolepool_worker_requests", {"worker": "a"}, 2.0) in rows
    assert not any('breaker"' in name or name.endswith("_breaker") for name, _, _ in rows)


def test_cli_serve_without_a_model_or_shipped_models(capsys, monkeypatch, tmp_path):
    import rolepool.zoo

    monkeypatch.setattr(rolepool.zoo, "CHECKPOINTS", tmp_path / "none")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "needs a shipped MoE and a dense reference model" in err
    assert "--pool pool.toml" in err and "--model DIR" in err


@needs_transformers_worker
async def test_serve_a_transformers_worker(tiny_dense_dir):
    from rolepool.pools.openai_worker import OpenAIWorker
    from rolepool.pools.transformers_worker import TransformersWorker

    local = TransformersWorker(tiny_dense_dir, name="tiny-dense")
    try:
        async with client_for(local) as client:
            remote = OpenAIWorker(str(client.base_url), "tiny-dense", timeout=60)
            from rolepool.core import Message, Request, Sampling

            request = Request(
                messages=[Message(role="user", content="plan the work")],
                sampling=Sampling(max_tokens=5),
            )
            completion = await remote.complete(request)
            metrics = (await client.get("/metrics")).text
            await remote.aclose()
    finally:
        await local.aclose()
    assert completion.architecture == "dense"
    assert 0 < completion.usage.completion_tokens <= 5 and completion.usage.prompt_tokens > 0
    assert 'rolepool_requests_total{role="none",status="ok",worker="tiny-dense"} 1.0' in metrics
    assert "rolepool_worker_generate_calls" in metrics


@contextmanager
def cli_server(args, env):
    """`rolepool serve ARGS` in a subprocess on a free port; yields (its /v1 URL, its banner).
    Leaving the block sends SIGINT and expects a clean exit."""
    command = [sys.executable, "-m", "rolepool.cli", "serve", *args]
    command += ["--port", "0", "--log-level", "warning"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        banner = proc.stdout.readline()
        found = re.search(r"http://\S+/v1", banner)
        assert found, proc.stderr.read()
        yield found.group(0), banner
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) in (0, 130)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@needs_transformers_worker
def test_cli_serves_until_interrupted(tiny_dense_dir):
    env = {**os.environ, "ROLEPOOL_SERVE_API_KEY": "cli-token-0123"}
    with cli_server(["--model", str(tiny_dense_dir)], env) as (url, banner):
        assert "(bearer token from $ROLEPOOL_SERVE_API_KEY)" in banner
        headers = {"Authorization": "Bearer cli-token-0123"}
        assert (
            httpx.get(url + "/models", headers=headers).json()["data"][0]["id"]
            == tiny_dense_dir.name
        )
        assert httpx.get(url + "/models").status_code == 401


@needs_transformers_worker
def test_cli_bad_model_dir(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


@needs_transformers_worker
def test_cli_serves_a_pool_file(tiny_dense_dir, tiny_moe_dir, tmp_path):
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text(
        f"""
[workers.moe]
backend = "transformers"
model = "{tiny_moe_dir}"

[workers.dense]
backend = "transformers"
model = "{tiny_dense_dir}"

[policy]
version = "test.1"

[policy.default]
choices = [{{ worker = "moe" }}]
fallbacks = ["dense"]
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "ROLEPOOL_SERVE_API_KEY"}
    with cli_server(["--pool", str(pool_file)], env) as (url, banner):
        assert "serving moe, dense" in banner
        listed = [m["id"] for m in httpx.get(url + "/models").json()["data"]]
        assert listed == ["pool", "moe", "dense"]  # the pool (routed by policy), then each worker
        body = {"model": "moe", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        answer = httpx.post(url + "/chat/completions", json=body, timeout=60).json()
        assert answer["rolepool"]["worker"] == "moe"
        assert answer["rolepool"]["policy_version"] == "test.1"
        assert answer["rolepool"]["architecture"] == "moe"


# -- request fields: honoured or refused (issue 20) ------------------------------------------------

ADD_TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
READ_TOOL = {"type": "function", "function": {"name": "read_file"}}


async def test_tool_choice_and_response_format_become_the_requests_decoding():
    call = '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
    worker = ScriptedWorker([call, call, '{"x": 1}', '{"y": 2}'])
    named = {"type": "function", "function": {"name": "read_file"}}
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    tools = [ADD_TOOL, READ_TOOL]
    async with client_for(worker) as client:
        for extra in (
            {"tools": tools, "tool_choice": named},
            {"tools": tools, "tool_choice": "required"},
            {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}},
            {"tools": tools, "response_format": {"type": "json_object"}},
        ):
            response = await client.post("/v1/chat/completions", json={**HELLO, **extra})
            assert response.status_code == 200, response.text
    modes = [(r.decoding.mode, r.decoding.tool) for r in worker.requests]
    assert modes == [
        ("named", "read_file"),
        ("required", None),
        ("json_schema", None),
        ("json_object", None),
    ]
    assert worker.requests[2].decoding.json_schema == schema
    # a JSON reply asked for is the content, never turned into calls
    message = response.json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": '{"y": 2}'}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.schema",
        ),
        (
            {"tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
async def test_a_field_serve_cannot_honour_is_a_400_naming_it(extra, param):
    worker = ScriptedWorker(["never"])
    async with client_for(worker) as client:
        body = {**HELLO, "tools": [ADD_TOOL], **extra}
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param
    assert worker.requests == []


async def test_neutral_values_are_accepted_and_parallel_tool_calls_false_keeps_one_call():
    two = (
        '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
        '<tool_call>{"name": "add", "arguments": {"a": 2}}</tool_call>'
    )
    worker = ScriptedWorker([two])
    body = {
        **HELLO,
        "tools": [ADD_TOOL],
        "parallel_tool_calls": False,
        "logprobs": False,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "store": False,
        "logit_bias": {},
        "user": "u1",
    }
    async with client_for(worker) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    calls = response.json()["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"a": 1}]


def refuse_constrained(request):
    """A worker function that, like an in-process worker without a grammar engine, refuses any
    decoding constraint."""
    from rolepool.core import RequestRefused
    from rolepool.pools.openai_options import DECODING_REFUSAL

    if request.decoding.mode != "free":
        raise RequestRefused(f"{DECODING_REFUSAL} (mode {request.decoding.mode!r})")
    return "free text"


async def test_a_worker_that_cannot_constrain_decoding_refuses_naming_the_field():
    worker = FunctionWorker(refuse_constrained, name="tiny")
    named = {"type": "function", "function": {"name": "add"}}
    async with client_for(worker) as client:
        by_tool = await client.post(
            "/v1/chat/completions", json={**HELLO, "tools": [ADD_TOOL], "tool_choice": named}
        )
        by_format = await client.post(
            "/v1/chat/completions", json={**HELLO, "response_format": {"type": "json_object"}}
        )
        free = await client.post("/v1/chat/completions", json=HELLO)
    assert by_tool.status_code == 400 and error_of(by_tool)["param"] == "tool_choice"
    assert by_format.status_code == 400 and error_of(by_format)["param"] == "response_format"
    assert free.status_code == 200
