"""What the run loop asks a worker for, and what a worker answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from rolepool.core.messages import Message, ToolCall

Architecture = Literal["moe", "dense", "unknown"]


class Sampling(BaseModel):
    """Decoding settings. `temperature == 0` means greedy."""

    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class ToolSpec(BaseModel):
    """A tool as the model sees it: name, description and the JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class Request(BaseModel):
    """One completion request from an agent's run loop to a worker."""

    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    sampling: Sampling = Field(default_factory=Sampling)
    role: str | None = None
    run_id: str | None = None
    agent: str | None = None
    span_id: str | None = None
    """The model-call span this request belongs to, so pool events nest under it."""


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Completion(BaseModel):
    """A worker's answer. `tool_calls` is filled by workers whose server parsed the calls already
    (OpenAI-compatible servers); otherwise the run loop parses `text`.

    `expert_load[layer][expert]` counts the tokens each expert processed for this request (MoE
    workers only). `policy_version` is set by the pool that routed the request (the audit trail).
    """

    text: str = ""
    tool_calls: list[ToolCall] | None = None
    usage: Usage = Field(default_factory=Usage)
    worker: str = ""
    model: str = ""
    architecture: Architecture = "unknown"
    latency: float = 0.0
    expert_load: list[list[int]] | None = None
    policy_version: str | None = None
    finish_reason: str | None = None


class WorkerInfo(BaseModel):
    """What a worker serves: enough to audit which model answered."""

    name: str
    model: str
    architecture: Architecture = "unknown"
    total_params: int | None = None
    active_params: int | None = None
    version: str | None = None
