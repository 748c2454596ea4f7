"""`RoutingPolicy`: which workers serve which role, as a versioned, serialisable value.

A policy is data, not code, so it can be written in `pool.toml`, sent over the wire, diffed,
replaced at runtime and rolled back. Its `version` is stamped on every Completion it routes (the
audit trail); `digest()` tells two policies apart even when someone reuses a version string.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rolepool.core import ConfigError, Decoding, Request

RoleDecoding = Literal["free", "auto", "required", "json_object"]
"""The decoding modes a route can set for its role (`named` and `json_schema` need a tool or a
schema, which only a request carries)."""


def _check_name(value: str) -> str:
    if not value.strip():
        raise ValueError("worker name must not be empty")
    return value


class Choice(BaseModel):
    """One candidate worker for a role; its share of traffic is `weight` / sum of weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    worker: str
    weight: float = Field(default=1.0, gt=0)

    @field_validator("worker")
    @classmethod
    def _worker_name(cls, value: str) -> str:
        return _check_name(value)


class Route(BaseModel):
    """How one role is served: a weighted pick among `choices`, then `fallbacks` in order.

    Several choices make a canary or A/B split. Fallbacks are tried only after the picked choice
    failed or its breaker is open; the other, unpicked choices are not tried unless listed here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    choices: list[Choice] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    strategy: Literal["weighted", "least_busy", "latency"] | None = None
    """How the primary is picked among `choices` (`rolepool.pools.strategies`): None or
    `weighted` draws by weight; `least_busy` takes the one with the fewest requests in flight and
    queued; `latency` the one with the lowest recent latency (EWMA)."""
    decoding: RoleDecoding | None = None
    """Constrained decoding for the role's requests that ask for none (free): `auto` holds the
    calls a model opens to their tools' schemas, `required` makes every reply a call. None: the
    request's own mode. A request that asks for a mode itself keeps it."""

    @field_validator("fallbacks")
    @classmethod
    def _fallback_names(cls, value: list[str]) -> list[str]:
        return [_check_name(name) for name in value]

    @model_validator(mode="after")
    def _no_duplicates(self) -> Route:
        seen: set[str] = set()
        for name in [c.worker for c in self.choices] + self.fallbacks:
            if name in seen:
                # A duplicate would be tried twice or skew the split: almost surely a typo.
                raise ValueError(f"worker {name!r} appears more than once in this route")
            seen.add(name)
        return self

    def pick(self, rng: random.Random) -> str:
        """The primary worker for one request, drawn by weight."""
        if len(self.choices) == 1:
            return self.choices[0].worker
        weights = [c.weight for c in self.choices]
        return rng.choices([c.worker for c in self.choices], weights=weights)[0]

    def attempts(self, primary: str) -> list[str]:
        """The order in which workers are tried for a request whose weighted pick was `primary`."""
        return [primary] + [name for name in self.fallbacks if name != primary]

    def workers(self) -> list[str]:
        return [c.worker for c in self.choices] + list(self.fallbacks)


class RoutingPolicy(BaseModel):
    """Maps each role to a `Route`; roles without one use `default`, if there is one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    routes: dict[str, Route] = Field(default_factory=dict)
    default: Route | None = None

    def route_for(self, role: str | None) -> Route | None:
        if role is not None and role in self.routes:
            return self.routes[role]
        return self.default

    def with_decoding(self, request: Request) -> Request:
        """`request` with its role's decoding mode (`Route.decoding`) if it asked for free
        decoding and the route sets one; otherwise `request` itself."""
        route = self.route_for(request.role)
        mode = route.decoding if route is not None else None
        if mode is None or mode == "free" or request.decoding.mode != "free":
            return request
        return request.model_copy(update={"decoding": Decoding(mode=mode)})

    def references(self) -> Iterator[tuple[str, str]]:
        """Every worker name the policy uses, with the key path where it appears."""
        named = [(f"routes.{role}", route) for role, route in self.routes.items()]
        if self.default is not None:
            named.append(("default", self.default))
        for where, route in named:
            for i, choice in enumerate(route.choices):
                yield f"{where}.choices[{i}].worker", choice.worker
            for i, name in enumerate(route.fallbacks):
                yield f"{where}.fallbacks[{i}]", name

    def unknown_workers(self, known: Iterable[str]) -> list[tuple[str, str]]:
        """(key path, name) of every worker the policy names that is not in `known`."""
        names = set(known)
        return [(where, name) for where, name in self.references() if name not in names]

    def check_workers(self, known: Iterable[str], *, prefix: str = "policy") -> None:
        """Raise `ConfigError` for the first worker name that is not in `known`.

        Checked when a pool is built rather than at parse time: the policy alone does not know
        which workers exist, and a route to a missing worker would only fail at the first request.
        """
        names = sorted(set(known))
        for where, name in self.unknown_workers(names):
            raise ConfigError(
                f"no worker named {name!r} in the pool (workers: {', '.join(names)})",
                where=f"{prefix}.{where}",
            )

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in the shape of the `[policy]` table of `pool.toml` (no nulls: TOML has
        none)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingPolicy:
        return cls.model_validate(data)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_json(cls, data: str | bytes) -> RoutingPolicy:
        return cls.model_validate_json(data)

    def digest(self) -> str:
        """A stable hash of the content: key order and float spelling do not change it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
