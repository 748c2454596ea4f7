"""`rolepool serve`: the command that puts local models behind the OpenAI-compatible server.

Kept out of `rolepool/cli.py` so the CLI module stays thin and does not import the server stack
(starlette, uvicorn, torch) for commands that never serve.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import anyio

from rolepool.cli_args import TEXT_FILE, Int, OutputFile
from rolepool.core import UserError

DEFAULT_KEY_ENV = "ROLEPOOL_SERVE_API_KEY"


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `serve` on the `rolepool` command's subparsers."""
    parser = subparsers.add_parser(
        "serve",
        help="serve models over an OpenAI-compatible HTTP API",
        description="Serve local models over an OpenAI-compatible API (/v1/chat/completions, "
        "/v1/models, /health, /metrics). Binds 127.0.0.1 unless told otherwise.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=Int(0, 65535), default=8000, help="port to bind (default 8000; 0: any free)"
    )
    parser.add_argument(
        "--api-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the bearer token clients must send "
        f"(default {DEFAULT_KEY_ENV}; unset or empty = no token required)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="DIR",
        help="a transformers model directory (or a shipped reference model's name) to serve; "
        "repeat for several: the first answers and the others are its fallbacks, in order. "
        "With neither --model nor --pool, the default pool of shipped reference models",
    )
    parser.add_argument(
        "--pool",
        type=TEXT_FILE,
        metavar="FILE",
        help="a pool.toml describing workers and routing policy (see docs/pool-config.md)",
    )
    parser.add_argument(
        "--keys",
        type=TEXT_FILE,
        metavar="FILE",
        help="a keys file of tenants (name, key_sha256, priority, weight, quotas; see "
        "docs/pool-config.md): every request needs a tenant's key; reread on SIGHUP",
    )
    parser.add_argument(
        "--quota-db",
        type=OutputFile(),
        metavar="FILE",
        help="SQLite file keeping the tenants' daily token totals across restarts "
        "(default: quotas.sqlite beside the keys file)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(handler=cmd_serve)
    return parser


def cmd_serve(args: argparse.Namespace, out: Any) -> int:
    """Load the workers, then serve until Ctrl-C. Bad input is a `UserError` (exit code 2)."""
    if args.pool and args.model:
        raise UserError("give --pool or --model, not both")
    api_key = os.environ.get(args.api_key_env) or None
    if args.pool:
        from rolepool.pools.config import build_pool

        worker = build_pool(args.pool)
        workers = list(worker.workers.values())
    elif args.model:
        workers = _load_workers(args.model)
        worker = workers[0] if len(workers) == 1 else _fallback_pool(workers)
    else:  # the shipped reference models, one MoE and one dense
        from rolepool.pools.default import default_pool

        worker = default_pool()
        workers = list(worker.workers.values())
    from rolepool.pools.server_run import bind

    sock = bind(args.host, args.port)  # before loading: a taken port fails fast
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    token = f"bearer token from ${args.api_key_env}" if api_key else "no token required"
    names = ", ".join(w.info.name for w in workers)
    banner = f"serving {names} on http://{shown}:{port}/v1 ({token})"
    if host not in ("127.0.0.1", "::1") and not api_key:
        banner += f"\n[yellow]warning:[/] listening on {host} with no API key"
    tenancy = _tenancy(args.keys, args.quota_db)
    if tenancy[0] is not None:
        banner += f" with {len(tenancy[0].tenants)} tenants from {args.keys}"
    run = _serve_and_close
    anyio.run(run, worker, workers, sock, api_key, args.log_level, banner, out, tenancy)
    return 0


def _tenancy(keys: str | None, quota_db: str | None) -> tuple[Any, Any]:
    """The tenants of `--keys` and their quotas (daily totals in `--quota-db`), or (None, None)."""
    if keys is None:
        if quota_db is not None:
            raise UserError("--quota-db needs --keys")
        return None, None
    from pathlib import Path

    from rolepool.pools.quotas import Quotas
    from rolepool.pools.server_tenants import quotas_of
    from rolepool.pools.tenants import TenantKeys

    tenants = TenantKeys.load(keys)
    path = quota_db or Path(keys).with_name("quotas.sqlite")
    return tenants, Quotas(quotas_of(tenants), path=path)


def _load_workers(model_dirs: list[str]) -> list[Any]:
    from rolepool.pools.transformers_worker import TransformersWorker

    workers = [TransformersWorker(path) for path in model_dirs]
    names = [w.info.name for w in workers]
    if len(set(names)) != len(names):
        raise UserError(f"two models have the same name: {names}")
    return workers


def _fallback_pool(workers: list[Any]) -> Any:
    """Several models: the first serves every role, the rest take over in order when it fails.
    Finer routing (roles, canary weights) is what `pool.toml` is for."""
    from rolepool.pools.policy import Choice, Route, RoutingPolicy
    from rolepool.pools.pool import Pool

    names = [w.info.name for w in workers]
    route = Route(choices=[Choice(worker=names[0])], fallbacks=names[1:])
    return Pool(dict(zip(names, workers, strict=True)), RoutingPolicy(version="cli", default=route))


async def _serve_and_close(
    worker: Any,
    workers: list[Any],
    sock: Any,
    api_key: str | None,
    log_level: str,
    banner: str,
    out: Any,
    tenancy: tuple[Any, Any] = (None, None),
) -> None:
    """Load the weights before accepting requests, so the first one is not slow and /health
    means ready; close the workers (and their batching loops) however serving ends."""
    from rolepool.pools.server_run import serve

    names = [w.info.name for w in workers]
    ready = anyio.Event()
    try:
        for member in workers:
            load = getattr(member, "load", None)
            if load is not None:
                await load()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve(
                    worker,
                    sock=sock,
                    api_key=api_key,
                    models=names,
                    log_level=log_level,
                    ready=ready,
                    tenants=tenancy[0],
                    quotas=tenancy[1],
                )
            )
            await ready.wait()
            out.print(banner, highlight=False)
    finally:
        close = getattr(worker, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
