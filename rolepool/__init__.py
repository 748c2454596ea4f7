"""rolepool: an async runtime for multi-agent work on pools of MoE and dense models.

The public SDK is what this module exports; everything else may change between releases.
"""

from rolepool.agents import Agent, Workflow, WorkflowResult
from rolepool.core import (
    Completion,
    ConfigError,
    Event,
    LimitExceeded,
    Message,
    ModelBehaviorError,
    QuotaExceeded,
    Request,
    RolepoolError,
    RunContext,
    ToolCall,
    ToolError,
    UserError,
    WorkerError,
)
from rolepool.core.version import VERSION
from rolepool.pools import (
    FunctionWorker,
    OpenAIWorker,
    Pool,
    RoutingPolicy,
    ScriptedWorker,
    Worker,
    build_pool,
)
from rolepool.runtime import EventStore, Limits, Run, RunResult
from rolepool.runtime.approval import ApprovalRequest, Decision
from rolepool.tools import Tool, tool
from rolepool.tools.mcp import MCPServer

__version__ = VERSION


def __getattr__(name: str) -> object:
    if name == "TransformersWorker":  # imports torch: only when asked for
        from rolepool.pools.transformers_worker import TransformersWorker

        return TransformersWorker
    raise AttributeError(f"module 'rolepool' has no attribute {name!r}")


__all__ = [
    "Agent",
    "ApprovalRequest",
    "Decision",
    "Completion",
    "ConfigError",
    "Event",
    "EventStore",
    "FunctionWorker",
    "LimitExceeded",
    "Limits",
    "MCPServer",
    "Message",
    "OpenAIWorker",
    "Pool",
    "ModelBehaviorError",
    "QuotaExceeded",
    "Request",
    "RolepoolError",
    "RoutingPolicy",
    "Run",
    "RunContext",
    "RunResult",
    "ScriptedWorker",
    "Tool",
    "ToolCall",
    "ToolError",
    "TransformersWorker",
    "UserError",
    "Worker",
    "WorkerError",
    "Workflow",
    "WorkflowResult",
    "build_pool",
    "tool",
]
