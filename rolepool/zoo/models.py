"""The two reference architectures, matched on active parameters per token: a dense Llama with a
SwiGLU FFN of width 512, and a Mixtral with 8 experts of width 256, 2 active per token."""

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
        return MixtralConfig(
            num_local_experts=8,
            num_experts_per_tok=2,
            router_aux_loss_coef=0.01,
            router_jitter_noise=0.0,
            **common,
        )
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
