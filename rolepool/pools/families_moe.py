"""Mixture-of-experts families (`rolepool.pools.families`' registry entries).

Expert telemetry reads the routing each family's own router chose (the experts module's
`top_k_index`, or gpt-oss's `router_indices`), so grouped routing (DeepSeek-V3) and bias-corrected
scores count what the model computed. Shared experts run for every token and are not in the routed
load; `families.shared_experts` reports them apart.
"""

from __future__ import annotations

from rolepool.pools.family_types import Family

_SOFTMAX_TOPK = "softmax, top-k"

MOE = (
    Family("mixtral", "Mixtral", "moe", lean=True, routing=_SOFTMAX_TOPK),
    Family(
        "qwen2_moe",
        "Qwen2-MoE",
        "moe",
        lean=True,
        shared_experts="shared_expert_intermediate_size",
        routing=_SOFTMAX_TOPK + ", plus one gated shared expert",
    ),
    Family("qwen3_moe", "Qwen3-MoE", "moe", lean=True, routing=_SOFTMAX_TOPK),
    Family("olmoe", "OLMoE", "moe", lean=True, routing=_SOFTMAX_TOPK),
    Family("granitemoe", "GraniteMoE", "moe", lean=True, routing=_SOFTMAX_TOPK),
    Family(
        "phimoe",
        "PhiMoE",
        "moe",
        routing="sparsemixer top-2",
        note="LayerNorm, not RMSNorm: model's own forward",
    ),
    Family(
        "deepseek_v3",
        "DeepSeek-V3",
        "moe",
        shared_experts="n_shared_experts",
        engine=False,
        routing="sigmoid, bias-corrected, top-k within the best groups",
        note="multi-head latent attention (keys and values of different widths): served with "
        "model.generate; first layers dense",
    ),
    Family(
        "gpt_oss",
        "gpt-oss",
        "moe",
        routing="top-k logits, softmax over them",
        note="sliding-window and global layers, attention sinks: served with model.generate",
    ),
)
