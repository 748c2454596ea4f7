"""Value types shared by every layer. Imports nothing else of rolepool."""

from rolepool.core.context import RunContext
from rolepool.core.errors import (
    ConfigError,
    DeadlineExceeded,
    EventsLost,
    FailedAttempt,
    LimitExceeded,
    MaxTurnsExceeded,
    ModelBehaviorError,
    RequestRefused,
    RolepoolError,
    RunCancelled,
    TokenBudgetExceeded,
    ToolError,
    UserError,
    WorkerError,
)
from rolepool.core.events import Event, EventBase, event_from_json, new_run_id, new_span_id
from rolepool.core.messages import Message, ToolCall, ToolResult
from rolepool.core.requests import (
    Architecture,
    Completion,
    Request,
    Sampling,
    ToolSpec,
    Usage,
    WorkerInfo,
)

__all__ = [
    "Architecture",
    "Completion",
    "ConfigError",
    "DeadlineExceeded",
    "Event",
    "EventBase",
    "EventsLost",
    "FailedAttempt",
    "LimitExceeded",
    "MaxTurnsExceeded",
    "Message",
    "ModelBehaviorError",
    "Request",
    "RolepoolError",
    "RunCancelled",
    "RunContext",
    "Sampling",
    "TokenBudgetExceeded",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "UserError",
    "WorkerError",
    "RequestRefused",
    "WorkerInfo",
    "event_from_json",
    "new_run_id",
    "new_span_id",
]
