"""Who goes next where requests wait: priority classes first, then a fair share between tenants.

Two places in a pool make requests wait: the in-process batcher's queue (admitted between two
decode steps, `rolepool.pools.batching`) and a worker's concurrency slots (`Pool`'s
`max_concurrency`). Both take their next request from a `FairQueue`:

* **priority**: an `interactive` request (an agent waiting on its reply) always goes before a
  `batch` one (an eval, a bulk job); within a class, order is decided by
* **weighted fair sharing** between tenants (start-time fair queueing): each tenant has a virtual
  clock that advances by `1 / weight` each time one of its requests is taken, and the tenant
  whose clock is furthest behind goes next, oldest request first. A tenant that was idle joins at
  the class's current virtual time, so idling earns no credit to burst with later; and since
  the queue always takes *someone's* request when one waits, an idle tenant's share simply goes
  to the tenants that are waiting (a batch tenant alone gets the whole pool).

Requests without a tenant share one tenant (`None`). Weights default to 1; they come from
`Pool(tenant_weights=...)`/`TransformersWorker(tenant_weights=...)`, pool.toml's
`[tenant_weights]` and serve's keys file (`weight`), and `set_weights` changes them while requests
wait (serve does on SIGHUP): the next pick uses the new weights, clocks already advanced stay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Generic, TypeVar

import anyio
from pydantic import Field, TypeAdapter, ValidationError

from rolepool.core import ConfigError, Request
from rolepool.core.requests import Priority

__all__ = ["PRIORITIES", "FairQueue", "FairSlots", "TenantWeight", "check_tenant_weights"]

PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")
"""The priority classes, first served first."""

T = TypeVar("T")

TenantWeight = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
"""A tenant's share, as config files give it: a finite number above 0 (not a string or bool)."""
_WEIGHT = TypeAdapter(TenantWeight)


def check_tenant_weights(
    weights: Mapping[str, float] | None, *, where: str = "tenant_weights"
) -> dict[str, float]:
    """`weights` as a plain dict, or a `ConfigError` naming the first bad entry. (A queue would
    treat a bad weight as 1; refusing it where it is given says what is wrong.)"""
    checked: dict[str, float] = {}
    for tenant, weight in (weights or {}).items():
        if not isinstance(tenant, str) or not tenant:
            raise ConfigError(f"tenant names are non-empty strings, not {tenant!r}", where=where)
        try:
            checked[tenant] = _WEIGHT.validate_python(weight)
        except ValidationError as exc:
            raise ConfigError(exc.errors()[0]["msg"], where=f"{where}.{tenant}") from None
    return checked


@dataclass
class _Tenant(Generic[T]):
    waiting: deque[tuple[int, T]] = field(default_factory=deque)
    clock: float = 0.0
    """Virtual time of this tenant's next request (advances by 1/weight per request taken)."""


@dataclass
class _Class(Generic[T]):
    tenants: dict[str | None, _Tenant[T]] = field(default_factory=dict)
    now: float = 0.0
    """The class's virtual time: the clock of the last request taken."""


class FairQueue(Generic[T]):
    """Waiting items, each with a tenant and a priority class; `pop` takes the next by priority,
    then fair share (see the module docstring). Not thread-safe: one event loop owns it."""

    def __init__(
        self,
        key: Callable[[T], Request],
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self._request = key
        self.weights = dict(weights or {})
        self._classes: dict[Priority, _Class[T]] = {p: _Class() for p in PRIORITIES}
        self._arrivals = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[T]:
        """The waiting items, in no particular order."""
        for cls in self._classes.values():
            for tenant in cls.tenants.values():
                yield from (item for _, item in tenant.waiting)

    def set_weights(self, weights: Mapping[str, float] | None) -> None:
        """Replace the tenants' weights (unnamed tenants: 1) from the next pick on."""
        self.weights = dict(weights or {})

    def weight(self, tenant: str | None) -> float:
        weight = self.weights.get(tenant, 1.0) if tenant is not None else 1.0
        return weight if weight > 0 else 1.0

    def push(self, item: T) -> None:
        request = self._request(item)
        cls = self._classes[request.priority]
        tenant = cls.tenants.setdefault(request.tenant, _Tenant())
        if not tenant.waiting:  # back from idle: no credit for the time it was away
            tenant.clock = max(tenant.clock, cls.now)
        tenant.waiting.append((self._arrivals, item))
        self._arrivals += 1
        self._len += 1

    def pop(self) -> T:
        """The next item by priority, then fair share; IndexError when none waits."""
        for cls in self._classes.values():
            best: tuple[float, int, str | None] | None = None
            for name, tenant in cls.tenants.items():
                if tenant.waiting:
                    candidate = (tenant.clock, tenant.waiting[0][0], name)
                    if best is None or candidate[:2] < best[:2]:
                        best = candidate
            if best is not None:
                tenant = cls.tenants[best[2]]
                _, item = tenant.waiting.popleft()
                cls.now = tenant.clock
                tenant.clock += 1.0 / self.weight(best[2])
                self._len -= 1
                return item
        raise IndexError("pop from an empty FairQueue")

    def take(self, n: int) -> list[T]:
        """Up to `n` items, popped in order."""
        return [self.pop() for _ in range(min(max(n, 0), self._len))]

    def remove(self, item: T) -> bool:
        """Take `item` out without serving it (its caller gave up); whether it was waiting."""
        request = self._request(item)
        tenant = self._classes[request.priority].tenants.get(request.tenant)
        if tenant is None:
            return False
        for entry in tenant.waiting:
            if entry[1] is item:
                tenant.waiting.remove(entry)
                self._len -= 1
                return True
        return False

    def clear(self) -> list[T]:
        """Empty the queue; the items that waited."""
        items = list(self)
        for cls in self._classes.values():
            for tenant in cls.tenants.values():
                tenant.waiting.clear()
        self._len = 0
        return items


@dataclass(eq=False)
class _Waiter:
    request: Request
    granted: anyio.Event = field(default_factory=anyio.Event)


class FairSlots:
    """`limit` concurrency slots whose waiters are served by a `FairQueue` (instead of
    first-come, first-served): `async with slots.hold(request)`. A slot that is freed while
    requests wait is handed straight to the next one, so a newcomer cannot overtake them."""

    def __init__(self, limit: int, weights: Mapping[str, float] | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.in_use = 0
        self._waiting: FairQueue[_Waiter] = FairQueue(lambda w: w.request, weights)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._waiting.weights)

    def set_weights(self, weights: Mapping[str, float] | None) -> None:
        """New tenant weights for the requests waiting now and later."""
        self._waiting.set_weights(weights)

    @asynccontextmanager
    async def hold(self, request: Request) -> AsyncIterator[None]:
        if self.in_use < self.limit and not self._waiting:
            self.in_use += 1
        else:
            waiter = _Waiter(request)
            self._waiting.push(waiter)
            try:
                await waiter.granted.wait()
            except BaseException:
                if waiter.granted.is_set():
                    self._release()  # handed a slot just as it gave up: pass the slot on
                else:
                    self._waiting.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        if self._waiting:
            self._waiting.pop().granted.set()  # the slot changes hands; in_use stays
        else:
            self.in_use -= 1
