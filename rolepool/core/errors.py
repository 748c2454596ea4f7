"""One exception root, split by who caused the failure.

Catch `RolepoolError` to catch everything rolepool raises on purpose; catch a branch to handle one
cause: the user's input, the model's behaviour, a worker, a tool, or a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class RolepoolError(Exception):
    """Root of every error rolepool raises on purpose."""


class UserError(RolepoolError):
    """The caller's input or configuration is wrong; fixing the input fixes it."""


class ConfigError(UserError):
    """A configuration value or file is invalid. `where` names the key or location."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ModelBehaviorError(RolepoolError):
    """The model kept emitting unparseable or invalid tool calls after its retry budget."""

    def __init__(self, message: str, *, attempts: int = 0, last_error: str | None = None) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(message)


AttemptKind = Literal["failed", "timeout", "refused", "busy", "open", "rate_limited", "down"]


@dataclass(frozen=True)
class FailedAttempt:
    """One worker's try at a request that did not serve it, as a pool records it.

    `kind` says whose fault it was, which is what the worker's circuit breaker counts: "failed"
    (the worker raised) and "timeout" (no answer in time) are the worker's; "refused" (the
    request itself could not be served: `RequestRefused` or a `UserError`), "busy" (no free slot
    in time), "open" (its breaker turned the request away unasked), "rate_limited" (it answered
    429, or the pool is backing off from it) and "down" (its active health check failed, so it
    was never called) are not. `error` is the
    exception the try ended with (None for "open": the worker was never called)."""

    worker: str
    kind: AttemptKind
    error: BaseException | None = None

    @property
    def counts_against_worker(self) -> bool:
        return self.kind in ("failed", "timeout")

    def __str__(self) -> str:
        if self.error is None:
            return f"{self.worker}: {_UNCALLED.get(self.kind, 'circuit breaker open')}"
        return f"{self.worker}: {type(self.error).__name__}: {self.error}"


_UNCALLED = {"rate_limited": "backing off after a 429", "down": "failed its health check"}


class WorkerError(RolepoolError):
    """A model worker failed: raised, died, timed out or answered with an error.

    From a pool, `attempts` holds every worker's failed try, each with its own exception."""

    def __init__(
        self,
        message: str,
        *,
        worker: str | None = None,
        attempts: tuple[FailedAttempt, ...] = (),
    ) -> None:
        self.worker = worker
        self.attempts = attempts
        super().__init__(f"worker {worker!r}: {message}" if worker else message)


class RequestRefused(WorkerError):
    """The worker is healthy but cannot serve this request: a prompt longer than its context, a
    body over a server's limit, a request the server calls malformed. A pool tries the next worker
    (it may have a longer context) without counting this against the worker's breaker."""


class ToolError(RolepoolError):
    """A tool failed while running. Inside the run loop this goes back to the model instead."""

    def __init__(self, message: str, *, tool: str | None = None) -> None:
        self.tool = tool
        super().__init__(f"tool {tool!r}: {message}" if tool else message)


class LimitExceeded(RolepoolError):
    """A run hit one of its limits; `limit` names which one."""

    limit: str = "limit"


class MaxTurnsExceeded(LimitExceeded):
    limit = "max_turns"


class DeadlineExceeded(LimitExceeded):
    limit = "deadline"


class TokenBudgetExceeded(LimitExceeded):
    limit = "token_budget"


class QuotaExceeded(LimitExceeded):
    """A tenant's quota would be exceeded: requests or tokens per minute, concurrent requests,
    or tokens per day. Nothing of the request was done. `retry_after` is the seconds until it
    could pass (None when only a new day or a higher quota helps)."""

    limit = "quota"

    def __init__(
        self, message: str, *, tenant: str, quota: str, retry_after: float | None = None
    ) -> None:
        self.tenant = tenant
        self.quota = quota
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(WorkerError):
    """The worker's server answered 429 (too many requests) after its retries: it is alive but
    busy, so a pool backs off from it for `retry_after` seconds instead of opening its breaker."""

    def __init__(
        self, message: str, *, worker: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, worker=worker)


class RunCancelled(RolepoolError):
    """The run was cancelled from outside before it finished."""


class EventsLost(RolepoolError):
    """A subscriber fell so far behind that events left the buffer and no store holds them."""
