"""`OpenAIWorker`: a worker behind any OpenAI-compatible `/v1/chat/completions` server.

vLLM is the first target (`vllm serve MODEL --enable-auto-tool-choice --tool-call-parser ...`), and
rolepool's own `rolepool serve` speaks the same protocol. Servers disagree on tool calls: with a
tool parser they return `message.tool_calls`; without one the calls come back as text, which the
run loop parses like any in-process model's output. So `tool_calls` is set only when the server
returned well-formed calls, and anything doubtful is handed to the loop as text, where a broken
call becomes validation feedback for the model instead of an exception here.

`timeout` bounds one `complete()` call *including* its retries: a caller (the run loop, a pool's
breaker) gets an answer or a `WorkerError` within it, never a hang that retries multiply.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from typing import Any, Literal

import anyio
import httpx

from rolepool.core import (
    Completion,
    ConfigError,
    Request,
    RequestRefused,
    ToolCall,
    Usage,
    WorkerError,
    WorkerInfo,
)
from rolepool.core.messages import utf8_safe
from rolepool.pools.openai_wire import redact
from rolepool.tools.parsing import parse_tool_calls

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REFUSED_STATUSES = frozenset({400, 413, 422})
_MAX_ERROR_CHARS = 500
_ARCHITECTURES = ("moe", "dense")
_HEADER_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ROLE_HEADER = "X-Rolepool-Role"


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix; `delay` is the server's Retry-After."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class OpenAIWorker:
    """Asks an OpenAI-compatible server for chat completions.

    `base_url` may end in `/v1` or not. The API key comes from `api_key` or else the environment
    variable `api_key_env`; it is sent as a bearer token and never appears in an error.
    `structured_output=True` asks the server to constrain the reply with JSON-schema guided
    decoding (`response_format`): one of the request's tool calls or `{"answer": "..."}`.
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
        tool_choice: str | None = "auto",
    ) -> None:
        if timeout <= 0:
            raise ConfigError("must be a positive number of seconds", where="timeout")
        if max_retries < 0 or backoff < 0:
            raise ConfigError("max_retries and backoff must be 0 or more", where="retries")
        self.root = _root_url(base_url)
        self._info = WorkerInfo(name=name or model, model=model, architecture=architecture)
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env) or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.structured_output = structured_output
        self.tool_choice = tool_choice
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        # httpx timeouts are per read/write/connect; the overall bound is `fail_after` below.
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0))
        )

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
        try:
            with anyio.fail_after(self.timeout):
                data = await self._post_with_retries(self._body(request), headers)
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
        except WorkerError:
            raise
        except Exception as exc:  # the contract: every failure is a WorkerError naming us
            raise self._error(f"{type(exc).__name__}: {exc}") from exc
        completion.latency = time.perf_counter() - started
        return completion

    # -- request -----------------------------------------------------------------------------

    def _body(self, request: Request) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self._info.model,
            "messages": [m.to_openai() for m in request.messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if request.tools:
            body["tools"] = [t.to_openai() for t in request.tools]
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
            if self.structured_output:
                body["response_format"] = _call_or_answer_format(request)
        return body

    async def _post_with_retries(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        url = self.root + "/v1/chat/completions"
        for attempt in range(self.max_retries + 1):
            try:
                return await self._post_once(url, body, headers)
            except _Retryable as exc:
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
        if response.status_code in _RETRY_STATUSES or response.status_code >= 500:
            message = f"HTTP {response.status_code}: {self._server_message(response)}"
            raise _Retryable(message, _retry_after(response))
        if response.status_code in _REFUSED_STATUSES:  # the request, not the server, is at fault
            message = f"HTTP {response.status_code}: {self._server_message(response)}"
            raise RequestRefused(self._redact(message), worker=self._info.name)
        if response.status_code != 200:
            raise self._error(f"HTTP {response.status_code}: {self._server_message(response)}")
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

    # -- response ----------------------------------------------------------------------------

    def _completion(self, data: dict[str, Any], *, tools: bool) -> Completion:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error("response has no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self._error("response choice has no message")
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        calls, text = _read_tool_calls(message.get("tool_calls"), text)
        if self.structured_output and tools and calls is None:
            text = _unwrap_answer(text)
        text = utf8_safe(text)  # a `\ud800` escape must not reach the event store or a parser
        extra = data.get("rolepool") if isinstance(data.get("rolepool"), dict) else {}
        architecture = self._info.architecture
        if architecture == "unknown" and extra.get("architecture") in _ARCHITECTURES:
            architecture = extra["architecture"]
        finish = choices[0].get("finish_reason")
        return Completion(
            text=text,
            tool_calls=calls,
            usage=_usage(data.get("usage")),
            worker=self._info.name,
            model=self._info.model,
            architecture=architecture,
            expert_load=_expert_load(extra.get("expert_load")),
            policy_version=_str_or_none(extra.get("policy_version")),
            finish_reason=finish if isinstance(finish, str) else None,
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


def _read_tool_calls(raw: Any, text: str) -> tuple[list[ToolCall] | None, str]:
    """Calls the server parsed, or (None, text) so the run loop parses and reports problems.

    The calls go through `parse_tool_calls` in the OpenAI wrapper shape they came in, so the
    arguments string gets the same strict decoding as text calls. When that fails, the calls are
    appended to the text as that JSON: the loop's parser then fails on it the same way and tells
    the model precisely what was wrong, instead of this worker raising.
    """
    if not isinstance(raw, list) or not raw:
        return None, text
    rendered = json.dumps([_as_wrapper(item) for item in raw], ensure_ascii=False)
    parsed = parse_tool_calls(rendered)
    if parsed.failure is None and parsed.calls and len(parsed.calls) == len(raw):
        return parsed.calls, text
    return None, f"{text}\n{rendered}".strip()


def _as_wrapper(item: Any) -> Any:
    """A server's call in OpenAI's shape with only the keys the parser accepts."""
    if not isinstance(item, dict):
        return item
    out = {key: item[key] for key in ("id", "type", "function") if key in item}
    if isinstance(out.get("function"), dict):
        function = out["function"]
        out["function"] = {k: function[k] for k in ("name", "arguments") if k in function}
    return out


def _call_or_answer_format(request: Request) -> dict[str, Any]:
    """The OpenAI `response_format` (honoured by vLLM's guided decoding) for 'a call or an
    answer'. A plain JSON object keeps the loop's parser in charge of what it means."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in request.tools
    ]
    options.append(
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    )
    schema = {"anyOf": options}
    return {"type": "json_schema", "json_schema": {"name": "call_or_answer", "schema": schema}}


def _unwrap_answer(text: str) -> str:
    """`{"answer": "..."}` from guided decoding is a final answer: return its text."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or a reply nested past the parser's stack
        return text
    if isinstance(value, dict) and value.keys() == {"answer"} and isinstance(value["answer"], str):
        return value["answer"]
    return text


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) and prompt >= 0 else 0,
        completion_tokens=completion if isinstance(completion, int) and completion >= 0 else 0,
    )


def _expert_load(raw: Any) -> list[list[int]] | None:
    """Expert load a rolepool server passed along; anything malformed is dropped, not fatal."""
    if not isinstance(raw, list):
        return None
    for row in raw:
        if not isinstance(row, list) or not all(isinstance(n, int) for n in row):
            return None
    return raw


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
