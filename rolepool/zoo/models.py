"""The two reference architectures, matched on active parameters per token: a dense Llama with a
SwiGLU FFN of width 512, and a Mixtral with 8 experts of width 256, 2 active per token; and
`upcycle`, which starts such a MoE from a trained dense model."""

from __future__ import annotations

from typing import Any

ARCHS = ("dense", "moe")
SHAPE: dict[str, Any] = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    attention_dropout=0.0,
)


def make_config(arch: str, tokenizer: Any, **overrides: Any) -> Any:
    """A config for `arch`; `overrides` set other config fields (the recipe's
    `initializer_range`; tests shrink the model, e.g. `hidden_size=32`)."""
    from transformers import LlamaConfig, MixtralConfig

    common = {
        **SHAPE,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
        **overrides,
    }
    if arch == "dense":
        common.setdefault("intermediate_size", 512)
        return LlamaConfig(**common)
    if arch == "moe":
        common.setdefault("intermediate_size", 256)
        moe = dict(
            num_local_experts=8,
            num_experts_per_tok=2,
            router_aux_loss_coef=0.01,
            router_jitter_noise=0.0,
        )
        return MixtralConfig(**{**moe, **common})  # overrides win, MoE settings included
    raise ValueError(f"arch must be one of {ARCHS}, not {arch!r}")


def build_model(config: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config)


def param_counts(model: Any) -> dict[str, int]:
    """Total parameters, and those one token passes through (experts count `top_k / n` times)."""
    total = sum(p.numel() for p in model.parameters())
    config = model.config
    n_experts = getattr(config, "num_local_experts", None)
    if not n_experts:
        return {"total": total, "active": total}
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - expert + expert * config.num_experts_per_tok // n_experts
    return {"total": total, "active": active}


def architecture(model_or_config: Any) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return "moe" if getattr(config, "num_local_experts", None) else "dense"


def upcycle(dense: Any, config: Any) -> Any:
    """A MoE of `config` computing what the trained `dense` model computes (sparse upcycling).

    Embeddings, attention and norms are copied. Each layer's FFN of width 2w is split in two
    halves of width w: experts 0..n/2-1 get the first half, the others the second, their output
    doubled. Router rows come in pairs (expert i and i + n/2 share a random row), so top-2 picks
    one expert of each half with weight 1/2 each: the sum of the halves, the dense FFN. Training
    then parts the pairs (their outputs, and so their router gradients, differ) and the copies
    of a half (they get different tokens)."""
    import copy

    import torch

    n, k = config.num_local_experts, config.num_experts_per_tok
    width = dense.config.intermediate_size
    if k != 2 or n % 2 or width != 2 * config.intermediate_size:
        raise ValueError(
            "upcycling needs top-2 routing over an even number of experts, each half as wide as "
            f"the dense FFN (got top-{k} of {n}, widths {config.intermediate_size} and {width})"
        )
    # Attention must see the positions as the dense model did (Mixtral's default rotary base
    # is 1e6, Llama's 1e4).
    config = copy.deepcopy(config)
    config.rope_parameters = dict(dense.config.rope_parameters)
    moe = build_model(config)
    ffn = {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}
    state = dense.state_dict()
    loose = [n for n in state if ".mlp." in n and n.split(".mlp.")[1] not in ffn]
    if loose:
        raise ValueError(f"cannot upcycle weights the MoE has no place for: {', '.join(loose)}")
    # Everything but the FFNs has the same name and shape in both models.
    keys = moe.load_state_dict({n: p for n, p in state.items() if ".mlp." not in n}, strict=False)
    dropped = keys.unexpected_keys + [n for n in keys.missing_keys if ".mlp." not in n]
    if dropped:
        raise ValueError(f"the dense and MoE models differ beyond the FFN: {', '.join(dropped)}")
    half = config.intermediate_size
    with torch.no_grad():
        for src, dst in zip(dense.model.layers, moe.model.layers, strict=True):
            mlp, experts, router = src.mlp, dst.mlp.experts, dst.mlp.gate
            for e in range(n):
                part = slice(0, half) if e < n // 2 else slice(half, width)
                experts.gate_up_proj[e] = torch.cat(
                    [mlp.gate_proj.weight[part], mlp.up_proj.weight[part]]
                )
                experts.down_proj[e] = 2 * mlp.down_proj.weight[:, part]
            router.weight[n // 2 :] = router.weight[: n // 2]
    return moe
