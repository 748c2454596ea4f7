"""Model workers and the pool that routes roles to them."""

from rolepool.pools.testing import FunctionWorker, ScriptedWorker
from rolepool.pools.worker import Worker

__all__ = ["FunctionWorker", "ScriptedWorker", "Worker"]
