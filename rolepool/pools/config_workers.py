"""The `[workers.NAME]` tables of `pool.toml`: one model per backend, keyed by `backend`.

Kept apart from the file as a whole (`config.py`, which reads, checks and builds): each backend's
keys grow with its options, and a key that does not belong to a worker's backend is an error, so
a typo is caught when the file is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

from rolepool.pools.health_checks import HealthCheck

__all__ = ["BACKENDS", "OpenAIWorkerConfig", "TransformersWorkerConfig", "WorkerConfig"]


class _WorkerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["moe", "dense"] | None = None
    """Overrides what the worker reads from the model (or cannot know, behind an HTTP server)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests the pool lets in flight on this worker at once; more wait for a slot."""
    context_length: int | None = Field(default=None, ge=1, strict=True)
    """Tokens of context: the pool sends no prompt that cannot fit. An in-process model's own
    window may be narrowed (its replies stop there too), never widened."""


class TransformersWorkerConfig(_WorkerBase):
    """An in-process model loaded from a local directory."""

    backend: Literal["transformers"]
    model: str = Field(min_length=1)
    """A model directory, relative to the pool.toml that names it, or a reference-zoo name."""
    max_batch_size: int | None = Field(default=None, ge=1)
    max_wait_ms: float | None = Field(default=None, ge=0)
    device: str | None = Field(default=None, pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    """`cpu` (default), `cuda`, `cuda:N` or `auto`; asking for CUDA where there is none fails."""
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """Default: float32 on a CPU, the saved dtype on a GPU."""
    tool_format: str | None = None
    """The tool-call format the model speaks (`rolepool.tools.formats.FORMATS`); default:
    detected from its chat template and special tokens."""
    prefix_cache_tokens: int | None = Field(default=None, ge=0)
    """Prompt tokens of KV the decoder keeps for later prompts with the same prefix (0: off);
    default 8192, but none for an MoE worker recording expert telemetry."""

    @field_validator("tool_format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        from rolepool.tools.formats import FORMATS

        if value is not None and value not in (*FORMATS, "auto"):
            known = ", ".join(FORMATS)
            raise ValueError(f"unknown tool_format {value!r}; use one of auto, {known}")
        return value

    @field_validator("model")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        """Resolve against the file's directory, so a config works from any working directory.
        A bare name with no such directory is left as is for the zoo to resolve."""
        base = (info.context or {}).get("base_dir")
        path = Path(value).expanduser()
        if path.is_absolute():
            return str(path)
        if base is None:
            return value
        candidate = Path(base) / path
        if candidate.exists() or len(path.parts) > 1 or value.startswith("."):
            return str(candidate.resolve())
        return value


_TOOL_CHOICES = ("auto", "none", "required")


class OpenAIWorkerConfig(_WorkerBase):
    """A model behind an OpenAI-compatible HTTP server (vLLM, or another rolepool serve)."""

    backend: Literal["openai"]
    url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    """The model name the server knows (what `/v1/models` lists)."""
    timeout: float | None = Field(default=None, gt=0)
    api_key_env: str | None = Field(default=None, min_length=1)
    """The environment variable holding the API key; the key itself never goes in the file."""
    # Per-server request options (docs/models.md says which server needs which).
    tool_mode: Literal["native", "text", "auto"] | None = None
    """How tools travel: the server parses calls (native), rolepool parses the text (text), or
    native until the server refuses tools without a tool parser (auto, the default)."""
    tool_choice: Any = None
    """Sent with tools: one value, or a table by role (`default` for the other roles)."""
    parallel_tool_calls: StrictBool | None = None
    structured_output: StrictBool | None = None
    """Constrain replies with tools to one call or an answer, by the server's guided decoding."""
    chat_template_kwargs: dict[str, Any] | None = None
    """Passed to the server's chat template, e.g. `{ enable_thinking = false }` for Qwen3."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """Cap on every request's tokens, sent as `max_completion_tokens`."""
    extra_body: dict[str, Any] | None = None
    """More request body fields, as the server documents them (vLLM's `top_k`)."""
    stream: StrictBool | None = None
    """Ask the server to stream every answer (time to first token on each model call)."""
    num_experts: int | None = Field(default=None, ge=1)
    """Experts per MoE layer, to size the expert load read from vLLM's routed experts."""
    health_check: HealthCheck | None = None
    """Probe the server's health while the pool runs; a worker that fails is skipped until it
    passes again. Absent: not probed (`health_checks.py`)."""

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: Any) -> str | dict[str, str] | None:
        """One setting, or a table of them by role (checked here: as a union, pydantic would
        report each member's complaint)."""
        values = list(value.values()) if isinstance(value, dict) else [value]
        if value is None or all(v in _TOOL_CHOICES for v in values):
            return value
        raise ValueError("must be auto, none or required, or a table of them by role")

    @field_validator("extra_body")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from rolepool.pools.openai_body import RESERVED_BODY_KEYS

        taken = sorted(set(value or {}) & RESERVED_BODY_KEYS)
        if taken:
            raise ValueError(f"{', '.join(taken)}: set by rolepool, not by extra_body")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, not {value!r}")
        return value


WorkerConfig = Annotated[
    TransformersWorkerConfig | OpenAIWorkerConfig, Field(discriminator="backend")
]
BACKENDS = ("transformers", "openai")
