"""`rolepool serve`: an OpenAI-compatible HTTP server over any `Worker` (a `Pool` is one too).

Why Starlette + uvicorn: Starlette is a small, typed, well-kept ASGI toolkit built on anyio, the
same concurrency library as the rest of rolepool, so a request handler can use cancel scopes and
task groups directly (we cancel the worker call when the client hangs up). uvicorn is the most used
ASGI server; it runs on asyncio, which is where the rest of rolepool runs too. Heavier frameworks
(FastAPI) would add a dependency for request models we already write with pydantic.

Wire format (`openai_wire`): `POST /v1/chat/completions` takes the OpenAI request (text content,
tools, tool results, sampling); the answer is the OpenAI `chat.completion` object, or with
`stream: true` server-sent `chat.completion.chunk` events as tokens are decoded (`openai_stream`).
Calls the model wrote as text are returned as `message.tool_calls` with `finish_reason:
"tool_calls"`, as vLLM does with a tool parser, so OpenAI clients need no rolepool-specific
parsing. A `rolepool` field on the answer carries the audit trail (worker, architecture, policy
version, expert load).

Security: binds loopback by default; with an API key, every path but `/health` needs
`Authorization: Bearer <key>` (compared in constant time); bodies over `max_body_bytes` get 413;
error bodies never carry tracebacks or the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
import traceback
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rolepool.core import (
    Completion,
    Decoding,
    QuotaExceeded,
    Request,
    RequestRefused,
    RolepoolError,
    UserError,
    WorkerError,
)
from rolepool.pools.openai_options import DECODING_REFUSAL, decoding_param
from rolepool.pools.openai_stream import ChatStream
from rolepool.pools.openai_wire import (
    ApiError,
    ChatRequest,
    chat_completion,
    dumps_utf8,
    redact,
    to_request,
)
from rolepool.pools.pool import Pool
from rolepool.pools.quotas import Quotas, within_quota
from rolepool.pools.server_metrics import CONTENT_TYPE, ServerMetrics
from rolepool.pools.server_protocol import READ_TIMEOUT, protocol_with_read_timeout
from rolepool.pools.server_tenants import (
    TenantMetrics,
    metrics_for,
    quota_headers,
    reload_on_sighup,
    request_tenant,
    with_tenant,
)
from rolepool.pools.tenants import TenantKeys
from rolepool.pools.worker import Worker

logger = logging.getLogger(__name__)

ROLE_HEADER = "x-rolepool-role"
_HEALTH_TIMEOUT = 10.0
_HEALTH_PATHS = ("/health", "/health/live", "/health/ready")  # no key needed


class _JSONResponse(JSONResponse):
    """Starlette's JSON answer, except that text UTF-8 cannot encode (lone surrogates from a
    model or a client) becomes U+FFFD instead of failing the answer with a 500."""

    def render(self, content: Any) -> bytes:
        compact = dumps_utf8(content, allow_nan=False, separators=(",", ":"))
        return compact.encode("utf-8")


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> _JSONResponse:
    return _JSONResponse(error_body(message, type_, param, code), status_code=status)


class _Guard:
    """Refuses requests before they reach a route: missing/wrong bearer token (401) and
    declared bodies over the limit (413). Undeclared (chunked) bodies are counted as read."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        metrics: ServerMetrics,
        tenants: TenantKeys | None = None,
    ) -> None:
        self.app = app
        self.tenants = tenants
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        checked = scope["path"] not in _HEALTH_PATHS
        if checked and self.tenants is not None:  # a keys file: the key names the tenant
            tenant = self.tenants.identify(headers.get(b"authorization", b""))
            scope.setdefault("state", {})["tenant"] = tenant
        if checked and (self.expected is not None or self.tenants is not None):
            given = headers.get(b"authorization", b"")
            known = scope.get("state", {}).get("tenant") is not None
            if not (known or secrets.compare_digest(given, self.expected or b"\0")):
                logger.info("request refused: no valid API key")  # nothing about the key
                self.metrics.rejected.labels(reason="unauthorized").inc()
                message = "missing or wrong API key: send 'Authorization: Bearer <key>'"
                response = _error(401, message, "authentication_error")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            self.metrics.rejected.labels(reason="too_large").inc()
            await _too_large(self.max_body_bytes)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _too_large(limit: int) -> _JSONResponse:
    return _error(413, f"request body is larger than {limit} bytes", "invalid_request_error")


class _Service:
    """The routes' shared state: the worker, limits, metrics."""

    def __init__(
        self,
        worker: Worker,
        *,
        api_key: str | None,
        max_body_bytes: int,
        models: list[str] | None,
        request_timeout: float | None,
        quotas: Quotas | None = None,
    ) -> None:
        self.worker = worker
        self.quotas = quotas
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.pool_workers = set(worker.workers) if isinstance(worker, Pool) else set()
        listed = models or list(getattr(worker, "workers", None) or [worker.info.name])
        # A pool answers to its own name too (routed by its policy), listed first.
        self.models = list(
            dict.fromkeys([worker.info.name, *listed] if self.pool_workers else listed)
        )
        self.request_timeout = request_timeout
        self.metrics = ServerMetrics(worker)
        self.tenant_metrics = TenantMetrics(self.metrics.registry)

    async def chat(self, http: HTTPRequest) -> Response:
        started = time.perf_counter()
        role = "none"
        tenant = request_tenant(http.state)
        try:
            chat = ChatRequest.parse(await self._read_json(http))
            request = to_request(chat, http.headers.get(ROLE_HEADER))
            with_tenant(request, tenant)
            request.worker = self._pinned_worker(chat.model)
            role = self.metrics.role_label(request.role)
            if chat.stream:
                return self._stream(chat, request, role, started)
            self.metrics.in_flight.inc()
            try:
                completion = await self._complete(http, request)
            finally:
                self.metrics.in_flight.dec()
            served_by = completion.worker or self.worker.info.name
            body = chat_completion(
                completion, served_by, parse_calls=chat.parse_calls, max_calls=chat.max_calls
            )
        except ApiError as exc:
            self.tenant_metrics.refused(tenant.name if tenant else None, exc.status_label)
            return self._refuse(exc, role, started)
        self._count_served(completion, role, started)
        self.tenant_metrics.served(request.tenant, completion)
        return _JSONResponse(body)

    def _stream(self, chat: ChatRequest, request: Request, role: str, started: float) -> Response:
        """A `stream: true` answer: tokens leave as they are made (`openai_stream`)."""

        async def ask() -> Completion:
            with anyio.fail_after(self.request_timeout):
                return await within_quota(
                    self.quotas, request, lambda: self.worker.complete(request)
                )

        def ended(outcome: Completion | ApiError | None, first_token: float | None) -> None:
            self.metrics.in_flight.dec()
            if isinstance(outcome, Completion):
                self.tenant_metrics.served(request.tenant, outcome)
            elif isinstance(outcome, ApiError):
                self.tenant_metrics.refused(request.tenant, outcome.status_label)
            if first_token is not None:
                self.metrics.time_to_first_token.labels(role=role).observe(first_token)
            if isinstance(outcome, Completion):
                self._count_served(outcome, role, started)
            elif isinstance(outcome, ApiError):
                self._refuse(outcome, role, started)
            else:
                self._count(self.worker.info.name, role, "client_closed", started)

        self.metrics.in_flight.inc()
        return ChatStream(
            chat=chat,
            request=request,
            model=request.worker or self.worker.info.name,
            ask=ask,
            failure=lambda exc: self._failure(exc, request.decoding),
            error_response=self._error_answer,
            ended=ended,
        )

    def _refuse(self, exc: ApiError, role: str, started: float) -> Response:
        """Count a request that ended in an error answer, and that answer."""
        default_worker = self.worker.info.name
        if exc.status != 413:  # counted as rejected, like a declared size over the limit
            self._count(default_worker, role, exc.status_label, started)
        if exc.worker_failure:
            worker = exc.worker or default_worker
            self.metrics.failures.labels(worker=worker, kind=exc.type).inc()
        return self._error_answer(exc)

    def _error_answer(self, exc: ApiError) -> Response:
        answer = _error(exc.status, self._redact(exc.message), exc.type, exc.param, exc.code)
        answer.headers.update(exc.headers)
        return answer

    def _count_served(self, completion: Completion, role: str, started: float) -> None:
        served_by = completion.worker or self.worker.info.name
        self._count(served_by, role, "ok", started)
        for kind in ("prompt", "completion"):
            tokens = getattr(completion.usage, f"{kind}_tokens")
            self.metrics.tokens.labels(worker=served_by, kind=kind).inc(max(0, tokens))

    def _pinned_worker(self, model: str | None) -> str | None:
        """The pool worker a request's `model` names (served by it alone), or None to route by
        policy: no model, the pool's own name, or a listed alias. Any other name is a 404, as the
        OpenAI API answers, rather than a reply from some other model labelled as the one asked
        for."""
        if model in self.pool_workers:
            return model
        if model is None or model in self.models:
            return None
        listed = ", ".join(self.models)
        message = f"model {model!r} does not exist here; GET /v1/models lists: {listed}"
        raise ApiError(404, message, param="model", code="model_not_found")

    async def _read_json(self, http: HTTPRequest) -> Any:
        """The body, counted as it streams in (chunked bodies have no Content-Length to check)."""
        chunks, size = [], 0
        try:
            async for chunk in http.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    self.metrics.rejected.labels(reason="too_large").inc()
                    raise ApiError(413, f"request body is larger than {self.max_body_bytes} bytes")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(499, "client closed the request", "client_closed") from None
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:  # `[[[[...` fits in a small body and exhausts the parser's stack
            raise ApiError(400, "request body is not valid JSON: nested too deeply") from None

    async def _complete(self, http: HTTPRequest, request: Request) -> Completion:
        """Ask the worker; stop asking when the client hangs up or the request timeout passes."""
        outcome: list[Completion | Exception] = []

        async def ask(scope: anyio.CancelScope) -> None:
            try:
                ask = lambda: self.worker.complete(request)  # noqa: E731
                outcome.append(await within_quota(self.quotas, request, ask))
            except Exception as exc:  # kept whole: a task group would wrap it in a group
                outcome.append(exc)
            scope.cancel()

        try:
            with anyio.fail_after(self.request_timeout):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask, tg.cancel_scope)
                    await _until_disconnected(http)
                    tg.cancel_scope.cancel()
        except TimeoutError as exc:
            outcome.append(exc)
        if not outcome:
            raise ApiError(499, "client closed the request", "client_closed")
        if isinstance(outcome[0], Exception):
            raise self._failure(outcome[0], request.decoding)
        return outcome[0]

    def _failure(self, exc: Exception, decoding: Decoding) -> ApiError:
        """The answer for a failed worker call: typed errors keep their message, others don't."""
        name = self.worker.info.name
        if isinstance(exc, TimeoutError):
            message = f"worker {name!r}: no completion within {self.request_timeout:g}s"
            return ApiError(504, message, "timeout", worker=name, worker_failure=True)
        if isinstance(exc, QuotaExceeded):
            headers = quota_headers(exc)
            return ApiError(429, str(exc), "rate_limit_exceeded", code=exc.quota, headers=headers)
        if isinstance(exc, UserError | RequestRefused):
            # a worker that cannot constrain decoding names the field that asked for it
            param = decoding_param(decoding) if DECODING_REFUSAL in str(exc) else None
            return ApiError(400, str(exc), param=param)
        if isinstance(exc, RolepoolError):
            worker = (exc.worker if isinstance(exc, WorkerError) else None) or name
            return ApiError(502, str(exc), "worker_error", worker=worker, worker_failure=True)
        _log_failure(f"worker {name!r} failed on a chat completion", exc, self.api_key)
        message = "internal error (logged on the server)"
        return ApiError(500, message, "internal_error", worker=name, worker_failure=True)

    def _count(self, worker: str, role: str, status: str, started: float) -> None:
        self.metrics.requests.labels(worker=worker, role=role, status=status).inc()
        self.metrics.latency.labels(worker=worker, role=role).observe(time.perf_counter() - started)

    def _redact(self, text: str) -> str:
        return redact(text, self.api_key)

    async def list_models(self, http: HTTPRequest) -> Response:
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "rolepool"}
            for m in self.models
        ]
        return _JSONResponse({"object": "list", "data": data})

    async def health(self, http: HTTPRequest) -> Response:
        try:
            with anyio.fail_after(_HEALTH_TIMEOUT):
                healthy = bool(await self.worker.health())
        except Exception as exc:
            _log_failure(f"health check of {self.worker.info.name!r} failed", exc, self.api_key)
            healthy = False
        status = 200 if healthy else 503
        return _JSONResponse({"status": "ok" if healthy else "unavailable"}, status_code=status)

    async def prometheus(self, http: HTTPRequest) -> Response:
        text = metrics_for(self.metrics.render(), request_tenant(http.state))
        return Response(text, media_type=CONTENT_TYPE)

    async def live(self, http: HTTPRequest) -> Response:
        """The process answers: nothing is asked of the workers."""
        return _JSONResponse({"status": "ok"})


async def _until_disconnected(http: HTTPRequest) -> None:
    """Returns when the client hangs up (the body has been read, so only that can arrive)."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(
    worker: Worker,
    *,
    api_key: str | None = None,
    max_body_bytes: int = 1_000_000,
    models: list[str] | None = None,
    request_timeout: float | None = 600.0,
    tenants: TenantKeys | None = None,
    quotas: Quotas | None = None,
) -> Starlette:
    """The ASGI app. `app.state.metrics` (a `ServerMetrics`) is there for code that reads the
    counters directly; `request_timeout` bounds one worker call (504 past it). `tenants` (a
    keys file) makes every key a tenant's, held to `quotas` (`server_tenants`)."""
    service = _Service(
        worker,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        models=models,
        request_timeout=request_timeout,
        quotas=quotas,
    )
    routes = [
        Route("/v1/chat/completions", service.chat, methods=["POST"]),
        Route("/v1/models", service.list_models, methods=["GET"]),
        Route("/health", service.health, methods=["GET"]),
        Route("/health/live", service.live, methods=["GET"]),
        Route("/health/ready", service.health, methods=["GET"]),
        Route("/metrics", service.prometheus, methods=["GET"]),
    ]
    guard = Middleware(
        _Guard,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        metrics=service.metrics,
        tenants=tenants,
    )
    app = Starlette(
        routes=routes,
        middleware=[guard],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.service = service
    app.state.metrics = service.metrics
    return app


async def _http_error(http: HTTPRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), "invalid_request_error")


async def _internal_error(http: HTTPRequest, exc: Exception) -> Response:
    service = getattr(http.app.state, "service", None)
    _log_failure(f"unhandled error on {http.url.path}", exc, getattr(service, "api_key", None))
    return _error(500, "internal error (logged on the server)", "internal_error")


def _log_failure(message: str, exc: BaseException, secret: str | None) -> None:
    """Log `exc` with its traceback for the operator, with the API key blanked: a worker's
    error text may quote the key (an upstream echoing its Authorization header), and logs are
    read and shipped by more people than hold the key."""
    detail = "".join(traceback.format_exception(exc)).rstrip()
    logger.error("%s\n%s", message, redact(detail, secret))


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
    if tenants is not None:
        reload_on_sighup(tenants, quotas)
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
