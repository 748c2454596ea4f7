"""`OpenAIWorker` against a FAKE vLLM server (issue 20.3).

No vLLM runs on this machine (it needs a GPU build), so the behaviours below are checked against a
small fake that answers in vLLM's documented wire format, not against vLLM itself:

* a server started without `--enable-auto-tool-choice --tool-call-parser ...` answers 400 to a
  request with `tools` and `tool_choice` `auto` or unset (docs/features/tool_calling.md), while
  `tool_choice: "none"` still renders the tools into the prompt (the fake's model then writes a
  Hermes `<tool_call>` in its text);
* `--reasoning-parser`: `message.reasoning` beside `content`, `delta.reasoning` when streaming;
* `--enable-return-routed-experts`: `choices[i].routed_experts` as `[token][layer][top_k]` expert
  indices (and `prompt_routed_experts` on the response);
* `usage.prompt_tokens_details.cached_tokens` with prefix caching.
"""

from __future__ import annotations

import json
import logging
import socket
from contextlib import asynccontextmanager

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from rolepool.core import Message, Request, ToolSpec
from rolepool.core.requests import Decoding
from rolepool.pools.openai_worker import OpenAIWorker
from rolepool.pools.streaming import TextSink, streaming_to

pytestmark = pytest.mark.anyio

ADD = ToolSpec(
    name="add",
    parameters={"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
)
CALL_TEXT = '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
AUTO_400 = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
# two prompt tokens and three completion tokens, two MoE layers, top-2 of 4 experts
PROMPT_ROUTES = [[[0, 1], [2, 3]], [[0, 2], [1, 3]]]
ROUTES = [[[0, 1], [0, 1]], [[1, 2], [0, 3]], [[3, 0], [2, 1]]]


class FakeVLLM:
    """The fake: records each body; `tool_parser` says whether it was started with one."""

    def __init__(self, *, tool_parser: bool) -> None:
        self.tool_parser = tool_parser
        self.bodies: list[dict] = []

    async def chat(self, http: HTTPRequest):
        body = await http.json()
        self.bodies.append(body)
        choice = body.get("tool_choice", "auto" if body.get("tools") else None)
        if body.get("tools") and choice == "auto" and not self.tool_parser:
            error = {
                "object": "error",
                "message": AUTO_400,
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
            return JSONResponse(error, status_code=400)
        message: dict = {"role": "assistant", "reasoning": "the user wants a sum", "content": None}
        if isinstance(choice, dict) or (choice == "auto" and body.get("tools")):
            name = choice["function"]["name"] if isinstance(choice, dict) else "add"
            message["tool_calls"] = [
                {
                    "id": "chatcmpl-tool-1",
                    "type": "function",
                    "function": {"name": name, "arguments": '{"a": 1}'},
                }
            ]
        elif body.get("tools"):  # tool_choice none: the template rendered the tools anyway
            message["content"] = CALL_TEXT
        else:
            message["content"] = "plain answer"
        usage = {
            "prompt_tokens": 2,
            "completion_tokens": 3,
            "total_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 1},
        }
        if body.get("stream"):
            return StreamingResponse(_chunks(message, usage), media_type="text/event-stream")
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return JSONResponse(
            {
                "id": "chatcmpl-fake-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish,
                        "routed_experts": ROUTES,
                    }
                ],
                "usage": usage,
                "prompt_routed_experts": PROMPT_ROUTES,
            }
        )


async def _chunks(message: dict, usage: dict):
    base = {"id": "chatcmpl-fake-2", "object": "chat.completion.chunk", "model": "m"}

    def event(delta: dict, finish: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    yield event({"role": "assistant", "content": ""})
    yield event({"reasoning": "the user "})
    yield event({"reasoning": "wants a sum"})
    for piece in ("plain ", "answer"):
        await anyio.sleep(0.01)
        yield event({"content": piece})
    yield event({}, "stop", routed_experts=ROUTES)
    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


@asynccontextmanager
async def fake_vllm(*, tool_parser: bool):
    fake = FakeVLLM(tool_parser=tool_parser)
    app = Starlette(routes=[Route("/v1/chat/completions", fake.chat, methods=["POST"])])
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        while not server.started:
            await anyio.sleep(0.01)
        yield fake, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        server.should_exit = True
    sock.close()


def ask(tools: bool = True, **kw) -> Request:
    return Request(
        messages=[Message(role="user", content="add 1")],
        tools=[ADD] if tools else [],
        role="coder",
        **kw,
    )


async def test_tool_mode_auto_switches_to_text_on_vllms_400_once(caplog):
    async with fake_vllm(tool_parser=False) as (fake, url):
        async with OpenAIWorker(url, "m", max_retries=0) as worker:
            with caplog.at_level(logging.WARNING):
                first = await worker.complete(ask())
                second = await worker.complete(ask())
    # first: 400 with tool_choice auto, then again with tool_choice none; second: text at once
    assert [b.get("tool_choice") for b in fake.bodies] == ["auto", "none", "none"]
    assert all(b["tools"] for b in fake.bodies)
    assert first.tool_calls is None and first.text == CALL_TEXT  # the run loop parses it
    assert second.text == CALL_TEXT
    assert worker.stats == {"tool_mode_text": 1, "tool_mode_switches": 1}
    assert sum("switches to text" in r.getMessage() for r in caplog.records) == 1


async def test_tool_mode_native_keeps_the_400_and_text_never_sends_auto():
    from rolepool.core import RequestRefused

    async with fake_vllm(tool_parser=False) as (fake, url):
        async with OpenAIWorker(url, "m", max_retries=0, tool_mode="native") as native:
            with pytest.raises(RequestRefused, match="enable-auto-tool-choice"):
                await native.complete(ask())
        async with OpenAIWorker(url, "m", max_retries=0, tool_mode="text") as text:
            answer = await text.complete(ask())
            named = await text.complete(ask(decoding=Decoding(mode="named", tool="add")))
    assert fake.bodies[-2]["tool_choice"] == "none" and answer.text == CALL_TEXT
    # a named call is a constraint vLLM honours without a tool parser: passed on, read natively
    assert fake.bodies[-1]["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert named.tool_calls[0].name == "add"


async def test_reasoning_cached_tokens_response_id_and_routed_experts():
    async with fake_vllm(tool_parser=True) as (fake, url):
        async with OpenAIWorker(url, "m", max_retries=0, num_experts=4) as worker:
            answer = await worker.complete(ask())
    assert answer.tool_calls[0].arguments == {"a": 1}
    assert answer.reasoning == "the user wants a sum" and "sum" not in answer.text
    assert answer.cached_prompt_tokens == 1 and answer.response_id == "chatcmpl-fake-1"
    # per layer, (prompt + completion) tokens x top_k = 5 x 2 routings over 4 experts
    assert answer.expert_load == [[4, 3, 2, 1], [2, 3, 2, 3]]
    assert [sum(layer) for layer in answer.expert_load] == [10, 10]


async def test_streaming_upstream_feeds_the_caller_and_times_the_first_token():
    async with fake_vllm(tool_parser=True) as (fake, url):
        async with OpenAIWorker(url, "m", max_retries=0, stream=True) as worker:
            sink = TextSink()
            with streaming_to(sink):
                answer = await worker.complete(ask(tools=False))
    assert fake.bodies[0]["stream"] is True
    assert fake.bodies[0]["stream_options"] == {"include_usage": True}
    assert answer.text == "plain answer" and sink.text == "plain answer"
    assert answer.reasoning == "the user wants a sum" and sink.reasoning == answer.reasoning
    assert answer.usage.completion_tokens == 3 and answer.cached_prompt_tokens == 1
    assert 0 < answer.time_to_first_token <= answer.latency
    assert answer.expert_load is not None and answer.response_id == "chatcmpl-fake-2"


async def test_decoding_and_request_options_are_passed_on():
    from rolepool.pools.openai_body import RequestOptions

    options = RequestOptions(
        tool_choice="auto",
        role_tool_choice={"coder": "required"},
        parallel_tool_calls=False,
        chat_template_kwargs={"enable_thinking": False},
        max_completion_tokens=64,
        extra_body={"top_k": 20, "messages": "ignored: rolepool owns it"},
    )
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    async with fake_vllm(tool_parser=True) as (fake, url):
        async with OpenAIWorker(url, "m", max_retries=0, options=options) as worker:
            await worker.complete(ask())
            await worker.complete(
                ask(tools=False, decoding=Decoding(mode="json_schema", json_schema=schema))
            )
    first, second = fake.bodies
    assert first["tool_choice"] == "required" and first["parallel_tool_calls"] is False
    assert first["chat_template_kwargs"] == {"enable_thinking": False}
    assert first["max_completion_tokens"] == 64 and "max_tokens" not in first
    assert first["top_k"] == 20 and isinstance(first["messages"], list)
    assert second["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema},
    }


def test_a_leading_think_block_never_streams_as_content():
    from rolepool.pools.openai_reply import ThinkFilter, split_think

    pieces = ["\n<th", "ink>weigh", " it</thi", "nk>\n\nThe ", "answer."]
    think = ThinkFilter()
    out = [think.feed(p) for p in pieces]
    content = "".join(c for c, _ in out)
    reasoning = "".join(r for _, r in out)
    assert (reasoning, content) == split_think("".join(pieces)) == ("weigh it", "The answer.")
    plain = ThinkFilter()
    assert [plain.feed(p) for p in ("<", "b>bold")] == [("", ""), ("<b>bold", "")]
