"""The run loop, run scope and limits, the event stream and the durable event store."""

from rolepool.runtime.limits import Limits
from rolepool.runtime.loop import LoopInputs, run_agent
from rolepool.runtime.run import BodyResult, Run, RunResult, RunScope, execute, new_scope, start
from rolepool.runtime.store import EventStore, RunSummary, default_store_path
from rolepool.runtime.stream import EventStream, Subscription

__all__ = [
    "BodyResult",
    "EventStore",
    "EventStream",
    "Limits",
    "LoopInputs",
    "Run",
    "RunResult",
    "RunScope",
    "RunSummary",
    "Subscription",
    "default_store_path",
    "execute",
    "new_scope",
    "run_agent",
    "start",
]
