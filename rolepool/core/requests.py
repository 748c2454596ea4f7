"""What the run loop asks a worker for, and what a worker answers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rolepool.core.messages import Message, ToolCall

Architecture = Literal["moe", "dense", "unknown"]


GREEDY_BELOW = 1e-5
"""Temperatures under this decode greedily (stored as 0), as vLLM does: dividing logits by a
temperature near 0 overflows to inf, and sampling from inf is an error, not a sharper draw."""
SEED_RANGE = (-(2**63), 2**64 - 1)
"""The seeds a torch generator takes (a signed or unsigned 64-bit integer)."""
MAX_STOP_STRINGS = 64


class Sampling(BaseModel):
    """Decoding settings. `temperature == 0` means greedy.

    Every field is checked here to what a worker can take, so that a client's value can never
    make a worker fail (and be charged for it): finite numbers, seeds a generator accepts,
    non-empty stop strings."""

    model_config = ConfigDict(allow_inf_nan=False)

    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1)
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=MAX_STOP_STRINGS
    )

    @field_validator("temperature")
    @classmethod
    def _greedy_near_zero(cls, value: float) -> float:
        return 0.0 if value < GREEDY_BELOW else value


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


Priority = Literal["interactive", "batch"]
"""Priority classes: interactive work (an agent waiting on a reply) before batch work (evals)."""

DecodingMode = Literal["free", "auto", "required", "named", "json_schema", "json_object"]


class Decoding(BaseModel):
    """How a worker may constrain what the model writes (schema-constrained decoding).

    - `free`: nothing constrained (the default);
    - `auto`: free text until the model opens a tool call in its own format, then the call is
      held to one of the offered tools and its arguments to that tool's schema;
    - `required`: at least one call to an offered tool; `named`: exactly the tool `tool`;
    - `json_schema`: the reply is JSON valid against `json_schema`; `json_object`: any JSON
      object (OpenAI's `response_format`).
    A worker that cannot honour a mode other than `free` refuses the request (RequestRefused)
    rather than ignoring it."""

    model_config = ConfigDict(frozen=True)

    mode: DecodingMode = "free"
    tool: str | None = None
    """The tool a `named` reply must call."""
    json_schema: dict[str, Any] | None = None
    """The schema a `json_schema` reply must match."""

    @model_validator(mode="after")
    def _fields_match_mode(self) -> Decoding:
        if (self.mode == "named") != (self.tool is not None):
            raise ValueError("a tool name is given with mode 'named', and only then")
        if (self.mode == "json_schema") != (self.json_schema is not None):
            raise ValueError("a schema is given with mode 'json_schema', and only then")
        return self


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
    decoding: Decoding = Field(default_factory=Decoding)
    """What the worker may constrain (see `Decoding`); free by default."""
    worker: str | None = None
    """Serve from this worker of the pool alone (by its name in the pool), as when an HTTP
    client names a model; None lets the routing policy choose."""
    tenant: str | None = None
    """Who is asking (a tenant of `rolepool serve`'s keys file, or the SDK's `tenant=`): the
    quotas a pool enforces and the label its events and metrics carry. None: no tenant."""
    priority: Priority = "interactive"
    """The tenant's priority class, carried for the scheduler that admits waiting requests."""


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
    unreadable: str | None = None
    """Why the worker could not read the model's output (a reply nested past the JSON parser's
    stack, say), or None. Such a reply is bad model output, not a worker fault: the run loop
    tells the model, as it does for a reply its own parser cannot read."""
    reasoning: str | None = None
    """The model's reasoning text where the server returned it apart from the reply (vLLM's
    `reasoning`/`reasoning_content`, or a leading `<think>` block); never parsed for calls."""
    response_id: str | None = None
    """The id the serving API gave this answer (`chatcmpl-...`), to find it in its logs."""
    time_to_first_token: float | None = None
    """Seconds from the request to the first streamed token; None when not streamed."""
    cached_prompt_tokens: int | None = None
    """Prompt tokens the server read from its prefix cache (OpenAI's
    `usage.prompt_tokens_details.cached_tokens`); None where the server did not say."""


class WorkerInfo(BaseModel):
    """What a worker serves: enough to audit which model answered."""

    name: str
    model: str
    architecture: Architecture = "unknown"
    total_params: int | None = None
    active_params: int | None = None
    version: str | None = None
