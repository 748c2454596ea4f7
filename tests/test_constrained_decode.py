"""Constrained decoding in the in-process decoder, on the shipped models: constrained and free
rows in one batch (the free rows' greedy tokens unchanged), calls that validate, a cancelled
constrained row that gives back its matcher, errors that name the tool, and the agent, route
and pool settings that ask for it.
"""

from __future__ import annotations

import json
import re

import anyio
import jsonschema
import pytest

from rolepool import Agent
from rolepool.core import Decoding, Message, Request, Sampling, ToolSpec, UserError
from rolepool.pools import Pool, RoutingPolicy, TransformersWorker
from rolepool.pools.constrained import live_matchers
from rolepool.pools.grammar import GrammarError
from rolepool.zoo import toolset as zoo_tools

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
ASKS = [
    ("coder", "Read the file notes/todo.txt"),
    ("search", "Find documents about kv cache eviction"),
    ("writer", "Write a section called Results saying the tests pass"),
    ("planner", "Plan a report on expert routing"),
]


def request(role: str, text: str, mode: str = "free", **sampling) -> Request:
    sampling.setdefault("max_tokens", 96)
    return Request(
        messages=[Message(role="user", content=text)],
        tools=zoo_tools.role_specs(role),
        sampling=Sampling(**sampling),
        decoding=Decoding(mode=mode),
        role=role,
    )


def valid_calls(text: str, role: str) -> list[dict]:
    schemas = {t.name: t.parameters for t in zoo_tools.role_specs(role)}
    calls = [json.loads(body) for body in CALL.findall(text)]
    for call in calls:
        jsonschema.validate(call["arguments"], schemas[call["name"]])
    return calls


@pytest.fixture(scope="module", params=["dense-s1", "moe-s1"])
def worker(request):
    return TransformersWorker(request.param)


async def together(worker, requests):
    out: list = [None] * len(requests)

    async def one(i):
        out[i] = await worker.complete(requests[i])

    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    return out


@pytest.mark.parametrize("overlap", [False, True])
async def test_free_rows_beside_constrained_rows_keep_their_greedy_tokens(worker, overlap):
    free = [request(role, text) for role, text in ASKS]
    alone = await together(worker, free)
    constrained = [request(role, text, "required") for role, text in ASKS]
    worker._decoder.overlap_masks = overlap  # masks filled during the forward, or after it
    try:
        mixed = await together(worker, [*free, *constrained])
    finally:
        worker._decoder.overlap_masks = False
    assert [c.text for c in mixed[: len(free)]] == [c.text for c in alone]
    for (role, _), completion in zip(ASKS, mixed[len(free) :], strict=True):
        assert completion.finish_reason == "stop", completion.text
        assert valid_calls(completion.text, role)
    assert live_matchers() == 0


async def test_auto_and_named_calls_validate_and_sampled_rows_too(worker):
    asks = [request(role, text, "auto") for role, text in ASKS]
    asks += [
        request(role, text, "required", temperature=1.0, seed=i)
        for i, (role, text) in enumerate(ASKS)
    ]
    named = request("coder", "Read the file notes/todo.txt").model_copy(
        update={"decoding": Decoding(mode="named", tool="write_file")}
    )
    results = await together(worker, [*asks, named])
    for (role, _), completion in zip(ASKS * 2, results[:-1], strict=True):
        if completion.finish_reason == "stop":
            valid_calls(completion.text, role)
    assert [c["name"] for c in valid_calls(results[-1].text, "coder")] == ["write_file"]


async def test_a_cancelled_constrained_request_frees_its_row_and_matcher(worker):
    long = request("writer", "Write a section called Results " * 3, "required", max_tokens=400)
    await worker.load()
    cancelled = worker.stats["cancelled"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.complete, long)
        with anyio.fail_after(30):
            while live_matchers() == 0:  # the row decodes under its grammar
                await anyio.sleep(0)
        tg.cancel_scope.cancel()
    assert worker.stats["cancelled"] == cancelled + 1
    for _ in range(200):  # the row leaves at the engine's next step
        if worker._decoder.active == 0 and live_matchers() == 0:
            break
        await anyio.sleep(0.02)
    assert worker._decoder.active == 0 and live_matchers() == 0
    after = await worker.complete(request("coder", "Read the file a.txt", "required"))
    assert valid_calls(after.text, "coder")


async def test_a_schema_the_engine_cannot_compile_is_a_user_error_naming_the_tool(worker):
    bad = ToolSpec(
        name="when", parameters={"type": "object", "properties": {"t": {"type": "date"}}}
    )
    ask = request("coder", "hi", "required").model_copy(update={"tools": [bad]})
    with pytest.raises(GrammarError, match="tool 'when'"):
        await worker.complete(ask)
    pool = Pool(
        [worker],
        policy=RoutingPolicy(version="v1", default={"choices": [{"worker": worker.info.name}]}),
    )
    with pytest.raises(UserError, match="tool 'when'"):
        await pool.complete(ask)
    # the batch is fine: the next request is served
    assert (await worker.complete(request("coder", "Read the file a.txt"))).text


async def test_a_route_and_an_agent_ask_for_constrained_decoding(worker):
    seen: list[Request] = []
    complete = worker.complete

    async def spy(req: Request):
        seen.append(req)
        return await complete(req)

    name = worker.info.name
    route = {"choices": [{"worker": name}], "decoding": "required"}
    pool = Pool([worker], policy=RoutingPolicy(version="v1", routes={"coder": route}))
    worker.complete = spy  # type: ignore[method-assign]
    try:
        await pool.complete(request("coder", "Read the file a.txt"))
        agent = Agent("a", role="writer", tools=[], decoding="auto")
        assert agent.loop_inputs().decoding.mode == "auto"
    finally:
        del worker.complete
    assert seen[-1].decoding.mode == "required"
    with pytest.raises(Exception, match="decoding"):
        Agent("b", decoding="sometimes")


async def test_serve_honours_tool_choice_and_response_format_in_process(worker):
    import httpx
    from serving import running

    tools = [t.to_openai() for t in zoo_tools.role_specs("coder")]
    ask = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Read the file notes/todo.txt"}],
        "max_tokens": 96,
    }
    bad = {"type": "function", "function": {"name": "when", "parameters": {"type": "date"}}}
    async with running(worker) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        named = {"type": "function", "function": {"name": "write_file"}}
        reply = await client.post(
            "/v1/chat/completions", json={**ask, "tools": tools, "tool_choice": named}
        )
        as_json = await client.post(
            "/v1/chat/completions", json={**ask, "response_format": {"type": "json_object"}}
        )
        refused = await client.post(
            "/v1/chat/completions", json={**ask, "tools": [bad], "tool_choice": "required"}
        )
    assert reply.status_code == 200, reply.text
    (call,) = reply.json()["choices"][0]["message"]["tool_calls"]
    arguments = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "write_file"
    jsonschema.validate(arguments, zoo_tools.schema("write_file"))
    assert as_json.status_code == 200
    assert isinstance(json.loads(as_json.json()["choices"][0]["message"]["content"]), dict)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "tool_choice" and "tool 'when'" in error["message"]


async def test_the_grammar_follows_the_format_the_worker_declares():
    from rolepool.core import RequestRefused

    pythonic = TransformersWorker("dense-s1", tool_format="pythonic")
    with pytest.raises(RequestRefused, match="no grammar for tool format 'pythonic'"):
        await pythonic.complete(request("coder", "Read the file a.txt", "required"))
    bare = TransformersWorker("dense-s1", tool_format="json")
    reply = await bare.complete(request("coder", "Read the file a.txt", "required"))
    call = json.loads(reply.text)  # one bare JSON call, no tags
    jsonschema.validate(call["arguments"], zoo_tools.schema(call["name"]))
    with pytest.raises(GrammarError, match="one-token opening"):
        await bare.complete(request("coder", "Read the file a.txt", "auto"))


async def test_a_greedy_row_whose_argmax_is_allowed_skips_its_mask_with_the_same_tokens(
    worker, monkeypatch
):
    from rolepool.pools import decode_batch

    asks = [request(role, text, "required") for role, text in ASKS]
    asks += [request(role, text, "auto") for role, text in ASKS]
    skipping = await together(worker, asks)
    monkeypatch.setattr(decode_batch.Batch, "greedy_rows", lambda self: set())  # every mask
    masked = await together(worker, asks)
    assert [c.text for c in skipping] == [c.text for c in masked]
    for i, ((role, _), completion) in enumerate(zip(ASKS * 2, skipping, strict=True)):
        calls = valid_calls(completion.text, role)  # auto may answer without a call
        assert calls or i >= len(ASKS)
