"""`OpenAIWorker`: a worker behind any OpenAI-compatible `/v1/chat/completions` server.

vLLM is the first target (`vllm serve MODEL --enable-auto-tool-choice --tool-call-parser ...`), and
rolepool's own `rolepool serve` speaks the same protocol. Servers disagree on tool calls: with a
tool parser they return `message.tool_calls`; without one the calls come back as text, which the
run loop parses like any in-process model's output. So `tool_calls` is set only when the server
returned well-formed calls, and anything doubtful is handed to the loop as text, where a broken
call becomes validation feedback for the model instead of an exception here.

`timeout` bounds one `complete()` call *including* its retries: a caller (the run loop, a pool's
breaker) gets an answer or a `WorkerError` within it, never a hang that retries multiply.

What is sent follows the worker's `RequestOptions` and tool mode (`openai_body`); what comes back
beyond text and calls (reasoning, cached tokens, vLLM's routed experts) is read by
`openai_reply`. With `stream=True`, or whenever the caller streams (`rolepool serve` answering a
`stream: true` client through this worker), the server is asked to stream: deltas go on to the
caller as they come, and the first one's arrival is the completion's `time_to_first_token`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import anyio
import httpx

from rolepool.core import (
    Completion,
    ConfigError,
    RateLimited,
    Request,
    RequestRefused,
    WorkerError,
    WorkerInfo,
)
from rolepool.core.messages import utf8_safe
from rolepool.pools.openai_body import RequestOptions, ToolMode, needs_text_mode, request_body
from rolepool.pools.openai_reply import (
    StreamedReply,
    ThinkFilter,
    cached_tokens,
    passed_expert_load,
    read_tool_calls,
    read_usage,
    reasoning_of,
    routed_expert_load,
    split_think,
    sse_data,
    unwrap_answer,
)
from rolepool.pools.openai_wire import redact
from rolepool.pools.streaming import TextSink, current_sink

logger = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REFUSED_STATUSES = frozenset({400, 413, 422})
_MAX_ERROR_CHARS = 500
_ARCHITECTURES = ("moe", "dense")
_HEADER_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ROLE_HEADER = "X-Rolepool-Role"


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix; `delay` is the server's Retry-After."""

    def __init__(self, message: str, delay: float | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.delay = delay
        self.status = status


class OpenAIWorker:
    """Asks an OpenAI-compatible server for chat completions.

    `base_url` may end in `/v1` or not. The API key comes from `api_key` or else the environment
    variable `api_key_env`; it is sent as a bearer token and never appears in an error.
    `structured_output=True` asks the server to constrain the reply with JSON-schema guided
    decoding (`response_format`): one of the request's tool calls or `{"answer": "..."}`.
    `tool_mode` says how tools travel (`openai_body`); `options` holds the per-server request
    options (pool.toml); without it, `tool_choice` (a string, or a table by role with an
    optional `default`) and `structured_output` make them. `num_experts` sizes the expert load
    read from vLLM's routed experts (the highest index seen, plus one, without it).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        name: str | None = None,
        architecture: Literal["moe", "dense", "unknown"] = "unknown",
        api_key: str | None = None,
        api_key_env: str = "ROLEPOOL_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        structured_output: bool = False,
        tool_choice: str | Mapping[str, str] | None = "auto",
        tool_mode: ToolMode = "auto",
        options: RequestOptions | None = None,
        stream: bool = False,
        num_experts: int | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError("must be a positive number of seconds", where="timeout")
        if max_retries < 0 or backoff < 0:
            raise ConfigError("max_retries and backoff must be 0 or more", where="retries")
        if tool_mode not in ("native", "text", "auto"):
            raise ConfigError(f"must be native, text or auto, not {tool_mode!r}", where="tool_mode")
        self.root = _root_url(base_url)
        self._info = WorkerInfo(name=name or model, model=model, architecture=architecture)
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env) or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        if options is None:  # the shorthands, for a worker built in code
            by_role = dict(tool_choice) if isinstance(tool_choice, Mapping) else {}
            default = by_role.pop("default", "auto") if by_role else tool_choice
            options = RequestOptions(
                tool_choice=default if isinstance(default, str) else None,
                role_tool_choice=by_role,
                structured_output=structured_output,
            )
        self.options = options
        self.tool_mode: ToolMode = tool_mode
        """The configured mode; `auto` becomes `text` (here and in `stats`) after vLLM's 400."""
        self.stream = stream
        self.num_experts = num_experts
        self._tool_mode_switches = 0
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        # httpx timeouts are per read/write/connect; the overall bound is `fail_after` below.
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0))
        )

    @property
    def structured_output(self) -> bool:
        return self.options.structured_output

    @structured_output.setter
    def structured_output(self, value: bool) -> None:
        self.options = dataclasses.replace(self.options, structured_output=value)

    @property
    def stats(self) -> dict[str, Any]:
        """For the pool's /metrics: the tool mode in use (1 for text) and how often `auto`
        switched to text."""
        return {
            "tool_mode_text": int(self.tool_mode == "text"),
            "tool_mode_switches": self._tool_mode_switches,
        }

    @property
    def info(self) -> WorkerInfo:
        return self._info

    def __repr__(self) -> str:
        return f"OpenAIWorker({self.root!r}, model={self._info.model!r}, name={self._info.name!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OpenAIWorker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> bool:
        """`/health` (vLLM, rolepool serve); servers without it are asked for `/v1/models`."""
        try:
            with anyio.fail_after(min(self.timeout, 10.0)):
                response = await self._client.get(self.root + "/health")
                if response.status_code == 404:
                    response = await self._client.get(self.root + "/v1/models")
        except Exception:  # unreachable, refused, timed out: all mean "not healthy"
            return False
        return response.status_code == 200

    async def complete(self, request: Request) -> Completion:
        """One completion, retried on 429/5xx, connection errors and timeouts within `timeout`."""
        started = time.perf_counter()
        # The role travels in a header: every server ignores unknown headers, while some refuse
        # unknown body fields. `rolepool serve` routes and counts by it.
        role = request.role or ""
        headers = {ROLE_HEADER: role} if _HEADER_SAFE.match(role) else {}
        first_at: float | None = None
        try:
            with anyio.fail_after(self.timeout):
                data, first_at = await self._ask(request, headers)
            completion = self._completion(data, tools=bool(request.tools))
        except _Unreadable as exc:  # the loop refuses it and tells the model
            info = self._info
            completion = Completion(
                worker=info.name,
                model=info.model,
                architecture=info.architecture,
                unreadable=str(exc),
            )
        except TimeoutError:
            raise self._error(f"no answer within timeout={self.timeout:g}s") from None
        except (WorkerError, RequestRefused):
            raise
        except Exception as exc:  # the contract: every failure is a WorkerError naming us
            raise self._error(f"{type(exc).__name__}: {exc}") from exc
        completion.latency = time.perf_counter() - started
        if first_at is not None:
            completion.time_to_first_token = first_at - started
        return completion

    async def _ask(
        self, request: Request, headers: dict[str, str]
    ) -> tuple[dict[str, Any], float | None]:
        """The server's answer in the current tool mode; in `auto` mode, vLLM's 400 for tools
        without a tool parser switches this worker to text mode for good, and the request is
        asked again that way."""
        try:
            return await self._post_with_retries(self._body(request), headers)
        except RequestRefused as exc:
            if not (self.tool_mode == "auto" and request.tools and needs_text_mode(str(exc))):
                raise
        self.tool_mode = "text"
        self._tool_mode_switches += 1
        logger.warning(
            "worker %r: the server does not parse tool calls (HTTP 400 for tools with "
            "tool_choice auto); tool_mode auto switches to text: tools are sent with "
            "tool_choice 'none' and calls are read from the text",
            self._info.name,
        )
        return await self._post_with_retries(self._body(request), headers)

    # -- request -----------------------------------------------------------------------------

    def _body(self, request: Request) -> dict[str, Any]:
        text_mode = self.tool_mode == "text"
        return request_body(request, self._info.model, self.options, text_mode=text_mode)

    async def _post_with_retries(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[dict[str, Any], float | None]:
        """The answer and when its first token arrived (streamed answers only)."""
        url = self.root + "/v1/chat/completions"
        sink = current_sink()
        if self.stream or sink is not None:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        for attempt in range(self.max_retries + 1):
            try:
                if body.get("stream"):
                    return await self._stream_once(url, body, headers, sink)
                return await self._post_once(url, body, headers), None
            except _Retryable as exc:
                if attempt == self.max_retries and exc.status == 429:  # busy, not broken
                    message = self._redact(f"{exc} (after {attempt + 1} attempts)")
                    raise RateLimited(
                        message, worker=self._info.name, retry_after=exc.delay
                    ) from None
                if attempt == self.max_retries:
                    raise self._error(f"{exc} (after {attempt + 1} attempts)") from None
                delay = self.backoff * 2**attempt
                await anyio.sleep(max(delay, exc.delay or 0.0))
        raise AssertionError("unreachable")

    async def _post_once(
        self, url: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        try:
            response = await self._client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        self._check_status(response)
        try:
            data = response.json()
        except RecursionError:
            raise _Unreadable(
                "the reply nests JSON past what can be decoded (a call's arguments, most likely)"
            ) from None
        except ValueError:
            raise self._error(f"response is not JSON: {response.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise self._error("response is not a JSON object")
        return data

    async def _stream_once(
        self, url: str, body: dict[str, Any], headers: dict[str, str], sink: TextSink | None
    ) -> tuple[dict[str, Any], float | None]:
        """One streamed answer, its deltas passed on to `sink`. A failure before the first delta
        may be retried; after it, the caller has seen part of this answer, so it may not."""
        reply, think = StreamedReply(), ThinkFilter()
        try:
            async with self._client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._check_status(response)
                async for line in response.aiter_lines():
                    chunk = sse_data(line)
                    if chunk is None:
                        continue
                    if isinstance(chunk.get("error"), dict | str) and not chunk.get("choices"):
                        raise self._error(f"error in the stream: {_error_text(chunk['error'])}")
                    content, reasoning = reply.add(chunk)
                    if sink is not None:
                        content, thought = think.feed(content)
                        sink.feed(content)
                        sink.feed_reasoning(reasoning + thought)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            if reply.first_at is not None:
                raise self._error(f"the stream broke off ({type(exc).__name__})") from None
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        return reply.response(), reply.first_at

    def _check_status(self, response: httpx.Response) -> None:
        if response.status_code in _RETRY_STATUSES or response.status_code >= 500:
            message = f"HTTP {response.status_code}: {self._server_message(response)}"
            raise _Retryable(message, _retry_after(response), response.status_code)
        if response.status_code in _REFUSED_STATUSES:  # the request, not the server, is at fault
            message = f"HTTP {response.status_code}: {self._server_message(response)}"
            raise RequestRefused(self._redact(message), worker=self._info.name)
        if response.status_code != 200:
            raise self._error(f"HTTP {response.status_code}: {self._server_message(response)}")

    # -- response ----------------------------------------------------------------------------

    def _completion(self, data: dict[str, Any], *, tools: bool) -> Completion:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error("response has no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self._error("response choice has no message")
        content = message.get("content")
        reasoning, text = split_think(content if isinstance(content, str) else "")
        reasoning = reasoning_of(message) or reasoning  # never handed to the call parser
        calls, text = read_tool_calls(message.get("tool_calls"), text)
        if self.structured_output and tools and calls is None:
            text = unwrap_answer(text)
        text = utf8_safe(text)  # a `\ud800` escape must not reach the event store or a parser
        extra = data.get("rolepool") if isinstance(data.get("rolepool"), dict) else {}
        architecture = self._info.architecture
        if architecture == "unknown" and extra.get("architecture") in _ARCHITECTURES:
            architecture = extra["architecture"]
        finish = choices[0].get("finish_reason")
        load = passed_expert_load(extra.get("expert_load"))
        if load is None:
            load = routed_expert_load(data, choices[0], self.num_experts)
        return Completion(
            text=text,
            tool_calls=calls,
            usage=read_usage(data.get("usage")),
            worker=self._info.name,
            model=self._info.model,
            architecture=architecture,
            expert_load=load,
            policy_version=_str_or_none(extra.get("policy_version")),
            finish_reason=finish if isinstance(finish, str) else None,
            reasoning=utf8_safe(reasoning) if reasoning else None,
            response_id=_str_or_none(data.get("id")),
            cached_prompt_tokens=cached_tokens(data.get("usage")),
        )

    def _server_message(self, response: httpx.Response) -> str:
        """The server's own error message (OpenAI, vLLM or plain shapes), short and redacted."""
        try:
            data = response.json()
        except ValueError:
            data = None
        message: Any = response.text
        if isinstance(data, dict):
            error = data.get("error", data)
            if isinstance(error, dict):
                message = error.get("message") or error.get("detail") or json.dumps(error)
            else:
                message = error
        message = str(message).strip() or response.reason_phrase
        return self._redact(message[:_MAX_ERROR_CHARS])

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def _error(self, message: str) -> WorkerError:
        return WorkerError(self._redact(message), worker=self._info.name)


def _root_url(base_url: str) -> str:
    root = base_url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    if not root.startswith(("http://", "https://")):
        raise ConfigError(
            f"must start with http:// or https://, got {base_url!r}", where="base_url"
        )
    return root


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class _Unreadable(Exception):
    """A chat completion nested past the JSON parser's stack. Only model output nests like that
    (a call's arguments), so it is bad model output, not a worker fault."""


def _error_text(error: Any) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:_MAX_ERROR_CHARS]


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
