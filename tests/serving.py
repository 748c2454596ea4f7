"""A real `rolepool serve` on a free loopback port, for the HTTP tests."""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio

from rolepool.pools.server_run import bind, serve


@asynccontextmanager
async def running(worker, **kwargs):
    """`rolepool serve` over `worker` on a free loopback port; yields its base URL. Unless told
    otherwise it answers to the worker's name and to "tiny", the model name the tests' clients
    send (any other name is a 404)."""
    kwargs.setdefault("models", list(dict.fromkeys([worker.info.name, "tiny"])))
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(worker, sock=sock, ready=ready, log_level="warning", **kwargs))
        with anyio.fail_after(10):
            await ready.wait()
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()
