"""The model families rolepool knows, and what the in-process worker does with each: a registry.

A family is a transformers `model_type`. For each one the registry says whether the lean forward
(`rolepool.pools.lean_step`) serves it, how its experts are routed and shared, and what
`rolepool models check` and the family table (`docs/families.md`) say about it. The entries live
in one module per family group (`families_dense`, `families_moe`); this module joins them and
answers questions about a loaded model or a config.

What runs is decided at load time, from the model itself, whatever the registry says:

* `lean`: the decode engine (`rolepool.pools.decode`) with the lean forward, which checks its
  logits against the model's own forward before it is used;
* `engine`: the decode engine with the model's own forward (a family the lean forward does not
  serve, or one whose check failed);
* `generate`: shared `model.generate` calls (`rolepool.pools.generate_fallback`), for caches the
  engine cannot drive (sliding-window or hybrid attention: Gemma 3, gpt-oss; DeepSeek-V3's latent
  attention, which the registry keeps off the engine).

`announce_path` names the path a worker took and logs it once when it is not the lean one.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from rolepool.pools.families_dense import DENSE
from rolepool.pools.families_moe import MOE
from rolepool.pools.family_types import Family

__all__ = [
    "FAMILIES",
    "DecodePath",
    "Family",
    "announce_path",
    "engine_refused",
    "family_of",
    "lean_model_types",
    "shared_experts",
]

logger = logging.getLogger("rolepool.pools")

DecodePath = Literal["lean", "engine", "generate"]

FAMILIES: dict[str, Family] = {family.model_type: family for family in (*DENSE, *MOE)}
"""Every registered family by `model_type`, dense first, in the coverage matrix's order."""


def lean_model_types() -> frozenset[str]:
    """The model types the lean forward may serve (it still checks each model it is given)."""
    return frozenset(t for t, family in FAMILIES.items() if family.lean)


def engine_refused(config: Any) -> bool:
    """The registry keeps this family off the decode engine (`Family.engine`)."""
    family = family_of(config)
    return family is not None and not family.engine


def family_of(config: Any) -> Family | None:
    return FAMILIES.get(str(getattr(config, "model_type", "")))


def shared_experts(config: Any) -> int:
    """Experts every token goes through besides the routed ones (0 when none): reported apart
    from the routed expert load, which they never enter."""
    family = family_of(config)
    if family is None or family.shared_experts is None:
        return 0
    value = getattr(config, family.shared_experts, None)
    if family.shared_experts.endswith("_size"):  # Qwen2-MoE sizes its one shared expert
        return 1 if value else 0
    return value if isinstance(value, int) else 0


def announce_path(worker: str, model: Any, decoder: Any) -> DecodePath:
    """The decode path a loaded worker took (see the module docstring); logged once, at load,
    when it is not the lean one, with the reason."""
    model_type = str(getattr(model.config, "model_type", "?"))
    family = FAMILIES.get(model_type)
    known = "" if family else " (not a registered family)"
    if decoder is None:
        logger.warning(
            "worker %r: %s%s: the decode engine cannot drive this model's cache (sliding-window, "
            "hybrid or latent attention); serving it with model.generate (decode_path=generate)",
            worker,
            model_type,
            known,
        )
        return "generate"
    if getattr(decoder, "lean", None) is not None:
        return "lean"
    why = (
        "its lean forward did not match the model's own"
        if family and family.lean
        else ("the lean forward does not serve this family")
    )
    logger.info(
        "worker %r: %s%s: %s; decoding with the model's own forward (decode_path=engine)",
        worker,
        model_type,
        known,
        why,
    )
    return "engine"
