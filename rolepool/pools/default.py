"""The built-in default pool: the shipped reference models, so everything runs offline with no
configuration. One MoE and one dense model; every role goes to the MoE model first and falls back
to the dense one (the routing most users start from, and the one the audit trail makes visible).
"""

from __future__ import annotations

from rolepool.core import ConfigError
from rolepool.pools.config import PoolConfig, build_pool, parse_pool_config
from rolepool.pools.pool import Pool

DEFAULT_POLICY_VERSION = "builtin-1"


def default_pool_config() -> PoolConfig:
    """The default pool's config: the first shipped `moe-*` and `dense-*` reference models."""
    from rolepool.zoo import list_checkpoints

    names = [c["name"] for c in list_checkpoints()]
    moe = next((n for n in names if n.startswith("moe-")), None)
    dense = next((n for n in names if n.startswith("dense-")), None)
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


def default_pool() -> Pool:
    """Build the default pool (models load lazily, on their first request)."""
    return build_pool(default_pool_config())
