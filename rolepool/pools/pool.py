"""`Pool`: named workers behind a routing policy, with breakers, timeouts and concurrency limits.

A pool is itself a `Worker`, so an agent runs on a pool exactly as on a single model. For each
request it draws the role's primary worker by weight, then walks the fallbacks until one serves.
Each attempt is bounded by `request_timeout` and the worker's concurrency limit; a failure is
counted on the worker's circuit breaker and reported as a `pool.failover` event, and the worker
that serves is reported as `pool.routed`. The served Completion carries the worker, architecture
and policy version: the audit trail of which model answered under which policy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import anyio

from rolepool.core import (
    Completion,
    ConfigError,
    FailedAttempt,
    RateLimited,
    Request,
    RequestRefused,
    UserError,
    WorkerError,
    WorkerInfo,
)
from rolepool.core.emit import emit
from rolepool.core.events import PoolFailover, PoolRouted
from rolepool.pools.admission import FairSlots, check_tenant_weights
from rolepool.pools.breaker import BreakerSettings, CircuitBreaker, Clock
from rolepool.pools.health_checks import HealthChecks, check_each
from rolepool.pools.policy import RoutingPolicy
from rolepool.pools.pool_checks import (
    check_weights,
    concurrency_limits,
    declared_contexts,
    name_workers,
)
from rolepool.pools.quotas import Quotas, within_quota
from rolepool.pools.routing import Router
from rolepool.pools.worker import Worker


@dataclass
class WorkerStats:
    """Counters for one worker, read by `/metrics`. `requests` counts calls that reached the
    worker; `rejected` those turned away by its open breaker; `refused` those the worker could
    not serve though healthy (`RequestRefused`, e.g. a prompt over its context)."""

    requests: int = 0
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    failovers: int = 0
    rejected: int = 0
    refused: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class Pool:
    """Routes each request to a worker by role; see the module docstring for the algorithm.

    `workers` is a mapping of name to worker, or a list whose names come from `worker.info.name`.
    `max_concurrency` caps requests in flight per worker (one int for all, or per name); further
    requests wait for a slot, and that wait counts towards `request_timeout`. `seed` makes the
    weighted split reproducible. `clock` drives the breakers' cooldown (tests pass a fake one).
    `health_checks` probes the HTTP workers while the pool is entered (one `HealthCheckSettings`,
    or a `HealthCheck` per worker name; `health_checks.py`); `context_lengths` declares workers'
    context windows (`context_window.py`); `quotas` holds each tenant to its limits
    (`quotas.py`): a request over one raises `QuotaExceeded`. Requests waiting for a slot go by
    priority class, then by tenant, each tenant's share in proportion to its `tenant_weights`
    entry (1 when not named; `admission.py`); `set_tenant_weights` changes them. These are the
    pool's slots only: an in-process worker's batch queue has weights of its own.
    """

    def __init__(
        self,
        workers: Mapping[str, Worker] | Sequence[Worker],
        policy: RoutingPolicy,
        *,
        max_concurrency: Mapping[str, int] | int | None = None,
        request_timeout: float | None = None,
        breaker: BreakerSettings | None = None,
        seed: int | None = None,
        clock: Clock = time.monotonic,
        health_checks: HealthChecks | None = None,
        context_lengths: Mapping[str, int] | None = None,
        quotas: Quotas | None = None,
        tenant_weights: Mapping[str, float] | None = None,
    ) -> None:
        self._workers = name_workers(workers)
        policy.check_workers(self._workers)
        check_weights(policy)
        if request_timeout is not None and request_timeout <= 0:
            raise ConfigError("must be a positive number of seconds", where="request_timeout")
        self.request_timeout = request_timeout
        self._limits = concurrency_limits(max_concurrency, self._workers)
        self._tenant_weights = check_tenant_weights(tenant_weights)
        # Waiting for a slot is ordered by priority, then tenants' fair share (admission.py).
        self._limiters = {n: FairSlots(v, self._tenant_weights) for n, v in self._limits.items()}
        settings = breaker or BreakerSettings()
        self._breakers = {n: CircuitBreaker(n, settings, clock=clock) for n in self._workers}
        self._stats = {n: WorkerStats() for n in self._workers}
        self._router = Router(
            self._workers,
            self._breakers,
            self._limiters,
            in_flight=lambda name: self._stats[name].in_flight,
            health_checks=health_checks,
            context_lengths=declared_contexts(context_lengths, self._workers),
        )
        self.quotas = quotas
        self._policy = policy
        self._history: list[RoutingPolicy] = []
        self._rng = random.Random(seed)
        self._info = WorkerInfo(name="pool", model="pool", architecture="unknown")
        self._entered: AsyncExitStack | None = None

    def __repr__(self) -> str:
        return f"Pool({list(self._workers)}, policy={self._policy.version!r})"

    # -- the Worker protocol ------------------------------------------------------------------

    @property
    def info(self) -> WorkerInfo:
        return self._info

    async def complete(self, request: Request) -> Completion:
        """Serve `request` from the first worker that can, or raise `WorkerError` whose
        `attempts` hold each worker's failure (`RequestRefused` when every worker refused the
        request itself, e.g. a prompt over each one's context). Never waits on a worker whose
        breaker is open. `request.worker` pins the request to that worker alone. A request of a
        tenant over one of its quotas raises `QuotaExceeded` before any worker is asked."""
        return await within_quota(self.quotas, request, lambda: self._route(request))

    async def _route(self, request: Request) -> Completion:
        policy = self._policy  # one snapshot: a concurrent set_policy must not mix two versions
        request = policy.with_decoding(request)
        primary, order = self._order(request, policy)
        failures: list[FailedAttempt] = []
        for i, name in enumerate(order):
            result = await self._attempt(name, request)
            if isinstance(result, Completion):
                emit(
                    PoolRouted(
                        **_ids(request),
                        role=request.role or "",
                        worker=name,
                        policy_version=policy.version,
                        choice=_choice(request, name, primary),
                    )
                )
                return self._stamp(result, name, policy)
            failures.append(result)
            next_name = order[i + 1] if i + 1 < len(order) else None
            if next_name is not None:
                self._stats[name].failovers += 1
            emit(
                PoolFailover(
                    **_ids(request),
                    role=request.role or "",
                    from_worker=name,
                    to_worker=next_name,
                    error=_failure_text(result),
                )
            )
        message = (
            f"no worker could serve role {request.role!r} (policy {policy.version!r}): "
            + "; ".join(f"{f.worker}: {_failure_text(f)}" for f in failures)
        )
        if all(isinstance(f.error, UserError) for f in failures):  # a schema no worker compiles
            raise failures[-1].error  # type: ignore[misc]
        if all(f.kind == "refused" for f in failures):  # the request is at fault on every worker
            raise RequestRefused(message, attempts=tuple(failures)) from failures[-1].error
        raise WorkerError(message, attempts=tuple(failures)) from failures[-1].error

    def _order(self, request: Request, policy: RoutingPolicy) -> tuple[str, list[str]]:
        """The primary worker and every worker to try, in order."""
        if request.worker is not None:
            if request.worker not in self._workers:
                raise UserError(
                    f"no worker named {request.worker!r} in the pool; "
                    f"it has {sorted(self._workers)}"
                )
            return request.worker, [request.worker]
        route = policy.route_for(request.role)
        if route is None:
            raise ConfigError(
                f"no route for role {request.role!r} and no default route",
                where=f"policy {policy.version!r}",
            )
        primary = self._router.primary(route, request, self._rng)
        return primary, route.attempts(primary)

    async def health(self) -> bool:
        """Healthy while any worker is healthy and its breaker would let a request through: the
        policy's fallbacks can still serve. (A pool whose breakers are all open serves nothing
        but 'circuit breaker open', so it must not call itself healthy.)"""
        healthy = await self.health_by_worker()
        return any(up and not self._breakers[name].rejecting for name, up in healthy.items())

    async def health_by_worker(self) -> dict[str, bool]:
        """Each worker's own health check, run concurrently and bounded so one hung worker does
        not hang the check; a raising or slow worker counts as unhealthy."""
        return await check_each(self._workers, self.request_timeout or 10.0)

    async def aclose(self) -> None:
        """Close every worker that holds resources; one failing to close does not stop the rest."""
        first: BaseException | None = None
        for worker in self._workers.values():
            close = getattr(worker, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    async def __aenter__(self) -> Pool:
        """Enter every worker that has a lifetime of its own (`async with`; an in-process
        worker's batching loop then runs in a task group this block owns); leaving the block
        closes them all."""
        stack = AsyncExitStack()
        try:
            entered: set[int] = set()
            for worker in self._workers.values():
                if hasattr(worker, "__aenter__") and id(worker) not in entered:
                    entered.add(id(worker))
                    await stack.enter_async_context(worker)
            if self._router.monitor is not None:
                await stack.enter_async_context(self._router.monitor)
        except BaseException:
            await stack.aclose()
            raise
        self._entered = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._entered = self._entered, None
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            await self.aclose()

    # -- policy --------------------------------------------------------------------------------

    @property
    def policy(self) -> RoutingPolicy:
        return self._policy

    @property
    def policy_history(self) -> list[RoutingPolicy]:
        """Earlier policies, oldest first; `rollback` returns to the last one."""
        return list(self._history)

    def set_policy(self, policy: RoutingPolicy) -> None:
        """Replace the policy for requests that start from now on; in-flight ones finish under
        the version they started with."""
        policy.check_workers(self._workers)
        check_weights(policy)
        for known in [*self._history, self._policy]:
            if known.version == policy.version and known.digest() != policy.digest():
                # Two contents under one version would make the audit trail ambiguous.
                raise ConfigError(
                    f"version {policy.version!r} already names a different policy; "
                    "give the new one a new version",
                    where="policy.version",
                )
        self._history.append(self._policy)
        self._policy = policy

    def rollback(self) -> RoutingPolicy:
        """Go back to the previous policy and return it."""
        if not self._history:
            raise UserError(f"no earlier policy to roll back to from {self._policy.version!r}")
        self._policy = self._history.pop()
        return self._policy

    # -- tenants -------------------------------------------------------------------------------

    @property
    def tenant_weights(self) -> dict[str, float]:
        """Each named tenant's share of a busy worker's concurrency slots (others: 1)."""
        return dict(self._tenant_weights)

    def set_tenant_weights(self, weights: Mapping[str, float] | None) -> None:
        """Replace the tenants' weights; requests already waiting for a slot are picked by the
        new ones from the next free slot on. Checked first: a bad weight changes nothing."""
        self._tenant_weights = check_tenant_weights(weights)
        for slots in self._limiters.values():
            slots.set_weights(self._tenant_weights)

    # -- inspection ----------------------------------------------------------------------------

    @property
    def workers(self) -> Mapping[str, Worker]:
        return MappingProxyType(self._workers)

    def breaker(self, worker: str) -> CircuitBreaker:
        return self._breakers[worker]

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        """Per worker: the counters of `WorkerStats`, `breaker` (state name), `breaker_state`
        (the same as a number for Prometheus: 0 closed, 1 half-open, 2 open), `breaker_opened`
        (times it opened) and `max_concurrency` (None = unlimited). A snapshot; safe to
        serialise."""
        out: dict[str, dict[str, Any]] = {}
        for name, stats in self._stats.items():
            breaker = self._breakers[name]
            out[name] = {
                **asdict(stats),
                "breaker": breaker.state,
                "breaker_state": _BREAKER_CODES[breaker.state],
                "breaker_opened": breaker.transitions["open"],
                "max_concurrency": self._limits.get(name),
                **self._router.stats(name),
            }
        return out

    # -- internals -----------------------------------------------------------------------------

    async def _attempt(self, name: str, request: Request) -> Completion | FailedAttempt:
        """One try on one worker: the Completion, or the failure with its exception. Only the
        worker's own faults (it raised, or gave no answer in time) count on its breaker: a
        request the worker refused, or bad input the worker reported as such (`UserError`),
        says nothing about the worker, so one client's bad requests cannot open breakers."""
        breaker, stats = self._breakers[name], self._stats[name]
        skipped = self._router.skip(name, request)
        if skipped is not None:
            stats.rejected += skipped.kind != "refused"
            stats.refused += skipped.kind == "refused"
            return skipped
        if not breaker.allow(request):
            stats.rejected += 1
            return FailedAttempt(name, "open")
        slots = self._limiters.get(name)
        limiter: AbstractAsyncContextManager[Any] = slots.hold(request) if slots else nullcontext()
        reached = False
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.request_timeout) as deadline:
                async with limiter:
                    reached = True
                    completion = await self._call(name, request, stats)
        except Exception as exc:
            failure = self._judge(name, exc, timed_out=deadline.cancel_called, reached=reached)
            if failure.counts_against_worker:
                self._router.latency.observe(name, time.perf_counter() - started)
                breaker.record_failure(_failure_text(failure), request)
            elif isinstance(exc, RateLimited):
                breaker.back_off(exc.retry_after)
            else:
                breaker.release()
            return failure
        except BaseException:
            breaker.release()  # cancelled from outside: no verdict on the worker
            raise
        stats.successes += 1
        self._router.latency.observe(name, time.perf_counter() - started)
        breaker.record_success(request)
        return completion

    def _judge(self, name: str, exc: Exception, *, timed_out: bool, reached: bool) -> FailedAttempt:
        """Whose fault a failed try was (see `FailedAttempt`), counted in the worker's stats."""
        stats = self._stats[name]
        limit = f"request_timeout={self.request_timeout or 0:g}s"  # only read after a timeout
        if isinstance(exc, TimeoutError) and timed_out and not reached:
            # Queued behind the concurrency limit: the worker is busy, not broken.
            return FailedAttempt(name, "busy", TimeoutError(f"no free slot within {limit}"))
        if isinstance(exc, RateLimited):
            return FailedAttempt(name, "rate_limited", exc)
        if isinstance(exc, RequestRefused | UserError):
            stats.refused += 1
            return FailedAttempt(name, "refused", exc)
        stats.failures += 1
        if isinstance(exc, TimeoutError) and timed_out:
            stats.timeouts += 1
            return FailedAttempt(name, "timeout", TimeoutError(f"no completion within {limit}"))
        return FailedAttempt(name, "failed", exc)

    async def _call(self, name: str, request: Request, stats: WorkerStats) -> Completion:
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._workers[name].complete(request)
        finally:
            stats.in_flight -= 1

    def _stamp(self, completion: Completion, name: str, policy: RoutingPolicy) -> Completion:
        """Record who served under which policy. The pool's name for the worker wins: it is the
        name the policy, the events and the metrics use."""
        info = _safe_info(self._workers[name])
        architecture = completion.architecture
        if architecture == "unknown" and info is not None:
            architecture = info.architecture
        return completion.model_copy(
            update={
                "worker": name,
                "model": completion.model or (info.model if info else ""),
                "architecture": architecture,
                "policy_version": policy.version,
            }
        )


def _failure_text(failure: FailedAttempt) -> str:
    """What the failover event and the final error say about one failed try."""
    if failure.error is None:
        return str(failure).split(": ", 1)[1]
    if failure.kind in ("busy", "timeout"):  # the error is the pool's own TimeoutError
        return str(failure.error)
    return f"{type(failure.error).__name__}: {failure.error}"


def _choice(request: Request, served: str, primary: str) -> str:
    if request.worker is not None:
        return "pinned"
    return "primary" if served == primary else "fallback"


_BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


def _ids(request: Request) -> dict[str, Any]:
    """run_id and parent span for pool events, so they nest under the model call."""
    return {"run_id": request.run_id or "", "parent_id": request.span_id}


def _safe_info(worker: Worker) -> WorkerInfo | None:
    try:
        return worker.info
    except Exception:
        return None
