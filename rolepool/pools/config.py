"""`pool.toml`: the workers of a pool and the policy that routes roles to them.

The file is validated with pydantic and unknown keys are errors, so a typo is caught when the file
is loaded, not when a request first misses a worker. Every problem becomes one `ConfigError` whose
text names the file, the key path in TOML terms (`policy.routes.coder.choices[0].weight`) and what
is wrong. The format is documented in docs/pool-config.md.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from rolepool.core import ConfigError, RolepoolError, UserError
from rolepool.pools.breaker import BreakerSettings
from rolepool.pools.policy import RoutingPolicy
from rolepool.pools.pool_checks import check_weights

if typing.TYPE_CHECKING:
    from rolepool.pools.pool import Pool
    from rolepool.pools.worker import Worker

_WORKER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class _WorkerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["moe", "dense"] | None = None
    """Overrides what the worker reads from the model (or cannot know, behind an HTTP server)."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests the pool lets in flight on this worker at once; more wait for a slot."""


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
_BACKENDS = ("transformers", "openai")


class PoolConfig(BaseModel):
    """The whole of `pool.toml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: dict[str, WorkerConfig] = Field(min_length=1)
    policy: RoutingPolicy
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    request_timeout: float | None = Field(default=None, gt=0)
    """Seconds one attempt on one worker may take (including a wait for a free slot)."""
    seed: int | None = None
    """Seeds the weighted split, for reproducible canary traffic in tests and evals."""
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("workers")
    @classmethod
    def _worker_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _WORKER_NAME.match(name):
                raise ValueError(f"worker name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        return value

    @property
    def path(self) -> Path | None:
        """The file this config was loaded from, if any."""
        return self._path


def load_pool_config(path: str | Path) -> PoolConfig:
    """Read and validate a pool.toml; every problem is a `ConfigError` naming file and key."""
    path = Path(path)
    config = parse_pool_config(_read_toml(path), source=str(path), base_dir=path.parent)
    config._path = path
    return config


def parse_pool_config(
    data: dict[str, Any], *, source: str = "<pool config>", base_dir: Path | None = None
) -> PoolConfig:
    """Validate an already-parsed config (a dict in the shape of pool.toml). `source` names it
    in errors; relative model paths resolve against `base_dir`."""
    try:
        config = PoolConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _config_error(source, exc) from None
    check_weights(config.policy, prefix=f"{source}: policy")
    for where, name in config.policy.unknown_workers(config.workers):
        defined = ", ".join(config.workers)
        raise ConfigError(
            f"no worker named {name!r} is defined under [workers] (defined: {defined})",
            where=f"{source}: policy.{where}",
        )
    return config


def build_pool(config: PoolConfig | str | Path) -> Pool:
    """Construct the workers and the pool a config describes. Loading a model can take a while:
    this is the slow step, `load_pool_config` is the cheap check."""
    from rolepool.pools.pool import Pool

    if not isinstance(config, PoolConfig):
        config = load_pool_config(config)
    source = str(config.path) if config.path else "<pool config>"
    workers: dict[str, Worker] = {}
    for name, spec in config.workers.items():
        try:
            workers[name] = _build_worker(name, spec)
        except UserError as exc:  # e.g. no such model directory: say which file and worker
            raise ConfigError(str(exc), where=f"{source}: workers.{name}") from None
        except RolepoolError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"could not start worker: {type(exc).__name__}: {exc}",
                where=f"{source}: workers.{name}",
            ) from exc
    limits = {n: s.max_concurrency for n, s in config.workers.items() if s.max_concurrency}
    return Pool(
        workers,
        config.policy,
        max_concurrency=limits or None,
        request_timeout=config.request_timeout,
        breaker=config.breaker,
        seed=config.seed,
    )


def _build_worker(name: str, spec: TransformersWorkerConfig | OpenAIWorkerConfig) -> Worker:
    # Imported here: the backends pull in torch or httpx, and a config check needs neither.
    if isinstance(spec, TransformersWorkerConfig):
        from rolepool.pools.transformers_worker import TransformersWorker

        options = _set(
            architecture=spec.architecture,
            max_batch_size=spec.max_batch_size,
            max_wait_ms=spec.max_wait_ms,
            device=spec.device,
            dtype=spec.dtype,
            tool_format=spec.tool_format,
            prefix_cache_tokens=spec.prefix_cache_tokens,
        )
        return TransformersWorker(spec.model, name=name, **options)
    from rolepool.pools.openai_worker import OpenAIWorker

    options = _set(
        architecture=spec.architecture,
        timeout=spec.timeout,
        api_key_env=spec.api_key_env,
        tool_mode=spec.tool_mode,
        stream=spec.stream,
        num_experts=spec.num_experts,
        options=_request_options(spec),
    )
    return OpenAIWorker(spec.url, spec.model, name=name, **options)


_REQUEST_OPTIONS = (
    "tool_choice",
    "parallel_tool_calls",
    "structured_output",
    "chat_template_kwargs",
    "max_completion_tokens",
    "extra_body",
)


def _request_options(spec: OpenAIWorkerConfig) -> Any:
    """The worker's `RequestOptions`, or None when the file sets none of them."""
    from rolepool.pools.openai_body import RequestOptions

    if all(getattr(spec, key) is None for key in _REQUEST_OPTIONS):
        return None

    by_role = dict(spec.tool_choice) if isinstance(spec.tool_choice, dict) else {}
    default = by_role.pop("default", "auto") if by_role else spec.tool_choice or "auto"
    given = {key: getattr(spec, key) for key in _REQUEST_OPTIONS[1:]}
    return RequestOptions(tool_choice=default, role_tool_choice=by_role, **_set(**given))


def _set(**options: Any) -> dict[str, Any]:
    """Only the options the file sets, so each backend keeps its own defaults."""
    return {k: v for k, v in options.items() if v is not None}


# -- error reporting ---------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", where=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", where=str(path)) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", where=str(path)) from None
    except RecursionError:  # tomllib recurses per nesting level: `x = [[[[...]]]]` exhausts it
        message = "invalid TOML: arrays or tables nested too deeply"
        raise ConfigError(message, where=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if match:
            problem = message[: match.start()].strip()
            where = f"{path}, line {match[1]}, column {match[2]}"
        else:
            problem, where = message, str(path)
        raise ConfigError(f"invalid TOML: {problem}", where=where) from None


_MAX_PROBLEMS_SHOWN = 20


def _config_error(path: str, exc: ValidationError) -> ConfigError:
    problems = [_describe(error) for error in exc.errors()]
    if len(problems) == 1:
        key, problem = problems[0]
        return ConfigError(problem, where=f"{path}: {key}" if key else path)
    shown = problems[:_MAX_PROBLEMS_SHOWN]
    lines = "".join(f"\n  {key or '(top level)'}: {problem}" for key, problem in shown)
    if len(problems) > len(shown):  # a generated file can have thousands: show the first ones
        lines += f"\n  ... and {len(problems) - len(shown)} more"
    return ConfigError(f"{len(problems)} problems:{lines}", where=path)


def _describe(error: Any) -> tuple[str, str]:
    """A pydantic error as (TOML key path, problem in words)."""
    loc = list(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return _key_path(_strip_tags(loc)), _unknown_key(loc)
    loc = _strip_tags(loc)
    if kind == "missing":
        return _key_path(loc), "missing required key"
    if kind == "union_tag_invalid":
        tag = error["ctx"]["tag"]
        return _key_path([*loc, "backend"]), f"unknown backend {tag!r}; use {_BACKENDS_TEXT}"
    if kind == "union_tag_not_found":
        return _key_path([*loc, "backend"]), f"missing required key; use {_BACKENDS_TEXT}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return _key_path(loc), message


_BACKENDS_TEXT = " or ".join(repr(b) for b in _BACKENDS)


def _strip_tags(loc: list[Any]) -> list[Any]:
    """Drop the discriminator tag pydantic puts in the location of a worker's fields
    (`workers.a.openai.url` -> `workers.a.url`): it is not a key of the file."""
    if len(loc) >= 3 and loc[0] == "workers" and loc[2] in _BACKENDS:
        return loc[:2] + loc[3:]
    return loc


def _key_path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.match(str(part)) else f'"{part}"'
            out += f".{key}" if out else key
    return out


def _unknown_key(loc: list[Any]) -> str:
    """'unknown key', with a suggestion when the key looks like a misspelt allowed one."""
    allowed = _allowed_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = f" (allowed: {', '.join(allowed)})" if allowed else ""
    return f"unknown key{hint}{listing}"


def _allowed_keys(loc: list[Any]) -> list[str]:
    """The keys the model at `loc` accepts: walk the annotations along the (tagged) location."""
    node: Any = PoolConfig
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            node = node.model_fields[part].annotation if part in node.model_fields else None
        elif typing.get_origin(node) in (dict, list):
            node = typing.get_args(node)[-1]
        elif isinstance(part, str) and part in _BACKENDS:
            node = TransformersWorkerConfig if part == "transformers" else OpenAIWorkerConfig
        else:
            return []
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _unwrap(node: Any) -> Any:
    """Strip `Annotated` and `X | None`, so the walk sees the model or container inside."""
    while True:
        if typing.get_origin(node) is Annotated:
            node = typing.get_args(node)[0]
            continue
        origin = typing.get_origin(node)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(node) if a is not type(None)]
            if len(args) == 1:
                node = args[0]
                continue
        return node
