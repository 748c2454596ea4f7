"""Per-tenant quotas: requests and tokens per minute, concurrent requests, tokens per day.

A request is admitted or refused whole, before any worker is asked (`QuotaExceeded`, with the
seconds until it could pass). Admission and its reservation happen with no await in between, so
concurrent requests on one event loop cannot both take the last unit of a quota.

Tokens are only known after the answer, so an admitted request reserves an upper bound of its
tokens (`reservation`: the prompt's UTF-8 bytes, which no byte-level tokenizer exceeds, plus
`max_tokens` and a margin for the chat template) until it is charged its real usage. A request
is admitted while used + reserved tokens are under the limit: the overshoot is at most the last
admitted request's tokens. A failed request is charged no tokens (its request still counts
per minute). Daily totals (UTC days) are kept in a small SQLite table, so a restart of
`rolepool serve` does not reset them; one process should own a quota file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rolepool.core import Completion, QuotaExceeded, Request

TEMPLATE_MARGIN = 64
"""Tokens a chat template may add around the messages (role markers, tool preamble)."""
_WINDOW = 60.0
_DAY = 86400.0


class TenantQuota(BaseModel):
    """One tenant's limits; None: no limit of that kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    concurrent_requests: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)


def reservation(request: Request) -> int:
    """An upper bound of the tokens `request` can use (see the module docstring)."""
    size = 0
    for message in request.messages:
        size += len((message.content or "").encode("utf-8", "replace"))
        for call in message.tool_calls or []:
            size += len(json.dumps(call.arguments, default=str)) + len(call.name)
    for spec in request.tools:
        size += len(json.dumps(spec.to_openai()))
    return size + request.sampling.max_tokens + TEMPLATE_MARGIN


@dataclass
class _Usage:
    """One tenant's counters."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    in_flight: int = 0
    reserved: int = 0
    day: str = ""
    day_tokens: int = 0


@dataclass
class Ticket:
    """An admitted request: `charge` it its real tokens when it is answered."""

    tenant: str
    reserved: int
    charged: int | None = None

    def charge(self, tokens: int) -> None:
        self.charged = max(0, tokens)


class Quotas:
    """Holds each tenant to its `TenantQuota`; tenants without one are not limited.

    `path`: the SQLite file for daily totals (None keeps them in memory). `clock` gives wall time
    in seconds (tests move it)."""

    def __init__(
        self,
        limits: Mapping[str, TenantQuota],
        *,
        path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._usage: dict[str, _Usage] = {}
        self._db = _open(path) if path is not None else None

    def set_limits(self, limits: Mapping[str, TenantQuota]) -> None:
        """New limits (a reloaded keys file); counters so far are kept."""
        self._limits = dict(limits)

    def usage(self, tenant: str) -> dict[str, int]:
        """The tenant's counters now: requests and tokens in the last minute, in flight, today."""
        now = self._clock()
        used = self._current(tenant, now)
        return {
            "requests_last_minute": len(used.requests),
            "tokens_last_minute": sum(n for _, n in used.tokens),
            "in_flight": used.in_flight,
            "tokens_today": used.day_tokens,
        }

    @asynccontextmanager
    async def admit(self, request: Request) -> AsyncIterator[Ticket]:
        """Admit `request` of `request.tenant` or raise `QuotaExceeded`; the block runs the
        request and charges the ticket."""
        tenant = request.tenant or ""
        ticket = self._take(tenant, reservation(request))
        try:
            yield ticket
        finally:
            self._settle(ticket)

    def _take(self, tenant: str, reserve: int) -> Ticket:
        now = self._clock()
        used = self._current(tenant, now)
        limit = self._limits.get(tenant)
        if limit is not None:
            _check(tenant, limit, used, now)
        used.requests.append(now)
        used.in_flight += 1
        used.reserved += reserve
        return Ticket(tenant, reserve)

    def _settle(self, ticket: Ticket) -> None:
        now = self._clock()
        used = self._current(ticket.tenant, now)
        used.in_flight -= 1
        used.reserved -= ticket.reserved
        tokens = ticket.charged or 0
        if tokens:
            used.tokens.append((now, tokens))
            used.day_tokens += tokens
            if self._db is not None:
                _add_day(self._db, ticket.tenant, used.day, tokens)

    def _current(self, tenant: str, now: float) -> _Usage:
        """The tenant's counters with what fell out of the minute (and the day) dropped."""
        used = self._usage.setdefault(tenant, _Usage())
        while used.requests and used.requests[0] <= now - _WINDOW:
            used.requests.popleft()
        while used.tokens and used.tokens[0][0] <= now - _WINDOW:
            used.tokens.popleft()
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if used.day != day:
            used.day = day
            used.day_tokens = _read_day(self._db, tenant, day) if self._db is not None else 0
        return used


async def within_quota(
    quotas: Quotas | None, request: Request, ask: Callable[[], Awaitable[Completion]]
) -> Completion:
    """`ask()` for `request`, admitted by its tenant's quotas first (`QuotaExceeded` when over
    one) and charged its tokens; without quotas or a tenant, `ask()` as it is."""
    if quotas is None or request.tenant is None:
        return await ask()
    async with quotas.admit(request) as ticket:
        completion = await ask()
        ticket.charge(completion.usage.total_tokens)
    return completion


def _check(tenant: str, limit: TenantQuota, used: _Usage, now: float) -> None:
    """Raise `QuotaExceeded` for the first quota this request would break."""

    def refuse(quota: str, message: str, retry_after: float | None) -> QuotaExceeded:
        return QuotaExceeded(
            f"tenant {tenant!r}: {message}", tenant=tenant, quota=quota, retry_after=retry_after
        )

    if limit.concurrent_requests is not None and used.in_flight >= limit.concurrent_requests:
        message = f"{limit.concurrent_requests} concurrent requests already in flight"
        raise refuse("concurrent_requests", message, 1.0)
    if limit.requests_per_minute is not None and len(used.requests) >= limit.requests_per_minute:
        wait = used.requests[0] + _WINDOW - now
        raise refuse("requests_per_minute", f"{limit.requests_per_minute} requests/minute", wait)
    minute = sum(n for _, n in used.tokens) + used.reserved
    if limit.tokens_per_minute is not None and minute >= limit.tokens_per_minute:
        wait = used.tokens[0][0] + _WINDOW - now if used.tokens else 1.0
        raise refuse("tokens_per_minute", f"{limit.tokens_per_minute} tokens/minute", wait)
    if limit.tokens_per_day is not None and used.day_tokens + used.reserved >= limit.tokens_per_day:
        wait = _DAY - now % _DAY if not used.reserved else 1.0
        raise refuse("tokens_per_day", f"{limit.tokens_per_day} tokens/day (UTC)", wait)


def _open(path: str | Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS tenant_day_tokens "
        "(tenant TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL, "
        "PRIMARY KEY (tenant, day))"
    )
    return db


def _read_day(db: sqlite3.Connection, tenant: str, day: str) -> int:
    row = db.execute(
        "SELECT tokens FROM tenant_day_tokens WHERE tenant = ? AND day = ?", (tenant, day)
    ).fetchone()
    return int(row[0]) if row else 0


def _add_day(db: sqlite3.Connection, tenant: str, day: str, tokens: int) -> None:
    db.execute(
        "INSERT INTO tenant_day_tokens (tenant, day, tokens) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant, day) DO UPDATE SET tokens = tokens + excluded.tokens",
        (tenant, day, tokens),
    )
