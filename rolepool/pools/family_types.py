"""The record a family registry entry is (`rolepool.pools.families`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Family"]


@dataclass(frozen=True)
class Family:
    """One model family: a transformers `model_type` and what rolepool does with it."""

    model_type: str
    label: str
    """How people call it: "Qwen2-MoE", "DeepSeek-V3"."""
    group: Literal["dense", "moe"]
    lean: bool = False
    """The lean forward serves it (checked again against the model at load)."""
    engine: bool = True
    """The decode engine may drive it with the model's own forward, when its cache is plain full
    attention; False sends it to `generate` (a cache layout the engine's buffers do not take)."""
    shared_experts: str | None = None
    """The config key counting its shared experts (every token uses them); a key ending in
    `_size` sizes a single one."""
    routing: str = ""
    """How its router picks experts, in words, for the docs and `models check`."""
    note: str = ""
