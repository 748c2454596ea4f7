"""Active health checks: a dead HTTP worker is found by a probe, not by a user's request.

While a pool is entered (`async with pool`), a task group the pool owns asks each checked
worker's `health()` every `interval` seconds (bounded by `timeout`). A worker that fails
`failures` checks in a row is down: the pool skips it without calling it, so no user request is
spent finding out. The next passing check brings it back (recovery is noticed within one
interval). `Pool(health_checks=HealthCheckSettings(...))` checks the pool's HTTP workers
(`OpenAIWorker`; an in-process worker cannot be down without the process being down too), or
the named `workers`, all alike; a mapping of worker name to `HealthCheck` (what pool.toml's
per-worker `health_check` tables build) checks exactly those workers, each on its own settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, ConfigDict, Field

from rolepool.core import ConfigError
from rolepool.pools.worker import Worker

logger = logging.getLogger(__name__)


class HealthCheck(BaseModel):
    """How one worker is checked: an HTTP worker's `health_check` table in `pool.toml`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """Seconds between two checks of one worker."""
    timeout: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    """Seconds a check may take; a slower answer counts as a failed check."""
    failures: int = Field(default=1, ge=1)
    """Failed checks in a row that mark a worker down."""


class HealthCheckSettings(HealthCheck):
    """One `HealthCheck` for several workers of a pool."""

    workers: list[str] | None = None
    """The workers to check, by name; None: every HTTP worker of the pool."""


HealthChecks = HealthCheckSettings | Mapping[str, HealthCheck]
"""What `Pool(health_checks=...)` takes: the same checks for several workers, or per worker."""


def checked_workers(
    workers: Mapping[str, Worker], settings: HealthChecks
) -> dict[str, tuple[Worker, HealthCheck]]:
    """The workers to check, each with its settings; a name the pool lacks is a ConfigError
    when checks are given per worker (pool.toml validates its own before this)."""
    if not isinstance(settings, HealthCheckSettings):
        unknown = sorted(set(settings) - set(workers))
        if unknown:
            raise ConfigError(f"no worker named {unknown[0]!r} in the pool", where="health_checks")
        return {name: (workers[name], check) for name, check in settings.items()}
    if settings.workers is not None:
        names = [name for name in settings.workers if name in workers]
    else:
        from rolepool.pools.openai_worker import OpenAIWorker

        names = [n for n, w in workers.items() if isinstance(w, OpenAIWorker)]
    return {name: (workers[name], settings) for name in names}


async def check_each(workers: Mapping[str, Worker], bound: float) -> dict[str, bool]:
    """Each worker's own health check, run concurrently and bounded so one hung worker does not
    hang the check; a raising or slow worker counts as unhealthy."""
    results = dict.fromkeys(workers, False)

    async def check(name: str, worker: Worker) -> None:
        with anyio.move_on_after(bound):
            try:
                results[name] = bool(await worker.health())
            except Exception:
                results[name] = False

    async with anyio.create_task_group() as tg:
        for name, worker in workers.items():
            tg.start_soon(check, name, worker)
    return results


class HealthMonitor:
    """Runs the checks while entered; `is_down(name)` is what the pool asks before routing."""

    def __init__(self, workers: Mapping[str, Worker], settings: HealthChecks) -> None:
        self._workers = checked_workers(workers, settings)
        self._failed: dict[str, int] = dict.fromkeys(self._workers, 0)
        self._down: set[str] = set()
        self.checks = 0
        self.transitions: dict[str, int] = {"down": 0, "up": 0}
        self._tg: TaskGroup | None = None

    def is_down(self, name: str) -> bool:
        return name in self._down

    @property
    def down(self) -> set[str]:
        return set(self._down)

    def settings(self, name: str) -> HealthCheck | None:
        """How `name` is checked; None when it is not."""
        checked = self._workers.get(name)
        return checked[1] if checked is not None else None

    async def check_all(self) -> None:
        """One round of checks, concurrently (a hung worker does not delay the others)."""
        async with anyio.create_task_group() as tg:
            for name in self._workers:
                tg.start_soon(self._check, name)

    async def _check(self, name: str) -> None:
        worker, check = self._workers[name]
        healthy = (await check_each({name: worker}, check.timeout))[name]
        self.checks += 1
        self._record(name, healthy, check.failures)

    def _record(self, name: str, healthy: bool, failures: int) -> None:
        if healthy:
            self._failed[name] = 0
            if name in self._down:
                self._down.discard(name)
                self.transitions["up"] += 1
                logger.info("worker %r passed its health check: back in rotation", name)
            return
        self._failed[name] += 1
        if name not in self._down and self._failed[name] >= failures:
            self._down.add(name)
            self.transitions["down"] += 1
            logger.warning("worker %r failed its health check: skipped until it passes", name)

    async def _watch(self, name: str) -> None:
        """Check one worker on its own interval, so a slow schedule never delays a fast one."""
        interval = self._workers[name][1].interval
        while True:
            await anyio.sleep(interval)
            await self._check(name)

    async def __aenter__(self) -> HealthMonitor:
        if self._workers:
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            await self.check_all()  # known before the first request is routed
            for name in self._workers:
                self._tg.start_soon(self._watch, name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(exc_type, exc, tb)
