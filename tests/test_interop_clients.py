"""Third-party clients of `rolepool serve` (issue 20.4): the official `openai` SDK (sync, async,
streaming with tools, tool_choice, response_format through `parse`) and `litellm` as an SDK with
provider `openai/` and `api_base`. Real servers on free ports; the workers behind them are test
workers that record what they were asked, plus one in-process model for real token streaming."""

from __future__ import annotations

import json
import os

import anyio
import pytest
from pydantic import BaseModel
from serving import running
from test_server import refuse_constrained

from rolepool import FunctionWorker, ScriptedWorker

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.anyio

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm: no fetch at import

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
READ = {
    "type": "function",
    "function": {
        "name": "read_file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
}
CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
ASK = [{"role": "user", "content": "add 2 and 3"}]


def _sync_client(url: str):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


async def test_openai_sdk_sync_and_async():
    worker = ScriptedWorker(["hello from sync", "hello from async"], name="tiny")
    async with running(worker) as url:

        def sync_call():
            return _sync_client(url).chat.completions.create(model="tiny", messages=ASK)

        sync = await anyio.to_thread.run_sync(sync_call)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            answer = await client.chat.completions.create(model="tiny", messages=ASK, seed=1)
    assert sync.choices[0].message.content == "hello from sync"
    assert answer.choices[0].message.content == "hello from async"
    assert answer.usage.total_tokens > 0 and answer.model == "tiny"
    assert worker.requests[1].sampling.seed == 1


async def test_openai_sdk_tool_calls_plain_and_streamed():
    worker = ScriptedWorker([CALL, CALL], name="tiny")
    async with running(worker) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            plain = await client.chat.completions.create(model="tiny", messages=ASK, tools=[ADD])
            stream = await client.chat.completions.create(
                model="tiny",
                messages=ASK,
                tools=[ADD],
                stream=True,
                stream_options={"include_usage": True},
            )
            calls: dict[int, dict] = {}
            finish, usage = None, None
            async for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                        if delta.function.name:
                            call["name"] = delta.function.name
                        call["arguments"] += delta.function.arguments or ""
    (call,) = plain.choices[0].message.tool_calls
    assert plain.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert finish == "tool_calls" and usage is not None and usage.total_tokens > 0
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("add", {"a": 2, "b": 3})
    ]


async def test_openai_sdk_stream_helper_accumulates_the_call():
    worker = ScriptedWorker(["Sure. " + CALL], name="tiny")
    async with running(worker) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            async with client.chat.completions.stream(
                model="tiny", messages=ASK, tools=[ADD]
            ) as stream:
                final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.content.strip() == "Sure."
    assert message.tool_calls[0].function.name == "add"
    assert json.loads(message.tool_calls[0].function.arguments) == {"a": 2, "b": 3}


class Sum(BaseModel):
    total: int


async def test_openai_sdk_tool_choice_and_response_format_reach_the_worker():
    replies = ['<tool_call>{"name": "read_file", "arguments": {"path": "a"}}</tool_call>']
    worker = ScriptedWorker([*replies, '{"total": 5}'], name="tiny")
    async with running(worker) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            named = await client.chat.completions.create(
                model="tiny",
                messages=ASK,
                tools=[ADD, READ],
                tool_choice={"type": "function", "function": {"name": "read_file"}},
            )
            parsed = await client.chat.completions.parse(
                model="tiny", messages=ASK, response_format=Sum
            )
    assert named.choices[0].message.tool_calls[0].function.name == "read_file"
    first, second = worker.requests
    assert (first.decoding.mode, first.decoding.tool) == ("named", "read_file")
    assert second.decoding.mode == "json_schema"
    assert second.decoding.json_schema["properties"]["total"]["type"] == "integer"
    assert parsed.choices[0].message.parsed == Sum(total=5)


async def test_openai_sdk_sees_refusals_as_bad_request_errors_naming_the_field():
    worker = FunctionWorker(refuse_constrained, name="tiny")
    async with running(worker) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            with pytest.raises(openai.BadRequestError) as n:
                await client.chat.completions.create(model="tiny", messages=ASK, n=3)
            with pytest.raises(openai.BadRequestError) as logprobs:
                await client.chat.completions.create(model="tiny", messages=ASK, logprobs=True)
            with pytest.raises(openai.BadRequestError) as required:
                await client.chat.completions.create(
                    model="tiny", messages=ASK, tools=[ADD], tool_choice="required", stream=True
                )
    assert n.value.param == "n" and logprobs.value.param == "logprobs"
    assert required.value.param == "tool_choice"


async def test_litellm_sdk_with_provider_openai_and_api_base():
    litellm = pytest.importorskip("litellm")
    worker = ScriptedWorker(["plain answer", CALL, "streamed answer"], name="tiny")
    async with running(worker) as url:
        common = {"model": "openai/tiny", "api_base": url + "/v1", "api_key": "unused"}
        plain = await litellm.acompletion(messages=ASK, **common)
        tools = await litellm.acompletion(messages=ASK, tools=[ADD], tool_choice="auto", **common)
        stream = await litellm.acompletion(messages=ASK, stream=True, **common)
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert plain.choices[0].message.content == "plain answer"
    (call,) = tools.choices[0].message.tool_calls
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert "".join(pieces) == "streamed answer"


@pytest.mark.slow
async def test_openai_sdk_streams_tokens_from_an_in_process_model(tiny_dense_dir):
    from rolepool.pools.transformers_worker import TransformersWorker

    worker = TransformersWorker(tiny_dense_dir, name="tiny")
    async with worker, running(worker) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        async with client:
            plain = await client.chat.completions.create(model="tiny", messages=ASK, max_tokens=30)
            stream = await client.chat.completions.create(
                model="tiny", messages=ASK, max_tokens=30, stream=True
            )
            pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    text = "".join(p for p in pieces if p)
    assert text == plain.choices[0].message.content and len([p for p in pieces if p]) > 3
