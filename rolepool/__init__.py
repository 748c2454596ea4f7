"""rolepool: an async runtime for multi-agent work on pools of MoE and dense models.

The public SDK is what this module exports; everything else may change between releases.
"""

from rolepool.agents import Agent
from rolepool.core import (
    Completion,
    ConfigError,
    Event,
    LimitExceeded,
    Message,
    ModelBehaviorError,
    Request,
    RolepoolError,
    RunContext,
    ToolCall,
    ToolError,
    UserError,
    WorkerError,
)
from rolepool.pools import FunctionWorker, ScriptedWorker, Worker
from rolepool.runtime import EventStore, Limits, Run, RunResult
from rolepool.tools import Tool, tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Completion",
    "ConfigError",
    "Event",
    "EventStore",
    "FunctionWorker",
    "LimitExceeded",
    "Limits",
    "Message",
    "ModelBehaviorError",
    "Request",
    "RolepoolError",
    "Run",
    "RunContext",
    "RunResult",
    "ScriptedWorker",
    "Tool",
    "ToolCall",
    "ToolError",
    "UserError",
    "Worker",
    "WorkerError",
    "tool",
]
