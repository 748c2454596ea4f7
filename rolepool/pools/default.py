"""The built-in default pool: the shipped reference models, so everything runs offline with no
configuration. One MoE and one dense model; every role goes to the MoE model first and falls back
to the dense one (the routing most users start from, and the one the audit trail makes visible).
Of each architecture's shipped seeds, the pool takes the one whose model card scores best on
exact calls with held-out values: seeds of one recipe differ a lot at this size, and the default
path should run the better one.
"""

from __future__ import annotations

from rolepool.core import ConfigError
from rolepool.pools.config import PoolConfig, build_pool, parse_pool_config
from rolepool.pools.pool import Pool

DEFAULT_POLICY_VERSION = "builtin-1"


def default_pool_config() -> PoolConfig:
    """The default pool's config: the best-scoring shipped MoE and dense reference models."""
    from rolepool.zoo import list_checkpoints

    found = list_checkpoints()
    names = [c["name"] for c in found]
    moe, dense = _best(found, "moe"), _best(found, "dense")
    if moe is None or dense is None:
        raise ConfigError(
            f"the default pool needs a shipped MoE and a dense reference model, found {names}; "
            "pass a pool file (--pool pool.toml) or model directories (--model DIR)",
            where="default pool",
        )
    data = {
        "workers": {
            "moe": {"backend": "transformers", "model": f"zoo:{moe}"},
            "dense": {"backend": "transformers", "model": f"zoo:{dense}"},
        },
        "policy": {
            "version": DEFAULT_POLICY_VERSION,
            "default": {"choices": [{"worker": "moe"}], "fallbacks": ["dense"]},
        },
    }
    return parse_pool_config(data, source="the built-in default pool")


def _best(checkpoints: list[dict], arch: str) -> str | None:
    """The `arch` checkpoint with the highest unseen-values exact-call rate on its card (ties and
    unscored cards: name order)."""

    def score(c: dict) -> float:
        value = c["card"].get("scores", {}).get("unseen_values", {}).get("exact_call")
        return -1.0 if value is None else float(value)

    mine = sorted(
        (c for c in checkpoints if c["name"].startswith(f"{arch}-")), key=lambda c: c["name"]
    )
    return max(mine, key=score)["name"] if mine else None


def default_pool() -> Pool:
    """Build the default pool (models load lazily, on their first request)."""
    return build_pool(default_pool_config())
