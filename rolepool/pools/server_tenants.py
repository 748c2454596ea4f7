"""Tenants in `rolepool serve`: the request's tenant, its quotas, its metrics and what it may see.

With a keys file, every path but the health checks needs a tenant's key (401 otherwise, the
same answer for a wrong, a missing or a deleted tenant's key; only the tenant-less fact is
logged and counted). The tenant and its priority go on the `Request`, its quotas are checked
before the worker is asked (429 with `Retry-After`), its weight orders it against the other
tenants where requests wait (`TenantWeights`), and its requests and tokens are counted under a
`tenant` label. `/metrics` shows a tenant only its own `rolepool_tenant_*` series; a tenant
marked `admin` sees everything.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from rolepool.core import Completion, QuotaExceeded, Request
from rolepool.pools.pool import Pool
from rolepool.pools.quotas import Quotas
from rolepool.pools.tenants import Tenant, TenantKeys
from rolepool.pools.worker import Worker

logger = logging.getLogger(__name__)

TENANT_PREFIX = "rolepool_tenant_"


class TenantMetrics:
    """Per-tenant counters, registered in the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{TENANT_PREFIX}requests",
            "Chat completion requests answered, by tenant and outcome.",
            ["tenant", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            f"{TENANT_PREFIX}tokens",
            "Tokens used, by tenant and kind (prompt or completion).",
            ["tenant", "kind"],
            registry=registry,
        )

    def served(self, tenant: str | None, completion: Completion) -> None:
        if tenant is None:
            return
        self.requests.labels(tenant=tenant, status="ok").inc()
        self.tokens.labels(tenant=tenant, kind="prompt").inc(completion.usage.prompt_tokens)
        self.tokens.labels(tenant=tenant, kind="completion").inc(completion.usage.completion_tokens)

    def refused(self, tenant: str | None, status: str) -> None:
        if tenant is not None:
            self.requests.labels(tenant=tenant, status=status).inc()


def request_tenant(state: Any) -> Tenant | None:
    """The tenant the guard found for this request (None without a keys file)."""
    return getattr(state, "tenant", None)


def with_tenant(request: Request, tenant: Tenant | None) -> Request:
    if tenant is not None:
        request.tenant = tenant.name
        request.priority = tenant.priority
    return request


def quota_headers(exc: QuotaExceeded) -> dict[str, str]:
    """`Retry-After` in whole seconds (at least 1), as HTTP wants it."""
    if exc.retry_after is None:
        return {}
    return {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}


def metrics_for(text: bytes, tenant: Tenant | None) -> bytes:
    """The Prometheus text a tenant may read: everything for an admin (or without tenants);
    otherwise only its own `rolepool_tenant_*` series."""
    if tenant is None or tenant.admin:
        return text
    own = f'tenant="{tenant.name}"'
    kept = []
    for line in text.decode().splitlines():
        name = line.split(" ", 3)[2] if line.startswith("#") and line.count(" ") >= 2 else line
        if not name.startswith(TENANT_PREFIX):
            continue
        if line.startswith("#") or own in line:
            kept.append(line)
    return ("\n".join(kept) + "\n").encode()


def quotas_of(keys: TenantKeys) -> dict[str, Any]:
    return {name: tenant.quota for name, tenant in keys.tenants.items()}


class TenantWeights:
    """Puts the keys file's tenant weights where the served worker's requests wait: a pool's
    concurrency slots and its in-process workers' batch queues (or the one worker served).
    Each keeps the weights it was built with (pool.toml's `[tenant_weights]`) for the tenants
    the keys file gives no `weight`; `apply` is called at start and on every reload."""

    def __init__(self, worker: Worker) -> None:
        members = [worker, *worker.workers.values()] if isinstance(worker, Pool) else [worker]
        self._own: dict[int, tuple[Any, dict[str, float]]] = {}
        for member in members:
            own = getattr(member, "tenant_weights", None)
            if callable(getattr(member, "set_tenant_weights", None)) and isinstance(own, dict):
                self._own.setdefault(id(member), (member, dict(own)))

    def apply(self, keys: TenantKeys) -> None:
        given = keys.weights
        for member, own in self._own.values():
            member.set_tenant_weights({**own, **given})


def reload_on_sighup(
    keys: TenantKeys, quotas: Quotas | None, weights: TenantWeights | None = None
) -> Callable[[], None]:
    """Reread the keys file (and the tenants' quotas and weights) when the process gets SIGHUP;
    a bad file keeps the tenants as they were and is logged. Returns what takes the handler
    off again (serve calls it when it stops)."""
    import asyncio

    def reload() -> None:
        try:
            keys.reload()
        except Exception as exc:
            logger.error("keys file not reloaded, the old tenants stay: %s", exc)
            return
        if quotas is not None:
            quotas.set_limits(quotas_of(keys))
        if weights is not None:
            weights.apply(keys)
        logger.info("keys file reloaded: %d tenants", len(keys.tenants))

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, AttributeError):  # no SIGHUP here (Windows)
        logger.warning("SIGHUP is not available: the keys file is read once")
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)
