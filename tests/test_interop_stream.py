"""Token streaming in `rolepool serve` (issue 20.1): chunks leave while the worker still decodes,
text that a stop string or a tool call may still claim is held back, tool calls stream as OpenAI
streams them, and a client that hangs up cancels its request (its row leaves the batch)."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest
from serving import running

from rolepool.core import Completion, RequestRefused, Usage, WorkerInfo
from rolepool.pools.openai_stream import parse_sse
from rolepool.pools.streaming import IncrementalText, TextSink, current_sink

pytestmark = pytest.mark.anyio

HELLO = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}
ADD_TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}


class PacedWorker:
    """Feeds its pieces to the caller's text sink one by one, each after `gate(i)` lets it, and
    answers with their concatenation (cut at a stop string, as a real worker does)."""

    def __init__(self, pieces: list[str], *, gates: dict[int, anyio.Event] | None = None) -> None:
        self.pieces, self.gates = pieces, gates or {}
        self.cancelled = False
        self.finished = False

    @property
    def info(self) -> WorkerInfo:
        return WorkerInfo(name="paced", model="paced")

    async def health(self) -> bool:
        return True

    async def complete(self, request) -> Completion:
        sink = current_sink()
        try:
            for i, piece in enumerate(self.pieces):
                if i in self.gates:
                    await self.gates[i].wait()
                if sink is not None:
                    sink.feed(piece)
                await anyio.sleep(0)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished = True
        text = "".join(self.pieces)
        cuts = [text.find(s) for s in request.sampling.stop if s in text]
        text = text[: min(cuts)] if cuts else text
        return Completion(
            text=text, worker="paced", usage=Usage(prompt_tokens=3, completion_tokens=4)
        )


async def _events(response: httpx.Response):
    async for line in response.aiter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


async def test_the_first_token_leaves_before_the_worker_finishes():
    gate = anyio.Event()
    worker = PacedWorker(["Hel", "lo", " world"], gates={1: gate})
    async with running(worker) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("POST", "/v1/chat/completions", json=HELLO) as response:
            assert response.status_code == 200
            contents = []
            async for chunk in _events(response):
                delta = chunk["choices"][0]["delta"]
                if delta.get("content"):
                    contents.append(delta["content"])
                    if len(contents) == 1:
                        assert not worker.finished  # streamed while the worker still works
                        gate.set()
        metrics = (await client.get("/metrics")).text
    assert "".join(contents) == "Hello world" and contents[0] == "Hel"
    assert 'rolepool_time_to_first_token_seconds_count{role="none"} 1.0' in metrics


async def test_text_a_stop_string_may_claim_is_held_back():
    worker = PacedWorker(["abc ST", "OP never"])
    body = {**HELLO, "stop": ["STOP"]}
    async with running(worker) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body)
    chunks = parse_sse(response.text)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == "abc "
    assert all("ST" not in (c["choices"][0]["delta"].get("content") or "") for c in chunks)


async def test_a_tool_call_never_leaves_as_content_and_streams_as_openai_does():
    call = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    worker = PacedWorker(["Sure. ", call[:7], call[7:30], call[30:]])
    body = {**HELLO, "tools": [ADD_TOOL], "stream_options": {"include_usage": True}}
    async with running(worker) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post("/v1/chat/completions", json=body)
    chunks = parse_sse(response.text)
    assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]["total_tokens"] == 7
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content.strip() == "Sure." and "<" not in content
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"] == {"name": "add", "arguments": ""} and calls[0]["id"]
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"a": 1, "b": 2}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-2]["rolepool"]["worker"] == "paced"


async def test_a_refusal_before_the_first_token_is_a_plain_400():
    class Refusing(PacedWorker):
        async def complete(self, request):
            raise RequestRefused("prompt too long")

    async with running(Refusing([])) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        response = await c.post("/v1/chat/completions", json=HELLO)
    assert response.status_code == 400 and "too long" in response.json()["error"]["message"]


async def test_hanging_up_mid_stream_cancels_the_worker_call():
    never = anyio.Event()
    worker = PacedWorker(["first", "second"], gates={1: never})
    async with running(worker) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("POST", "/v1/chat/completions", json=HELLO) as response:
            async for chunk in _events(response):
                if chunk["choices"][0]["delta"].get("content"):
                    break  # leaving the block closes the connection
        with anyio.fail_after(5):
            while not worker.cancelled:
                await anyio.sleep(0.02)
        metrics = (await client.get("/metrics")).text
    assert not worker.finished
    assert 'status="client_closed"' in metrics


def test_incremental_text_equals_the_whole_decode():
    pieces = {1: "a", 2: "\ufffd", 3: "é", 4: " b"}  # token 2 alone is half a character

    def detokenize(ids: list[int]) -> str:
        text = "".join(pieces[i] for i in ids)
        return text.replace("\ufffdé", "ü")  # tokens 2, 3 together make one character

    text = IncrementalText(detokenize)
    deltas = [text.add(t) for t in (1, 2, 3, 4)]
    assert deltas == ["a", "", "ü", " b"]
    assert "".join(deltas) == detokenize([1, 2, 3, 4])


def test_sink_lets_out_nothing_after_a_possible_call():
    sink = TextSink(hold_calls=True)
    sink.feed("Let me check ")
    sink.feed('{"name"')
    sink.feed(": 1}")
    assert sink.text[: sink.sent] == "Let me check " and sink.held
    assert sink.rest_of("Let me check the rest") == "the rest"


# -- the in-process worker: real token streaming and cancellation ----------------------------------


@pytest.mark.slow
async def test_in_process_worker_streams_tokens_and_a_hang_up_frees_its_row(tiny_dense_dir):
    from rolepool.pools.transformers_worker import TransformersWorker

    worker = TransformersWorker(tiny_dense_dir, name="tiny")
    body = {**HELLO, "max_tokens": 40}
    async with worker, running(worker) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            plain = await client.post("/v1/chat/completions", json={**body, "stream": False})
            streamed = await client.post("/v1/chat/completions", json=body)
            chunks = parse_sse(streamed.text)
            pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
            pieces = [p for p in pieces if p]
            # greedy: the streamed text is the non-streamed text, in several pieces
            assert "".join(pieces) == plain.json()["choices"][0]["message"]["content"]
            assert len(pieces) > 3
            long = {**body, "max_tokens": 1000}
            async with client.stream("POST", "/v1/chat/completions", json=long) as response:
                async for chunk in _events(response):
                    if chunk["choices"][0]["delta"].get("content"):
                        break
            with anyio.fail_after(10):
                while worker.stats["cancelled"] < 1 or worker._decoder.active:
                    await anyio.sleep(0.02)
            # a non-streaming client that goes away while its row decodes cancels it too
            async with anyio.create_task_group() as tg:
                plain_long = {**long, "stream": False}
                tg.start_soon(lambda: client.post("/v1/chat/completions", json=plain_long))
                with anyio.fail_after(10):
                    while not worker._decoder.active:
                        await anyio.sleep(0.001)
                tg.cancel_scope.cancel()  # the client closes its connection
            with anyio.fail_after(10):
                while worker.stats["cancelled"] < 2 or worker._decoder.active:
                    await anyio.sleep(0.02)
    assert worker.stats["cancelled"] == 2
    assert worker.stats["completion_tokens"] == 80  # the abandoned rows are not counted


@pytest.mark.slow
async def test_a_client_hanging_up_costs_nothing_to_its_batch_neighbours(tiny_dense_dir):
    from rolepool.pools.transformers_worker import TransformersWorker

    worker = TransformersWorker(tiny_dense_dir, name="tiny")
    other = {**HELLO, "messages": [{"role": "user", "content": "tell me more"}], "max_tokens": 60}
    async with worker, running(worker) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            alone = await client.post("/v1/chat/completions", json={**other, "stream": False})
            kept: list[str] = []

            async def neighbour() -> None:
                response = await client.post("/v1/chat/completions", json=other)
                kept.extend(c["choices"][0]["delta"].get("content") or "" for c in parse_sse(
                    response.text))  # fmt: skip

            async def leaver() -> None:
                body = {**HELLO, "max_tokens": 1000}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for chunk in _events(response):
                        if chunk["choices"][0]["delta"].get("content"):
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(neighbour)
                tg.start_soon(leaver)
    assert "".join(kept) == alone.json()["choices"][0]["message"]["content"]
    assert worker.stats["cancelled"] == 1 and worker.stats["failed_requests"] == 0
