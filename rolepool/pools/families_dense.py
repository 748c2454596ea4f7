"""Dense families (`rolepool.pools.families`' registry entries)."""

from __future__ import annotations

from rolepool.pools.family_types import Family

DENSE = (
    Family("llama", "Llama", "dense", lean=True),
    Family("mistral", "Mistral", "dense", lean=True, note="a sliding window makes it `generate`"),
    Family("qwen2", "Qwen2", "dense", lean=True),
    Family("qwen3", "Qwen3", "dense", lean=True, note="per-head q/k norms"),
    Family(
        "gemma3_text",
        "Gemma 3 (text)",
        "dense",
        note="sliding-window and global layers: served with model.generate",
    ),
    Family("phi3", "Phi-3", "dense", lean=True, note="fused qkv and gate/up projections"),
    Family("granite", "Granite", "dense", lean=True, note="embedding/residual/logits multipliers"),
    Family("olmo2", "OLMo 2", "dense", note="norms after attention and MLP: model's own forward"),
)
