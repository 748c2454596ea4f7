"""`stream: true` in `rolepool serve`: the answer as server-sent `chat.completion.chunk`s while it
is made, in the shapes the OpenAI API streams.

* A first chunk carries `role: "assistant"`; then content deltas as the worker makes text
  (`rolepool.pools.streaming`), never text that may still be cut by a stop string or turn into
  a tool call;
* tool calls as OpenAI streams them: per call a delta with `index`, `id`, `type` and the name
  (arguments `""`), then argument fragments, then `finish_reason: "tool_calls"`. The calls are
  known once the model has finished writing them, so their deltas come at the end;
* with `stream_options.include_usage`, every chunk has `usage: null` and a last chunk with no
  choices carries the usage;
* `data: [DONE]`.

The status line waits for the first piece of the answer, so a request the worker refuses at once
is still a plain 400 (or 5xx) with an error body. A failure after that is an SSE event with an
`error` object, which the OpenAI SDK raises as an `APIError`.

The client hanging up cancels the worker call: an in-process row leaves the batch at the next
decode step (its KV cache with it), an upstream server's stream is closed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from rolepool.core import Completion, Request
from rolepool.pools.openai_wire import (
    ApiError,
    ChatRequest,
    answer_calls,
    audit_trail,
    dumps_utf8,
    wire_call,
    wire_usage,
)
from rolepool.pools.streaming import TextSink, streaming_to

ARGUMENT_FRAGMENT = 32
"""Characters of a call's JSON arguments per delta."""

Outcome = Completion | ApiError | None
"""How a streamed request ended: its completion, its error, or None (the client went away)."""


class ChatStream(Response):
    """The streaming answer to one chat request (an ASGI response that runs the worker call).

    `ask` makes the worker call (timeout included), `failure` maps its exception to the error
    answer, `error_response` renders one, and `ended` hears how the request ended and its time
    to first token (metrics)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        *,
        chat: ChatRequest,
        request: Request,
        model: str,
        ask: Callable[[], Awaitable[Completion]],
        failure: Callable[[Exception], ApiError],
        error_response: Callable[[ApiError], Response],
        ended: Callable[[Outcome, float | None], None],
    ) -> None:
        super().__init__(media_type=self.media_type)
        self.chat, self.request = chat, request
        self.ask, self.failure = ask, failure
        self.error_response, self.ended = error_response, ended
        self.base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.sink = TextSink(stops=request.sampling.stop, hold_calls=chat.parse_calls)
        self.outcome: list[Completion | ApiError] = []
        self.started = time.perf_counter()
        self.first_sent: float | None = None
        """Seconds from the request to the first delta sent (time to first token)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._work)
            tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
            try:
                await self._answer(scope, receive, send)
            finally:
                tg.cancel_scope.cancel()
        self.ended(self.outcome[0] if self.outcome else None, self.first_sent)

    async def _work(self) -> None:
        with streaming_to(self.sink):
            try:
                self.outcome.append(await self.ask())
            except Exception as exc:  # kept whole: a task group would wrap it in a group
                self.outcome.append(self.failure(exc))
        self.sink.close()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first: str | None = await self.sink.__anext__()
        except StopAsyncIteration:
            first = None
        if first is None and isinstance(self.outcome[0], ApiError):
            await self.error_response(self.outcome[0])(scope, receive, send)
            return
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        headers.append((b"cache-control", b"no-cache"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._event(send, self._chunk({"role": "assistant", "content": ""}))
        if first:
            await self._event(send, self._chunk({"content": first}))
        async for piece in self.sink:
            await self._event(send, self._chunk({"content": piece}))
        outcome = self.outcome[0]
        try:
            if isinstance(outcome, ApiError):
                raise outcome
            for chunk in self._ending(outcome):
                await self._event(send, chunk)
        except ApiError as exc:
            self.outcome[0] = exc
            error = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
            await self._event(send, {"error": error})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    def _ending(self, completion: Completion) -> list[dict[str, Any]]:
        """The chunks after the streamed text: the rest of the content, the calls, the finish
        reason with rolepool's audit trail, and the usage if asked for."""
        chat = self.chat
        calls, text = answer_calls(
            completion, parse_calls=chat.parse_calls, max_calls=chat.max_calls
        )
        chunks = []
        rest = self.sink.rest_of(text)
        if rest:
            chunks.append(self._chunk({"content": rest}))
        for index, call in enumerate(calls):
            wire = wire_call(call)
            arguments = wire["function"]["arguments"]
            head = {**wire, "function": {"name": call.name, "arguments": ""}}
            chunks.append(self._chunk({"tool_calls": [{"index": index, **head}]}))
            for start in range(0, len(arguments), ARGUMENT_FRAGMENT):
                fragment = arguments[start : start + ARGUMENT_FRAGMENT]
                delta = {"index": index, "function": {"arguments": fragment}}
                chunks.append(self._chunk({"tool_calls": [delta]}))
        finish = "tool_calls" if calls else completion.finish_reason or "stop"
        last = self._chunk({}, finish)
        last["rolepool"] = audit_trail(completion)
        chunks.append(last)
        if chat.wants_stream_usage:
            chunks.append({**self.base, "choices": [], "usage": wire_usage(completion)})
        return chunks

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = {**self.base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if self.chat.wants_stream_usage:
            chunk["usage"] = None
        return chunk

    async def _event(self, send: Send, chunk: dict[str, Any]) -> None:
        if self.first_sent is None and _has_output(chunk):
            self.first_sent = time.perf_counter() - self.started
        body = f"data: {dumps_utf8(chunk)}\n\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": True})


def _has_output(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries text or a call (the role-only first chunk does not)."""
    choices = chunk.get("choices") or [{}]
    delta = choices[0].get("delta") or {}
    return bool(delta.get("content") or delta.get("tool_calls"))


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """The body has been read, so the only message left to receive is the client hanging up."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body (for tests and benchmarks reading a whole answer)."""
    lines = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]
