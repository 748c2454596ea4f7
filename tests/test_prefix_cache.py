"""The decode engine's prefix cache (`rolepool.pools.prefix_cache`): exact reuse by whole blocks,
bounded memory with least-recently-used eviction, and, on the shipped and tiny models, greedy
outputs with the cache equal to `generate` without it, for rows that reuse a prefix, rows that
do not, both in one prefill, and a conversation's next turn."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest
import torch
from test_decode import drain, generate_alone, lively_dense, lively_moe, make_job  # noqa: F401

from rolepool.core import Message, Request, Sampling, ToolSpec
from rolepool.pools.kv_buffer import KVBuffer
from rolepool.pools.prefix_cache import PrefixCache, compact, seat
from rolepool.pools.transformers_worker import TransformersWorker

pytestmark = pytest.mark.anyio

SYSTEM = (
    "You are the search agent of a team. Find the documents the task needs, quote them "
    "exactly, and call one tool at a time; say when nothing relevant was found."
)
TOOLS = [
    ToolSpec(
        name="search_docs",
        description="Search the project documents",
        parameters={"type": "object", "properties": {"query": {"type": "string"}}},
    ),
    ToolSpec(name="read_doc", description="Read one document by its id"),
]
QUESTIONS = ["kv cache", "plan the work", "mixture of experts routing in layer 3", "x", "tests"]


@pytest.fixture
def models(lively_dense, lively_moe):  # noqa: F811 - test_decode's fixtures
    return {"lively-dense": lively_dense, "lively-moe": lively_moe}


def loaded(model, **kw) -> TransformersWorker:
    """A loaded worker whose engine keeps a prefix cache (MoE workers with expert telemetry
    keep none unless given a size)."""
    worker = TransformersWorker(model, prefix_cache_tokens=8192, **kw)
    worker._load_sync()
    assert worker._decoder is not None and worker._decoder.prefix_cache is not None
    return worker


def _kv(layers: int, length: int, fill: float = 1.0) -> list[KVBuffer]:
    out = []
    for layer in range(layers):
        buffer = KVBuffer()
        keys = torch.arange(length, dtype=torch.float32).view(1, 1, length, 1) + 100 * layer
        buffer.update(keys * fill, -keys * fill)
        out.append(buffer)
    return out


def test_reuse_is_by_whole_blocks_of_the_exact_tokens_and_leaves_one_to_prefill():
    cache = PrefixCache(max_tokens=64, block=4)
    ids = list(range(10))
    cache.insert(ids, _kv(2, 10), row=0, start=0)
    assert cache.tokens == 8, "two full blocks kept, the partial one not"
    hit = cache.match(ids + [99])
    assert hit is not None and hit.length == 8
    assert hit.kv.shape == (2, 2, 1, 8, 1)
    assert hit.kv[1, 0, 0, :, 0].tolist() == [100.0 + i for i in range(8)]
    assert hit.kv[0, 1, 0, :, 0].tolist() == [-float(i) for i in range(8)]
    assert cache.match(ids[:8]).length == 4, "at least one token is left to prefill"
    assert cache.match([0, 1, 2, 3, 4, 5, 9, 7, 8]).length == 4, "a changed token ends reuse"
    assert cache.match([1, 2, 3, 4, 5]) is None, "a prefix, not any substring"
    assert cache.hit_tokens == 16


def test_memory_is_bounded_and_the_least_recently_used_leave_first():
    cache = PrefixCache(max_tokens=8, block=4)
    a, b, c = [1] * 5, [2] * 5, [3] * 5
    cache.insert(a, _kv(1, 5), 0, 0)
    cache.insert(b, _kv(1, 5), 0, 0)
    assert cache.match(a) is not None  # a is now the most recent
    cache.insert(c, _kv(1, 5), 0, 0)
    assert cache.tokens <= 8 and cache.evicted == 1
    assert cache.match(b) is None and cache.match(a) is not None and cache.match(c) is not None


def test_seat_and_compact_put_each_rows_prefix_and_new_tokens_together():
    cache = PrefixCache(max_tokens=64, block=2)
    prompt = [5, 6, 7, 8, 9]
    cache.insert(prompt, _kv(1, 5), 0, 0)
    hits = [cache.match(prompt), None]
    seated = seat([prompt, [1, 2]], hits, pad_id=0)
    assert seated.past.tolist() == [4, 0] and seated.cached == 4
    assert seated.ids.tolist() == [[0, 9], [1, 2]]
    assert seated.key_mask.tolist() == [[1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 1, 1]]
    assert seated.positions.tolist() == [[4, 4], [0, 1]]
    # What a prefill would append: the new tokens' keys, marked by their token id.
    new = seated.ids.to(torch.float32).view(2, 1, 2, 1) * 1000
    seated.layers[0].update(new, new)
    layers, pad = compact(seated)
    assert pad.tolist() == [0, 3]
    assert layers[0].keys[:, 0, :, 0].tolist() == [[0, 1, 2, 3, 9000], [0, 0, 0, 1000, 2000]]


def _requests(worker: TransformersWorker, questions: list[str]) -> list:
    requests = [
        Request(
            messages=[Message(role="system", content=SYSTEM), Message(role="user", content=q)],
            tools=TOOLS,
            sampling=Sampling(max_tokens=12),
        )
        for q in questions
    ]
    return [make_job(worker, r) for r in requests]


@pytest.mark.parametrize("name", ["dense-s1", "moe-s1", "lively-dense", "lively-moe"])
@pytest.mark.parametrize("lean", [True, False])
async def test_cached_outputs_equal_uncached_token_for_token(name, lean, models):
    if not lean and "lively" not in name:
        pytest.skip("the full forward is checked on the tiny models (it is slow)")
    worker = loaded(models.get(name, name))
    decoder = worker._decoder
    if not lean:
        decoder.lean = None
    warm = _requests(worker, QUESTIONS[:1])
    drain(decoder, warm)
    assert warm[0].cached_prompt_tokens == 0
    # One prefill with rows that reuse the shared prefix and one that shares nothing.
    other = Request(messages=[Message(role="user", content="unrelated")])
    rows = _requests(worker, QUESTIONS) + [make_job(worker, other)]
    done = drain(decoder, rows)
    shared = len(warm[0].prompt_ids) // 16 * 16
    assert all(r.cached_prompt_tokens >= min(shared, 16) for r in rows[:-1])
    assert rows[0].cached_prompt_tokens > rows[1].cached_prompt_tokens, "the same prompt"
    assert rows[-1].cached_prompt_tokens == 0
    for job in rows:
        assert done[id(job)].tokens == generate_alone(worker, job), job.request.messages[-1]


@pytest.mark.parametrize("name", ["dense-s1", "lively-moe"])
async def test_a_conversations_next_turn_reuses_its_earlier_turns(name, models):
    worker = loaded(models.get(name, name))
    first = _requests(worker, ["kv cache"])[0]
    reply = worker._detokenize(drain(worker._decoder, [first])[id(first)].tokens)
    history = [*first.request.messages, Message(role="assistant", content=reply or "ok")]
    history.append(Message(role="user", content="and the next one?"))
    second = make_job(
        worker, Request(messages=history, tools=TOOLS, sampling=Sampling(max_tokens=12))
    )
    done = drain(worker._decoder, [second])
    assert second.cached_prompt_tokens >= len(first.prompt_ids) // 16 * 16 > 0
    assert done[id(second)].tokens == generate_alone(worker, second)


async def test_the_worker_reports_cached_prompt_tokens_and_can_turn_the_cache_off():
    request = Request(
        messages=[Message(role="system", content=SYSTEM), Message(role="user", content="hi")],
        tools=TOOLS,
        sampling=Sampling(max_tokens=4),
    )
    async with TransformersWorker("dense-s1") as worker:
        first, second = [await worker.complete(request) for _ in range(2)]
        assert first.cached_prompt_tokens == 0 and second.cached_prompt_tokens > 0
        assert second.cached_prompt_tokens < second.usage.prompt_tokens
        assert first.text == second.text
        assert worker.stats["prefix_cache_hit_tokens"] == second.cached_prompt_tokens
    async with TransformersWorker("dense-s1", prefix_cache_tokens=0) as worker:
        off = [await worker.complete(request) for _ in range(2)]
        assert [c.cached_prompt_tokens for c in off] == [None, None]
        assert off[1].text == first.text
    # Off by default where it would change what expert telemetry counts.
    assert TransformersWorker("moe-s1").prefix_cache_tokens == 0
    assert TransformersWorker("moe-s1", expert_telemetry=False).prefix_cache_tokens > 0


async def test_expert_load_counts_only_the_tokens_the_experts_processed():
    worker = loaded("moe-s1")
    warm, again = _requests(worker, ["kv cache", "kv cache"])
    drain(worker._decoder, [warm])
    row = drain(worker._decoder, [again])[id(again)]
    top_k = worker._recorder.top_k
    computed = len(again.prompt_ids) - again.cached_prompt_tokens + len(row.tokens) - 1
    assert again.cached_prompt_tokens > 0
    assert all(sum(layer) == computed * top_k for layer in row.expert_load)


async def test_serve_reports_cached_tokens_in_usage_streamed_or_not():
    from serving import running

    body = {
        "model": "dense-s1",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}],
        "max_tokens": 3,
    }
    async with TransformersWorker("dense-s1") as worker, running(worker) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
            second = (await client.post("/v1/chat/completions", json=body)).json()["usage"]
            streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
            async with client.stream("POST", "/v1/chat/completions", json=streamed) as response:
                lines = [
                    line async for line in response.aiter_lines() if line.startswith("data: {")
                ]
    last = json.loads(lines[-1].removeprefix("data: "))["usage"]
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < second["prompt_tokens"]
    assert last["prompt_tokens_details"] == {"cached_tokens": cached}


async def test_a_cold_burst_of_one_role_computes_the_shared_prefix_once():
    worker = loaded("dense-s1")
    rows = _requests(worker, QUESTIONS)
    done = drain(worker._decoder, rows)
    cached = sorted(job.cached_prompt_tokens for job in rows)
    assert cached[0] == 0 and all(n >= 16 for n in cached[1:]), cached
    for job in rows:
        assert done[id(job)].tokens == generate_alone(worker, job)


def test_pool_toml_sets_the_cache_size_and_refuses_a_negative_one():
    from rolepool.core import ConfigError
    from rolepool.pools.config import build_pool, parse_pool_config

    def config(**worker):
        spec = {"backend": "transformers", "model": "dense-s1", **worker}
        return {
            "workers": {"d": spec},
            "policy": {"version": "v1", "default": {"choices": [{"worker": "d"}]}},
        }

    assert (
        build_pool(parse_pool_config(config(prefix_cache_tokens=0)))
        .workers["d"]
        .prefix_cache_tokens
        == 0
    )
    assert build_pool(parse_pool_config(config())).workers["d"].prefix_cache_tokens == 8192
    with pytest.raises(ConfigError, match="prefix_cache_tokens"):
        parse_pool_config(config(prefix_cache_tokens=-1))


async def test_a_runs_model_completed_events_carry_the_cached_prompt_tokens():
    from rolepool import Agent
    from rolepool.core import RolepoolError

    agent = Agent("searcher", role="search", instructions=SYSTEM, max_turns=1)
    async with TransformersWorker("dense-s1") as worker:
        cached = []
        for _ in range(2):
            async with agent.start("find the kv cache notes", worker=worker) as run:
                cached += [
                    e.cached_prompt_tokens
                    async for e in run.events()
                    if e.type == "model.completed"
                ]
                with contextlib.suppress(RolepoolError):  # one turn may not finish: no matter
                    await run.result()
    assert cached[0] == 0 and cached[-1] > 0, cached
