"""The HTTP edge of `rolepool serve`: what is refused before a route runs (a missing or wrong
key: 401; a declared body over the limit: 413), and how every error answer is written (OpenAI's
error object, UTF-8 safe, never a traceback or the key; failures logged with the key blanked).
Kept apart from the routes (`server.py`), which use the same answers.
"""

from __future__ import annotations

import logging
import secrets
import traceback
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from rolepool.pools.openai_wire import dumps_utf8, redact
from rolepool.pools.server_metrics import ServerMetrics
from rolepool.pools.tenants import TenantKeys

logger = logging.getLogger("rolepool.pools.server")  # one logger for serve's records

HEALTH_PATHS = ("/health", "/health/live", "/health/ready")  # no key needed


class JSONAnswer(JSONResponse):
    """Starlette's JSON answer, except that text UTF-8 cannot encode (lone surrogates from a
    model or a client) becomes U+FFFD instead of failing the answer with a 500."""

    def render(self, content: Any) -> bytes:
        compact = dumps_utf8(content, allow_nan=False, separators=(",", ":"))
        return compact.encode("utf-8")


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> JSONAnswer:
    return JSONAnswer(error_body(message, type_, param, code), status_code=status)


class Guard:
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
        checked = scope["path"] not in HEALTH_PATHS
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
                response = error_response(401, message, "authentication_error")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            self.metrics.rejected.labels(reason="too_large").inc()
            await too_large(self.max_body_bytes)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def too_large(limit: int) -> JSONAnswer:
    return error_response(
        413, f"request body is larger than {limit} bytes", "invalid_request_error"
    )


async def http_error(http: HTTPRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), "invalid_request_error")


async def internal_error(http: HTTPRequest, exc: Exception) -> Response:
    service = getattr(http.app.state, "service", None)
    log_failure(f"unhandled error on {http.url.path}", exc, getattr(service, "api_key", None))
    return error_response(500, "internal error (logged on the server)", "internal_error")


def log_failure(message: str, exc: BaseException, secret: str | None) -> None:
    """Log `exc` with its traceback for the operator, with the API key blanked: a worker's
    error text may quote the key (an upstream echoing its Authorization header), and logs are
    read and shipped by more people than hold the key."""
    detail = "".join(traceback.format_exception(exc)).rstrip()
    logger.error("%s\n%s", message, redact(detail, secret))
