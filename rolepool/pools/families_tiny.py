"""Tiny random-weight models of every family in the coverage matrix, built from transformers' own
config classes: for the family tests (`tests/test_families*.py`) and the family table
(`bench/families.py`). Nothing is downloaded: the tokenizer and chat template are the shipped
`dense-s1`'s, the weights are random (their output is noise; the tests compare paths, not text).

Each config keeps the family's distinguishing parts small but present: grouped-query heads,
q/k norms (Qwen3, OLMo 2), sliding and global layers (Gemma 3, gpt-oss), shared experts (Qwen2-MoE,
DeepSeek-V3), grouped routing and a dense first layer (DeepSeek-V3), multipliers (Granite).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TINY_FAMILIES", "build_tiny_family", "tiny_config"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def _common(tokens: dict[str, int]) -> dict[str, Any]:
    return dict(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        **tokens,
    )


def _dense(name: str, **extra: Any) -> Callable[[dict[str, Any]], Any]:
    def make(common: dict[str, Any]) -> Any:
        import transformers

        return getattr(transformers, name)(**{"intermediate_size": 128, **common, **extra})

    return make


def _moe(name: str, **extra: Any) -> Callable[[dict[str, Any]], Any]:
    return _dense(name, **{"num_experts_per_tok": 2, **extra})


TINY_FAMILIES: dict[str, Callable[[dict[str, Any]], Any]] = {
    # dense
    "llama": _dense("LlamaConfig"),
    "mistral": _dense("MistralConfig", sliding_window=None),
    "qwen2": _dense("Qwen2Config"),
    "qwen3": _dense("Qwen3Config", head_dim=16),
    "gemma3_text": _dense(
        "Gemma3TextConfig",
        head_dim=16,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
    ),
    "phi3": _dense("Phi3Config"),
    "granite": _dense(
        "GraniteConfig",
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        logits_scaling=2.0,
        attention_multiplier=0.25,
    ),
    "olmo2": _dense("Olmo2Config"),
    # MoE
    "mixtral": _moe("MixtralConfig", num_local_experts=4),
    "qwen2_moe": _moe(
        "Qwen2MoeConfig",
        num_experts=4,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
    ),
    "qwen3_moe": _moe("Qwen3MoeConfig", num_experts=4, moe_intermediate_size=32, head_dim=16),
    "olmoe": _moe("OlmoeConfig", num_experts=4),
    "granitemoe": _moe("GraniteMoeConfig", num_local_experts=4),
    "phimoe": _moe("PhimoeConfig", num_local_experts=4, sliding_window=None),
    "deepseek_v3": _moe(
        "DeepseekV3Config",
        n_routed_experts=8,
        n_shared_experts=1,
        moe_intermediate_size=32,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        kv_lora_rank=16,
        q_lora_rank=32,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=16,
        num_key_value_heads=4,  # latent attention: as many key heads as query heads
    ),
    "gpt_oss": _moe(
        "GptOssConfig",
        num_local_experts=4,
        head_dim=16,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
    ),
}
"""Family name (the config's `model_type`) -> a tiny config from the shared small sizes."""


def tiny_config(family: str, tokens: dict[str, int] | None = None) -> Any:
    tokens = tokens or {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
    return TINY_FAMILIES[family](_common(tokens))


def build_tiny_family(family: str, out: Path, seed: int = 0) -> Path:
    """Save a tiny random `family` model with the shipped tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rolepool.zoo import CHECKPOINTS

    out.mkdir(parents=True, exist_ok=True)
    source = CHECKPOINTS / "dense-s1"
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    config = tiny_config(
        family, {"bos_token_id": pad, "eos_token_id": tok.eos_token_id, "pad_token_id": pad}
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Lively weights: with the library's init (std 0.02) a tiny model repeats one token, which
    # would make any two decode paths agree. Norms and biases are random too (not ones and
    # zeros), so a path that skipped one would differ.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.1)
            else:
                param.normal_(0.0, 0.3)
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek: routing bias, zeros by default
                buffer.copy_(torch.randn_like(buffer))
    model.save_pretrained(out)
    return out
