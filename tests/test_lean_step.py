"""The lean decode step computes what the model's own forward computes, or declines."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import Cache

from rolepool.pools.kv_buffer import KVBuffer
from rolepool.pools.lean_step import LeanStep
from tests.tiny_models import build_tiny_model


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=["dense", "moe"])
def model(request, tmp_path_factory):
    return _load(build_tiny_model(tmp_path_factory.mktemp(request.param), request.param, seed=3))


def _steps(
    model, lean: LeanStep | None, prompts: list[list[int]], steps: int
) -> list[torch.Tensor]:
    """Prefill left-padded `prompts`, then greedy-decode `steps` tokens, with either the lean
    forward or the model's own; the logits of the prefill and of every step."""
    width = max(map(len, prompts))
    pad = torch.tensor([width - len(p) for p in prompts])
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, int(pad[i]) :] = torch.tensor(p)
    mask = (torch.arange(width)[None, :] >= pad[:, None]).long()
    layers = [KVBuffer() for _ in model.model.layers]
    with torch.inference_mode():
        if lean is not None:
            logits = lean.prefill(ids, pad, layers)
        else:
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                cache=Cache(layers=layers),
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
        out = [logits.float()]
        for _ in range(steps):
            token = logits.argmax(-1)
            positions = (layers[0].width - pad)[:, None]
            if lean is not None:
                logits = lean(token, positions, pad, layers)
            else:
                mask = (torch.arange(layers[0].width + 1)[None, :] >= pad[:, None]).long()
                logits = model(
                    input_ids=token[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    cache=Cache(layers=layers),
                    use_cache=True,
                    logits_to_keep=1,
                ).logits[:, -1]
            out.append(logits.float())
    return out


@pytest.mark.slow  # loads a tiny model
def test_lean_prefill_and_steps_match_the_models_forward_on_a_padded_batch(model):
    lean = LeanStep.build(model)
    assert lean is not None
    _assert_lean_matches(
        model, lean, [[5, 9, 17, 3, 40, 41, 7], [8, 8, 2], [30, 31, 32, 33, 34]], 12
    )


@pytest.mark.slow  # loads a tiny model
def test_fusing_leaves_the_models_own_forward_and_memory_unchanged(model):
    ids = torch.tensor([[5, 9, 17, 3, 40]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    LeanStep.build(model)
    attn = model.model.layers[0].self_attn
    with torch.inference_mode():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before)
    # q, k and v are views of one fused tensor, not copies.
    assert attn.q_proj.weight.untyped_storage().data_ptr() == (
        attn.v_proj.weight.untyped_storage().data_ptr()
    )


def _llama(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(LlamaConfig(**(config | overrides))).eval()


def _assert_lean_matches(model, lean: LeanStep, prompts: list[list[int]], steps: int) -> None:
    full = _steps(model, None, prompts, steps)
    fast = _steps(model, lean, prompts, steps)
    for a, b in zip(full, fast, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_grouped_query_heads_and_attention_biases():
    model = _llama(
        hidden_size=48,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=64,
        attention_bias=True,
        max_position_embeddings=128,
    )
    lean = LeanStep.build(model)
    assert lean is not None
    _assert_lean_matches(model, lean, [[1, 2, 3, 4], [9, 8]], 6)


@pytest.mark.slow  # loads a tiny model
def test_a_model_whose_step_differs_is_declined(tmp_path):
    """A variant the lean step does not model (here: a different attention scale) is caught by
    the check at build time, so the engine keeps the model's own forward."""
    model = _load(build_tiny_model(tmp_path, "dense"))
    for layer in model.model.layers:
        layer.self_attn.scaling = 0.9
    assert LeanStep.build(model) is None


def test_unknown_model_types_are_declined():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).eval()
    assert LeanStep.build(model) is None


def test_rotary_angles_past_the_first_table_and_position_dependent_rope_types():
    # Positions beyond 256 (the least table) are tabled too; a "dynamic" rope, whose angles
    # depend on the sequence length, is computed per step instead of tabled.
    prompts = [list(range(1, 60)) * 5, [3, 4, 5]]
    for model, tabled in (
        (_llama(), True),
        (_llama(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}), False),
    ):
        lean = LeanStep.build(model)
        assert lean is not None and lean.static_rope is tabled
        _assert_lean_matches(model, lean, prompts, 4)
        assert (lean._cos is not None and lean._cos.shape[0] > 300) is tabled
