"""`pool.toml`: the workers of a pool and the policy that routes roles to them.

The file is validated with pydantic and unknown keys are errors, so a typo is caught when the file
is loaded, not when a request first misses a worker. Every problem becomes one `ConfigError` whose
text names the file, the key path in TOML terms (`policy.routes.coder.choices[0].weight`) and what
is wrong. The format is documented in docs/pool-config.md; the `[workers.NAME]` tables are
modelled in `config_workers.py`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from rolepool.core import ConfigError, RolepoolError, UserError
from rolepool.pools.admission import TenantWeight
from rolepool.pools.breaker import BreakerSettings
from rolepool.pools.config_workers import (
    BACKENDS,
    OpenAIWorkerConfig,
    TransformersWorkerConfig,
    WorkerConfig,
)
from rolepool.pools.policy import RoutingPolicy
from rolepool.pools.pool_checks import check_weights

if typing.TYPE_CHECKING:
    from rolepool.pools.pool import Pool
    from rolepool.pools.worker import Worker

_WORKER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

__all__ = [
    "OpenAIWorkerConfig",
    "PoolConfig",
    "TransformersWorkerConfig",
    "build_pool",
    "load_pool_config",
    "parse_pool_config",
]


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
    tenant_weights: dict[str, TenantWeight] = Field(default_factory=dict)
    """Each tenant's share where requests wait (slots and batch queues); unnamed tenants: 1."""
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("workers")
    @classmethod
    def _worker_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _WORKER_NAME.match(name):
                raise ValueError(f"worker name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("tenant_weights")
    @classmethod
    def _tenant_names(cls, value: dict[str, float]) -> dict[str, float]:
        if "" in value:
            raise ValueError("a tenant name must not be empty")
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
            workers[name] = _build_worker(name, spec, config)
        except UserError as exc:  # e.g. no such model directory: say which file and worker
            raise ConfigError(str(exc), where=f"{source}: workers.{name}") from None
        except RolepoolError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"could not start worker: {type(exc).__name__}: {exc}",
                where=f"{source}: workers.{name}",
            ) from exc
    specs = config.workers.items()
    limits = {n: s.max_concurrency for n, s in specs if s.max_concurrency}
    # An in-process worker keeps its context_length itself (and says so); an HTTP one cannot.
    contexts = {n: s.context_length for n, s in specs if s.context_length and _remote(s)}
    checks = {n: s.health_check for n, s in specs if _remote(s) and s.health_check}
    return Pool(
        workers,
        config.policy,
        max_concurrency=limits or None,
        request_timeout=config.request_timeout,
        breaker=config.breaker,
        seed=config.seed,
        health_checks=checks or None,
        context_lengths=contexts or None,
        tenant_weights=config.tenant_weights or None,
    )


def _remote(spec: TransformersWorkerConfig | OpenAIWorkerConfig) -> bool:
    return isinstance(spec, OpenAIWorkerConfig)


def _build_worker(
    name: str, spec: TransformersWorkerConfig | OpenAIWorkerConfig, config: PoolConfig
) -> Worker:
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
            context_length=spec.context_length,
            tenant_weights=config.tenant_weights or None,
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
        return _key_path([*loc, "backend"]), f"unknown backend {tag!r}; use {BACKENDS_TEXT}"
    if kind == "union_tag_not_found":
        return _key_path([*loc, "backend"]), f"missing required key; use {BACKENDS_TEXT}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return _key_path(loc), message


BACKENDS_TEXT = " or ".join(repr(b) for b in BACKENDS)


def _strip_tags(loc: list[Any]) -> list[Any]:
    """Drop the discriminator tag pydantic puts in the location of a worker's fields
    (`workers.a.openai.url` -> `workers.a.url`): it is not a key of the file."""
    if len(loc) >= 3 and loc[0] == "workers" and loc[2] in BACKENDS:
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
        elif isinstance(part, str) and part in BACKENDS:
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
