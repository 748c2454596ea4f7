"""Running `rolepool serve`'s app: a listening socket (`bind`) and uvicorn with the read-deadline
protocol (`serve`), shut down gracefully when cancelled. The app itself is `server.create_app`.

Why uvicorn's own asyncio calls here (`asyncio.ensure_future`, `shield`, `wait`): uvicorn's
`Server.serve` is an asyncio coroutine with its own shutdown flags, so the task that runs it is
driven the way uvicorn expects; the rest of rolepool stays on anyio (docs/design-notes.md).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import anyio

from rolepool.core import UserError
from rolepool.pools.quotas import Quotas
from rolepool.pools.server import create_app
from rolepool.pools.server_protocol import READ_TIMEOUT, protocol_with_read_timeout
from rolepool.pools.server_tenants import TenantWeights, reload_on_sighup
from rolepool.pools.tenants import TenantKeys
from rolepool.pools.worker import Worker


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening-ready socket; port 0 picks a free port (read it from `getsockname()`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def serve(
    worker: Worker,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    ready: anyio.Event | None = None,
    sock: socket.socket | None = None,
    models: list[str] | None = None,
    max_body_bytes: int = 1_000_000,
    request_timeout: float | None = 600.0,
    log_level: str = "info",
    graceful_timeout: float = 5.0,
    read_timeout: float = READ_TIMEOUT,
    max_connections: int = 1024,
    tenants: TenantKeys | None = None,
    quotas: Quotas | None = None,
) -> None:
    """Serve until cancelled (or SIGINT/SIGTERM); `ready` is set once connections are accepted.

    A client has `read_timeout` seconds to send each whole request (slow or idle connections
    are closed: see `server_protocol`); past `max_connections` open connections, requests get
    503 at once instead of piling up.

    Pass `sock` (from `bind(host, 0)`) to serve on a port chosen by the OS. Cancelling this
    coroutine shuts the server down: in-flight requests get `graceful_timeout` seconds.

    With `tenants`, their weights go to the worker (a pool's slots and its in-process workers'
    queues) now and again whenever SIGHUP rereads the keys file, with their quotas.
    """
    import uvicorn  # imported here so the SDK does not pay for it

    app = create_app(
        worker,
        api_key=api_key,
        models=models,
        max_body_bytes=max_body_bytes,
        request_timeout=request_timeout,
        tenants=tenants,
        quotas=quotas,
    )
    sock = sock or bind(host, port)
    config = uvicorn.Config(
        app,
        http=protocol_with_read_timeout(read_timeout),
        limit_concurrency=max_connections,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(graceful_timeout)),
    )
    server = uvicorn.Server(config)
    stop_reloading: Callable[[], None] | None = None
    if tenants is not None:
        weights = TenantWeights(worker)
        weights.apply(tenants)
        stop_reloading = reload_on_sighup(tenants, quotas, weights)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not (server.started or task.done()):
            await anyio.sleep(0.01)
        if server.started and ready is not None:
            ready.set()
        await asyncio.shield(task)
    finally:
        with anyio.CancelScope(shield=True):
            if not task.done():
                server.should_exit = True
                await asyncio.wait({task}, timeout=graceful_timeout + 5)
            if not task.done():
                server.force_exit = True
                task.cancel()
                await asyncio.wait({task}, timeout=1)
        sock.close()
        if stop_reloading is not None:
            stop_reloading()
