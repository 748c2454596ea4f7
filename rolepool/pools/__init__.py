"""Model workers and the pool that routes roles to them.

`TransformersWorker` is loaded on first use: importing torch and transformers takes over a
second, and code that only talks HTTP or uses test workers should not pay for it.
"""

from typing import TYPE_CHECKING, Any

from rolepool.pools.breaker import BreakerSettings, CircuitBreaker
from rolepool.pools.config import build_pool, load_pool_config
from rolepool.pools.openai_worker import OpenAIWorker
from rolepool.pools.policy import Choice, Route, RoutingPolicy
from rolepool.pools.pool import Pool
from rolepool.pools.testing import FunctionWorker, ScriptedWorker
from rolepool.pools.worker import Worker

if TYPE_CHECKING:
    from rolepool.pools.transformers_worker import TransformersWorker


def __getattr__(name: str) -> Any:
    if name == "TransformersWorker":
        from rolepool.pools.transformers_worker import TransformersWorker

        return TransformersWorker
    raise AttributeError(f"module 'rolepool.pools' has no attribute {name!r}")


__all__ = [
    "BreakerSettings",
    "Choice",
    "CircuitBreaker",
    "FunctionWorker",
    "OpenAIWorker",
    "Pool",
    "Route",
    "RoutingPolicy",
    "ScriptedWorker",
    "TransformersWorker",
    "Worker",
    "build_pool",
    "load_pool_config",
]
