"""Limits that bound a run, so that no run can hang or spend without bound."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rolepool.core import LimitExceeded


class StepLimitExceeded(LimitExceeded):
    """A workflow's planner assigned more steps than `Limits.max_steps` allows."""

    limit = "max_steps"


class Limits(BaseModel):
    """Per-run bounds. Hitting one ends the run with a `LimitExceeded` error and `run.failed`.

    `max_turns` and `max_retries` are defaults for agents that do not set their own.
    """

    max_turns: int = Field(default=10, ge=1, description="model calls per agent")
    max_retries: int = Field(
        default=2,
        ge=0,
        description="consecutive turns with an unparseable or invalid call that are fed back "
        "to the model before the agent fails with ModelBehaviorError",
    )
    tool_timeout: float = Field(default=30.0, gt=0, description="seconds per tool call")
    model_timeout: float = Field(
        default=300.0, gt=0, description="seconds per model call before it is a WorkerError"
    )
    deadline: float | None = Field(default=None, gt=0, description="wall-clock seconds per run")
    max_tokens: int | None = Field(
        default=None, ge=1, description="prompt + completion tokens per run"
    )
    max_steps: int = Field(
        default=8, ge=1, description="steps (assign calls) a workflow may run in all"
    )
    max_result_chars: int = Field(
        default=20_000, ge=100, description="longer tool results are truncated with a marker"
    )
    max_parallel_tools: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="tool calls of one run running at once (all its agents together); more wait "
        "for a slot, and a call's timeout starts when it has one",
    )
