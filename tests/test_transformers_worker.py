"""TransformersWorker on the tiny random Llama and Mixtral: loading, info, usage, batching,
per-request sampling, expert telemetry and failure isolation.

The session fixtures' weights (init std 0.02) make a tiny model repeat one token, which would make
"batched equals unbatched" trivially true; the `lively_*` copies re-draw the weights with std 0.3 so
outputs vary token by token and an off-by-one in padding or positions would show.
"""

from __future__ import annotations

import shutil

import anyio
import pytest
import torch

from rolepool.core import (
    ConfigError,
    Message,
    Request,
    RequestRefused,
    Sampling,
    ToolCall,
    ToolSpec,
    WorkerError,
)
from rolepool.pools.transformers_worker import TransformersWorker, _chat_messages
from rolepool.pools.worker import Worker

pytestmark = pytest.mark.anyio

PROMPTS = [
    "plan",
    "plan the work and assign a coder",
    "the quick brown fox jumps over the lazy dog 0123456789 " * 3,
    "search docs",
    "write tests for the mixture of experts " * 2,
    "x",
    "assign a coder to write tests and plan the work",
    "0123456789",
]


def _relive(src, dst):
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(dst, local_files_only=True)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    model.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def lively_dense_dir(tiny_dense_dir, tmp_path_factory):
    return _relive(tiny_dense_dir, tmp_path_factory.mktemp("lively") / "lively-dense")


@pytest.fixture(scope="module")
def lively_moe_dir(tiny_moe_dir, tmp_path_factory):
    return _relive(tiny_moe_dir, tmp_path_factory.mktemp("lively") / "lively-moe")


@pytest.fixture
def model_dirs(tiny_dense_dir, tiny_moe_dir, lively_dense_dir, lively_moe_dir):
    return {
        "dense": tiny_dense_dir,
        "moe": tiny_moe_dir,
        "lively-dense": lively_dense_dir,
        "lively-moe": lively_moe_dir,
    }


def req(text: str, **sampling) -> Request:
    sampling.setdefault("max_tokens", 12)
    return Request(messages=[Message(role="user", content=text)], sampling=Sampling(**sampling))


async def gather(worker: TransformersWorker, requests: list[Request]) -> list:
    """Run `requests` concurrently; results (or the exception raised) in request order."""
    out: list = [None] * len(requests)

    async def one(i: int) -> None:
        try:
            out[i] = await worker.complete(requests[i])
        except Exception as exc:
            out[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    return out


async def answer_or_error(worker: TransformersWorker, request: Request, into: list) -> None:
    """Append the completion to `into`, or the WorkerError the request ended with."""
    try:
        into.append(await worker.complete(request))
    except WorkerError as exc:
        into.append(exc)


async def one_by_one(worker: TransformersWorker, requests: list[Request]) -> list:
    return [await worker.complete(r) for r in requests]


def _expected_params(config) -> tuple[int, int]:
    """Parameter counts from the config alone: Llama/Mixtral, no biases, tied embeddings."""
    h, layers = config.hidden_size, config.num_hidden_layers
    head_dim = h // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    attention = 2 * h * h + 2 * h * kv
    norms = 2 * h
    ffn = 3 * h * config.intermediate_size
    experts = getattr(config, "num_local_experts", 0)
    if experts:
        mlp = experts * ffn + experts * h  # the experts plus the router
        inactive = layers * (experts - config.num_experts_per_tok) * ffn
    else:
        mlp, inactive = ffn, 0
    total = config.vocab_size * h + layers * (attention + norms + mlp) + h
    return total, total - inactive


@pytest.mark.parametrize("arch", ["dense", "moe"])
async def test_info_reads_architecture_and_counts_params(arch, model_dirs):
    worker = TransformersWorker(model_dirs[arch])
    info = worker.info
    assert isinstance(worker, Worker)
    assert info.architecture == arch
    assert info.name == info.model == model_dirs[arch].name
    assert (info.total_params, info.active_params) == _expected_params(worker.config)
    if arch == "moe":
        assert info.active_params < info.total_params
    assert len(info.version) == 12 and int(info.version, 16) >= 0
    assert (
        TransformersWorker(model_dirs[arch], name="x", architecture="dense").info.architecture
        == "dense"
    )
    assert await worker.health()


@pytest.mark.parametrize("arch", ["lively-dense", "lively-moe"])
async def test_usage_latency_and_finish_reason(arch, model_dirs):
    worker = TransformersWorker(model_dirs[arch])
    request = Request(
        messages=[Message(role="system", content="be brief"), Message(role="user", content="plan")],
        sampling=Sampling(max_tokens=7),
    )
    completion = await worker.complete(request)
    prompt = worker.tokenizer.apply_chat_template(
        [m.to_openai() for m in request.messages], add_generation_prompt=True, return_dict=False
    )
    assert completion.usage.prompt_tokens == len(prompt)
    assert 1 <= completion.usage.completion_tokens <= 7
    assert completion.finish_reason in {"stop", "length"}
    if completion.finish_reason == "length":
        assert completion.usage.completion_tokens == 7
    assert completion.latency > 0
    assert (
        completion.worker == worker.info.name
        and completion.architecture == worker.info.architecture
    )
    assert completion.tool_calls is None
    assert (completion.expert_load is None) == (worker.info.architecture == "dense")
    await worker.aclose()


@pytest.mark.parametrize("arch", ["dense", "moe", "lively-dense", "lively-moe"])
async def test_concurrent_requests_share_generate_calls_and_match_unbatched(arch, model_dirs):
    worker = TransformersWorker(model_dirs[arch], max_wait_ms=50)
    requests = [req(p, max_tokens=4 + i) for i, p in enumerate(PROMPTS)]
    alone = await one_by_one(worker, requests)
    assert worker.stats["generate_calls"] == len(requests)
    batched = await gather(worker, requests)
    stats = worker.stats
    assert stats["generate_calls"] - len(requests) < len(requests)
    assert max(stats["batch_sizes"]) > 1 and stats["queue_depth"] == 0
    for a, b in zip(alone, batched, strict=True):
        assert b.text == a.text
        assert b.usage == a.usage and b.finish_reason == a.finish_reason
        # Padding and partner rows are excluded: the same counts alone as in a batch.
        assert b.expert_load == a.expert_load
    if "lively" in arch:
        assert len({c.text for c in alone}) > 1, "outputs should differ between prompts"
    await worker.aclose()


@pytest.mark.parametrize("arch", ["moe", "lively-moe"])
async def test_expert_load_counts_processed_tokens_times_top_k(arch, model_dirs):
    worker = TransformersWorker(model_dirs[arch])
    config = worker.config
    results = await gather(worker, [req(p, max_tokens=3 + i) for i, p in enumerate(PROMPTS[:4])])
    for completion in results:
        load = completion.expert_load
        assert len(load) == config.num_hidden_layers
        processed = completion.usage.prompt_tokens + completion.usage.completion_tokens - 1
        for layer in load:
            assert len(layer) == config.num_local_experts and min(layer) >= 0
            assert sum(layer) == processed * config.num_experts_per_tok
    off = TransformersWorker(model_dirs[arch], expert_telemetry=False)
    assert (await off.complete(req("plan"))).expert_load is None
    await off.aclose()
    await worker.aclose()


@pytest.mark.parametrize("arch", ["lively-dense", "lively-moe"])
async def test_max_tokens_and_stop_strings_are_per_request(arch, model_dirs):
    worker = TransformersWorker(model_dirs[arch], max_wait_ms=50)
    full = await worker.complete(req(PROMPTS[1], max_tokens=12))
    assert full.finish_reason == "length", "the lively model should not hit EOS this early"
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    requests = [
        req(PROMPTS[1], max_tokens=1),
        req(PROMPTS[1], max_tokens=5),
        req(PROMPTS[1], max_tokens=12, stop=[stop]),
        req(PROMPTS[1], max_tokens=12),
    ]
    short, medium, stopped, whole = await gather(worker, requests)
    assert worker.stats["batch_sizes"].get(4) == 1
    assert (short.usage.completion_tokens, short.finish_reason) == (1, "length")
    assert (medium.usage.completion_tokens, medium.finish_reason) == (5, "length")
    assert full.text.startswith(short.text) and full.text.startswith(medium.text)
    assert whole.text == full.text
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.find(stop)]
    assert stopped.usage.completion_tokens < 12
    for batched, request in zip((short, medium, stopped), requests, strict=False):
        alone = await worker.complete(request)
        assert (alone.text, alone.usage, alone.expert_load) == (
            batched.text,
            batched.usage,
            batched.expert_load,
        )
    await worker.aclose()


async def test_differing_sampling_settings_in_one_batch_are_honoured(lively_moe_dir):
    worker = TransformersWorker(lively_moe_dir, max_wait_ms=50)
    greedy = req(PROMPTS[2], max_tokens=10)
    expected = (await worker.complete(greedy)).text
    seeded = [req(PROMPTS[2], max_tokens=10, temperature=1.5, seed=s) for s in (1, 2, 1)]
    hot = req(PROMPTS[2], max_tokens=10, temperature=0.7, top_p=0.9)
    calls_before = worker.stats["generate_calls"]
    results = await gather(worker, [greedy, *seeded, hot, greedy])
    # The engine samples per row: greedy, seeded and hot rows share one admission.
    assert worker.stats["generate_calls"] - calls_before == 1
    assert results[0].text == results[5].text == expected
    assert results[1].text == results[3].text, "same seed, same sample"
    assert len({results[1].text, results[2].text, expected}) == 3
    again = await worker.complete(seeded[0])
    assert again.text == results[1].text
    await worker.aclose()


@pytest.mark.parametrize(
    "model", ["/nonexistent/model/dir", "meta-llama/Llama-3.1-8B-Instruct", "file-not-dir"]
)
async def test_bad_model_dir_is_a_config_error(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file-not-dir").write_text("x")
    with pytest.raises(ConfigError, match="local model directory"):
        TransformersWorker(model)
    with pytest.raises(ConfigError, match="config.json"):
        TransformersWorker(tmp_path)


async def test_corrupt_weights_are_a_config_error_on_load(tiny_dense_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dense_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    worker = TransformersWorker(broken)  # config and tokenizer are fine: loading is lazy
    assert await worker.health()
    with pytest.raises(ConfigError, match="cannot load weights"):
        await worker.complete(req("plan"))
    assert not await worker.health()


async def test_failed_generate_fails_only_its_batch(lively_dense_dir):
    """The `generate` path (models the decode engine does not serve)."""
    worker = TransformersWorker(lively_dense_dir, max_wait_ms=50)
    await worker.load()
    worker._decoder = None
    real_generate = worker._model.generate

    def flaky_generate(*args, **kwargs):
        if not kwargs.get("do_sample"):
            raise RuntimeError("boom")
        return real_generate(*args, **kwargs)

    worker._model.generate = flaky_generate
    greedy = [req(p) for p in PROMPTS[:3]]
    sampled = [req(p, temperature=0.8) for p in PROMPTS[:3]]
    results = await gather(worker, [*greedy, *sampled])
    assert all(isinstance(r, WorkerError) and "boom" in str(r) for r in results[:3])
    assert all(r.usage.completion_tokens >= 1 for r in results[3:])
    assert worker.stats["failed_requests"] == 3
    worker._model.generate = real_generate
    assert (await worker.complete(greedy[0])).usage.completion_tokens >= 1
    await worker.aclose()


async def test_a_prompt_whose_prefill_fails_fails_alone(lively_dense_dir):
    worker = TransformersWorker(lively_dense_dir, max_wait_ms=50)
    await worker.load()
    poison = req("poison " * 9)
    bad = worker._prompt_ids(poison)
    real_prefill = worker._decoder._prefill

    def flaky_prefill(chunk):
        if any(p.prompt_ids == bad for p in chunk):
            raise RuntimeError("boom")
        return real_prefill(chunk)

    good = [req(p) for p in PROMPTS[:4]]
    alone = await one_by_one(worker, good)
    worker._decoder._prefill = flaky_prefill
    results = await gather(worker, [good[0], poison, *good[1:]])
    assert isinstance(results[1], WorkerError) and "boom" in str(results[1])
    assert [r.text for r in results[:1] + results[2:]] == [a.text for a in alone]
    assert worker.stats["failed_requests"] == 1
    await worker.aclose()


async def test_a_failed_decode_step_fails_the_rows_in_flight_and_the_worker_goes_on(
    lively_dense_dir,
):
    worker = TransformersWorker(lively_dense_dir, max_wait_ms=50)
    await worker.load()
    decoder = worker._decoder
    real_step = decoder._step
    steps = 0

    def flaky_step():  # the third decode step fails
        nonlocal steps
        steps += 1
        if steps == 3:
            raise RuntimeError("boom")
        return real_step()

    decoder._step = flaky_step
    results = await gather(worker, [req(p, max_tokens=12) for p in PROMPTS[:3]])
    assert all(isinstance(r, WorkerError) and "boom" in str(r) for r in results)
    assert worker.stats["failed_requests"] == 3 and worker._decoder.active == 0
    assert (await worker.complete(req("plan"))).usage.completion_tokens >= 1
    await worker.aclose()


async def test_cancelled_request_is_dropped_before_it_runs(lively_dense_dir):
    worker = TransformersWorker(lively_dense_dir, max_wait_ms=300, max_batch_size=8)
    await worker.load()
    with anyio.move_on_after(0.05):
        await worker.complete(req("plan"))
    assert worker.stats["cancelled"] == 1 and worker.stats["queue_depth"] == 0
    await anyio.sleep(0.35)
    assert worker.stats["generate_calls"] == 0
    assert (await worker.complete(req("plan"))).text
    await worker.aclose()


async def test_tools_and_tool_calls_reach_the_chat_template(lively_dense_dir):
    worker = TransformersWorker(lively_dense_dir)
    call = ToolCall(name="search_docs", arguments={"query": "moe", "top_k": 3})
    history = [
        Message(role="user", content="find docs"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", content="3 hits", tool_call_id=call.id, name="search_docs"),
    ]
    rendered = _chat_messages(Request(messages=history))
    assert rendered[1]["tool_calls"][0]["function"]["arguments"] == {"query": "moe", "top_k": 3}
    tools = [ToolSpec(name="search_docs", description="search the docs")]
    plain = await worker.complete(Request(messages=history))
    with_tools = await worker.complete(Request(messages=history, tools=tools))
    text = worker.tokenizer.decode(worker._prompt_ids(Request(messages=history, tools=tools)))
    assert "<tools>search_docs;</tools>" in text and "<tool_call>search_docs</tool_call>" in text
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens
    await worker.aclose()


async def test_a_prompt_longer_than_the_context_fails_alone(lively_dense_dir):
    worker = TransformersWorker(lively_dense_dir, max_wait_ms=50)
    too_long = req("plan the work " * 400)
    results = await gather(worker, [too_long, req("plan"), req("x")])
    assert isinstance(results[0], RequestRefused) and "context" in str(results[0])
    assert all(r.usage.completion_tokens >= 1 for r in results[1:])
    await worker.aclose()
