"""The family coverage matrix (issue 22): a tiny random model of each family, built from
transformers' own config class (`rolepool.pools.families_tiny`), served by TransformersWorker.

For each family: greedy completions equal `model.generate`'s, on the decode path the registry
expects (lean forward, the engine with the model's own forward, or the `generate` fallback, which
the worker names in `stats["decode_path"]` and logs once); batching, per-row stop strings and a
caller giving up mid-way work on that path; for MoE families, the expert load is exactly what the
family's own router chose (its output, hooked in a separate unbatched forward), shared experts
apart.
"""

from __future__ import annotations

import logging

import anyio
import pytest
import torch

from rolepool.core import Message, Request, Sampling
from rolepool.pools.families import FAMILIES, shared_experts
from rolepool.pools.families_tiny import TINY_FAMILIES, build_tiny_family
from rolepool.pools.transformers_worker import TransformersWorker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

NOT_LEAN = {"gemma3_text": "generate", "gpt_oss": "generate", "olmo2": "engine"}
NOT_LEAN |= {"phimoe": "engine", "deepseek_v3": "generate"}
EXPECTED_PATH = {family: NOT_LEAN.get(family, "lean") for family in TINY_FAMILIES}
MOE = [f for f, family in FAMILIES.items() if family.group == "moe"]
PROMPTS = ["plan the work", "search docs for mixture of experts", "x", "write tests " * 6]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    built: dict = {}

    def get(family: str):
        if family not in built:
            built[family] = build_tiny_family(family, tmp_path_factory.mktemp(family) / family)
        return built[family]

    return get


def req(text: str, max_tokens: int = 10, stop: list[str] | None = None) -> Request:
    sampling = Sampling(max_tokens=max_tokens, stop=stop or [])
    return Request(messages=[Message(role="user", content=text)], sampling=sampling)


async def concurrently(worker: TransformersWorker, requests: list[Request]) -> list:
    """The completions of `requests`, sent at once (so the worker batches them), in order."""
    results: list = [None] * len(requests)

    async def one(i: int) -> None:
        results[i] = await worker.complete(requests[i])

    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    return results


def alone(worker: TransformersWorker, request: Request) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy tokens) from the model's own `generate`, one prompt, no padding."""
    prompt = worker._prompt_ids(request)
    with torch.inference_mode():
        out = worker._model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=request.sampling.max_tokens,
            do_sample=False,
            eos_token_id=worker._eos,
            pad_token_id=worker._pad,
        )
    tokens = out[0, len(prompt) :].tolist()
    for i, token in enumerate(tokens):
        if token in worker._eos:
            return prompt, tokens[: i + 1]
    return prompt, tokens


def test_every_family_of_the_issue_is_registered_and_built():
    assert set(TINY_FAMILIES) == set(FAMILIES)
    assert len(FAMILIES) == 16


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
async def test_greedy_equals_generate_on_the_expected_path(family, family_dirs, caplog):
    caplog.set_level(logging.INFO, logger="rolepool.pools")
    worker = TransformersWorker(family_dirs(family), max_wait_ms=20)
    await worker.load()
    requests = [req(p, max_tokens=6 + 2 * i) for i, p in enumerate(PROMPTS)]
    results = await concurrently(worker, requests)
    for request, completion in zip(requests, results, strict=True):
        _, tokens = alone(worker, request)
        assert completion.text == worker._detokenize(tokens)
        assert completion.usage.completion_tokens == len(tokens)
    assert worker.stats["decode_path"] == EXPECTED_PATH[family]
    said = [r for r in caplog.records if "decode_path=" in r.getMessage()]
    assert len(said) == (0 if EXPECTED_PATH[family] == "lean" else 1)
    if EXPECTED_PATH[family] == "generate":
        assert said[0].levelno == logging.WARNING
    await worker.aclose()


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
async def test_batching_stop_strings_and_a_caller_giving_up(family, family_dirs):
    worker = TransformersWorker(family_dirs(family), max_wait_ms=20)
    await worker.load()
    plain = req(PROMPTS[1], max_tokens=12)
    expected = worker._detokenize(alone(worker, plain)[1])
    stop = expected[3:6] if len(expected.strip()) >= 6 else None
    stopped = req(PROMPTS[3], max_tokens=12, stop=[stop] if stop else None)
    solo_stopped = worker._detokenize(alone(worker, req(PROMPTS[3], max_tokens=12))[1])
    results: dict = {}

    async def one(name: str, request: Request) -> None:
        results[name] = await worker.complete(request)

    async def give_up() -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as inner:
                inner.start_soon(one, "gave_up", req(PROMPTS[0], max_tokens=300))
                while not (worker.stats["decode_steps"] >= 2 or worker.stats["generate_calls"]):
                    await anyio.sleep(0.001)
                scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(give_up)
        tg.start_soon(one, "plain", plain)
        tg.start_soon(one, "stopped", stopped)
    assert results["plain"].text == expected
    if stop and stop in solo_stopped:
        assert results["stopped"].text == solo_stopped[: solo_stopped.find(stop)]
        assert results["stopped"].finish_reason == "stop"
    assert "gave_up" not in results and worker.stats["cancelled"] == 1
    assert (await worker.complete(plain)).text == expected  # the worker goes on
    await worker.aclose()


def _router_choices(model, ids: list[int]) -> list[list[int]]:
    """Expert counts per MoE layer from each family's own router module, hooked on its output
    (the chosen indices, last of the router's outputs) in one unbatched forward over `ids`."""
    routers = [m for m in model.modules() if "router" in type(m).__name__.lower()]
    chosen: list[torch.Tensor] = []
    handles = [r.register_forward_hook(lambda _m, _a, out: chosen.append(out[-1])) for r in routers]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    experts = model.config
    n = next(
        getattr(experts, k)
        for k in ("num_local_experts", "num_experts", "n_routed_experts")
        if isinstance(getattr(experts, k, None), int)
    )
    return [torch.bincount(c.reshape(-1), minlength=n).tolist() for c in chosen]


@pytest.mark.parametrize("family", sorted(MOE))
async def test_expert_load_is_what_the_familys_router_chose(family, family_dirs):
    worker = TransformersWorker(family_dirs(family), max_wait_ms=20)
    await worker.load()
    requests = [req(p, max_tokens=8) for p in PROMPTS]
    results = await concurrently(worker, requests)
    top_k = worker._recorder.top_k
    for request, completion in zip(requests, results, strict=True):
        prompt, tokens = alone(worker, request)
        expected = _router_choices(worker._model, prompt + tokens[:-1])
        assert completion.expert_load == expected
        processed = len(prompt) + len(tokens) - 1
        assert all(sum(layer) == processed * top_k for layer in completion.expert_load)
    config = worker.config
    has_shared = family in ("qwen2_moe", "deepseek_v3")
    assert (shared_experts(config) > 0) == has_shared
    if family == "deepseek_v3":  # the first layer is dense: no routing to report for it
        assert (
            len(results[0].expert_load) == config.num_hidden_layers - config.first_k_dense_replace
        )
    await worker.aclose()
