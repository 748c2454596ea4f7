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

import json
import logging
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import Route

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
    redact,
    to_request,
)
from rolepool.pools.pool import Pool
from rolepool.pools.quotas import Quotas, within_quota
from rolepool.pools.server_guard import (
    Guard,
    JSONAnswer,
    error_response,
    http_error,
    internal_error,
    log_failure,
)
from rolepool.pools.server_metrics import CONTENT_TYPE, ServerMetrics
from rolepool.pools.server_tenants import (
    TenantMetrics,
    metrics_for,
    quota_headers,
    request_tenant,
    with_tenant,
)
from rolepool.pools.tenants import TenantKeys
from rolepool.pools.worker import Worker

logger = logging.getLogger(__name__)

ROLE_HEADER = "x-rolepool-role"
_HEALTH_TIMEOUT = 10.0


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
        names = list(worker.workers) if isinstance(worker, Pool) else []
        self.pool_workers = set(names)
        listed = models or names or [worker.info.name]
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
        return JSONAnswer(body)

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
        answer = error_response(
            exc.status, self._redact(exc.message), exc.type, exc.param, exc.code
        )
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
        log_failure(f"worker {name!r} failed on a chat completion", exc, self.api_key)
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
        return JSONAnswer({"object": "list", "data": data})

    async def health(self, http: HTTPRequest) -> Response:
        try:
            with anyio.fail_after(_HEALTH_TIMEOUT):
                healthy = bool(await self.worker.health())
        except Exception as exc:
            log_failure(f"health check of {self.worker.info.name!r} failed", exc, self.api_key)
            healthy = False
        status = 200 if healthy else 503
        return JSONAnswer({"status": "ok" if healthy else "unavailable"}, status_code=status)

    async def prometheus(self, http: HTTPRequest) -> Response:
        text = metrics_for(self.metrics.render(), request_tenant(http.state))
        return Response(text, media_type=CONTENT_TYPE)

    async def live(self, http: HTTPRequest) -> Response:
        """The process answers: nothing is asked of the workers."""
        return JSONAnswer({"status": "ok"})


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
        Guard,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        metrics=service.metrics,
        tenants=tenants,
    )
    app = Starlette(
        routes=routes,
        middleware=[guard],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.service = service
    app.state.metrics = service.metrics
    return app
