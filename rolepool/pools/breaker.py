"""A circuit breaker per worker, so a dead worker costs one timeout, not one per request.

closed -> open after `failure_threshold` consecutive failures (errors or timeouts). While open,
requests are rejected at once, which lets the pool go straight to a fallback. After `cooldown`
seconds the next request becomes the single half-open probe: its success closes the breaker, its
failure opens it for another cooldown. Every change is a `pool.breaker` event in the run whose
request caused it, and is counted for metrics.

A 429 is not a failure: the worker is alive and asks for less traffic. `back_off` keeps requests
away for the server's Retry-After (or `rate_limit_backoff`) without opening the breaker or
counting towards `failure_threshold`; a 5xx or a timeout still counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rolepool.core import Request
from rolepool.core.emit import emit
from rolepool.core.events import BreakerChanged

BreakerState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]


class BreakerSettings(BaseModel):
    """The `[breaker]` table of `pool.toml`; the same settings apply to every worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive failures that open the breaker."""
    cooldown: float = Field(default=30.0, ge=0)
    """Seconds an open breaker rejects requests before it lets one probe through."""
    rate_limit_backoff: float = Field(default=1.0, ge=0)
    """Seconds to keep requests away from a worker that answered 429 without a Retry-After."""


class CircuitBreaker:
    """The breaker of one worker. Not thread-safe: the pool uses it from one event loop.

    `clock` is injectable so tests can move time instead of sleeping.
    """

    def __init__(
        self,
        worker: str,
        settings: BreakerSettings | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.worker = worker
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._backoff_until = 0.0
        self.backoffs = 0
        """How many 429s made the pool back off from this worker (for metrics)."""
        self.transitions: dict[BreakerState, int] = {"closed": 0, "open": 0, "half_open": 0}
        """How many times the breaker entered each state (for metrics)."""

    @property
    def state(self) -> BreakerState:
        """The last state entered. An open breaker whose cooldown has passed reports "open"
        until a request arrives to probe it: state changes happen in request tasks, so their
        events land in the run that caused them."""
        return self._state

    @property
    def rejecting(self) -> bool:
        """Whether a request arriving now would be turned away unasked (open, cooldown not
        over). Reading it changes nothing, unlike `allow`."""
        if self.backing_off:
            return True
        return self._state == "open" and self._clock() - self._opened_at < self.settings.cooldown

    @property
    def backing_off(self) -> bool:
        """Whether the worker asked for less traffic (a 429) less than its back-off ago."""
        return self._clock() < self._backoff_until

    def back_off(self, seconds: float | None = None) -> None:
        """The worker answered 429: keep requests away for `seconds` (its Retry-After, else
        `rate_limit_backoff`). Neither a failure nor a success: a probe it was is released."""
        wait = self.settings.rate_limit_backoff if seconds is None else seconds
        self._backoff_until = max(self._backoff_until, self._clock() + wait)
        self.backoffs += 1
        self.release()

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self, request: Request | None = None) -> bool:
        """Whether a request may call the worker now. A `True` from a half-open breaker makes
        the caller the probe: it must report back with `record_success`, `record_failure`,
        `back_off` or `release`."""
        if self.backing_off:
            return False
        if self._state == "open":
            if self._clock() - self._opened_at < self.settings.cooldown:
                return False
            self._change("half_open", "cooldown over; letting one probe through", request)
        if self._state == "half_open":
            if self._probing:
                return False
            self._probing = True
        return True

    def record_success(self, request: Request | None = None) -> None:
        self._failures = 0
        if self._state == "half_open":
            self._probing = False
            self._change("closed", "probe succeeded", request)

    def record_failure(self, error: str, request: Request | None = None) -> None:
        self._failures += 1
        if self._state == "half_open":
            self._probing = False
            self._open(f"probe failed: {error}", request)
        elif self._state == "closed" and self._failures >= self.settings.failure_threshold:
            self._open(f"{self._failures} consecutive failures; last: {error}", request)

    def release(self) -> None:
        """Give up a probe without a verdict (the request was cancelled or never reached the
        worker), so the next request may probe instead of the breaker staying stuck."""
        self._probing = False

    def _open(self, reason: str, request: Request | None) -> None:
        self._opened_at = self._clock()
        self._change("open", reason, request)

    def _change(self, state: BreakerState, reason: str, request: Request | None) -> None:
        self._state = state
        self.transitions[state] += 1
        emit(
            BreakerChanged(
                run_id=(request.run_id if request else None) or "",
                parent_id=request.span_id if request else None,
                worker=self.worker,
                state=state,
                reason=reason,
            )
        )
