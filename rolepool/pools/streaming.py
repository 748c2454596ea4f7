"""Token streaming from a worker to whoever asked: `rolepool serve`'s SSE answers.

The `Worker` protocol answers with one `Completion`; streaming rides beside it instead of
changing it. The caller opens a `TextSink` and makes the worker call inside `streaming_to(sink)`,
a context variable that a `Pool` and its failover pass on to the worker that serves (child tasks
inherit it). A worker that can stream feeds the sink as text is made: the in-process worker
through `token_hook` (the decoder calls it on the compute thread with each new token id, the ids
are detokenized incrementally on the event loop), an `OpenAIWorker` with the deltas its upstream
server streams. A worker that cannot stream feeds nothing, and the caller sends the whole text
once the completion arrives, as before.

What the sink lets out is what cannot change any more: text that could still turn out to be the
start of a stop string is held back (the completion's text ends before a stop string), and once
the text may be opening a tool call (`hold_calls`) nothing more leaves, so a call is never sent
as content; the caller turns the completion's calls into tool-call deltas.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.lowlevel

from rolepool.pools import compute

__all__ = ["TextSink", "current_sink", "streaming_to", "token_hook"]

_CALL_OPENERS = ("<", "{", "[")
"""Where a tool call may begin in the formats `tools.parsing` reads (Hermes tags, Mistral's
`[TOOL_CALLS]`, Llama's `<|python_tag|>`, bare JSON objects and lists)."""

_SINK: ContextVar[TextSink | None] = ContextVar("rolepool_text_sink", default=None)


class TextSink:
    """Text of one completion as it is made, for one reader on the same event loop.

    `stops` are the request's stop strings; `hold_calls` holds everything from the first
    character that may open a tool call."""

    def __init__(self, *, stops: list[str] | None = None, hold_calls: bool = False) -> None:
        self.stops = [s for s in stops or () if s]
        self.holdback = max((len(s) for s in self.stops), default=1) - 1
        self.hold_calls = hold_calls
        self.text = ""
        """All text fed so far."""
        self.sent = 0
        """How many characters of `text` have been let out."""
        self.first_at: float | None = None
        """perf_counter() when the first text arrived (time to first token)."""
        self.reasoning = ""
        self._held = False
        self._send, self._receive = anyio.create_memory_object_stream[str](math.inf)

    @property
    def held(self) -> bool:
        """Whether nothing more leaves as content: the text reached a stop string, or may be
        opening a tool call."""
        return self._held

    def feed(self, delta: str) -> None:
        """More text of the completion (on the event loop)."""
        if not delta:
            return
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.text += delta
        if self._held:
            return
        end = len(self.text) - self.holdback
        look_from = max(0, self.sent - self.holdback)
        cuts = [i for i in (self.text.find(s, look_from) for s in self.stops) if i >= 0]
        if cuts:  # the completion ends before a stop string
            self._held, end = True, min(cuts)
        if self.hold_calls:
            opened = [i for i in (self.text.find(c, self.sent) for c in _CALL_OPENERS) if i >= 0]
            if opened:
                self._held, end = True, min(end, *opened)
        if end > self.sent:
            piece, self.sent = self.text[self.sent : end], end
            self._send.send_nowait(piece)

    def feed_reasoning(self, delta: str) -> None:
        """Reasoning text an upstream server streamed (kept, never sent as content)."""
        if delta and self.first_at is None:
            self.first_at = time.perf_counter()
        self.reasoning += delta

    def close(self) -> None:
        """No more text: the reader's loop ends once it has read what was let out."""
        self._send.close()

    def __aiter__(self) -> TextSink:
        return self

    async def __anext__(self) -> str:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def rest_of(self, final: str) -> str:
        """What of the completion's `final` text was not let out yet (all of it when the
        stream let out something `final` does not start with, which a correct worker never
        does: the content then repeats rather than loses text)."""
        sent = self.text[: self.sent]
        if final.startswith(sent):
            return final[len(sent) :]
        trimmed = sent.rstrip()  # a call parser strips the prose around the calls it takes out
        return final[len(trimmed) :] if final.startswith(trimmed) else final


def current_sink() -> TextSink | None:
    """The sink the current worker call streams to, if its caller asked for streaming."""
    return _SINK.get()


@contextmanager
def streaming_to(sink: TextSink) -> Iterator[TextSink]:
    """Worker calls made inside this block (and their child tasks) stream to `sink`."""
    token = _SINK.set(sink)
    try:
        yield sink
    finally:
        _SINK.reset(token)


def token_hook(detokenize: Callable[[list[int]], str]) -> Callable[[int], None] | None:
    """For an in-process worker: a function the decoder calls on the compute thread with each
    token id a row makes, or None when nobody streams. Call on the event loop; the ids are
    detokenized there, incrementally (`IncrementalText`), and fed to the current sink."""
    sink = current_sink()
    if sink is None:
        return None
    text = IncrementalText(detokenize)
    relay = _Relay.for_this_loop()

    def on_token(token: int) -> None:
        relay.post(lambda: sink.feed(text.add(token)))

    return on_token


class _Relay:
    """Hands work from the compute thread to one event loop, waking the loop once per batch of
    posts rather than once per token: a decode step of 32 streaming rows is one wake-up."""

    _by_loop: weakref.WeakKeyDictionary[Any, _Relay] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._call = compute.loop_caller()
        self._lock = threading.Lock()
        self._pending: list[Callable[[], None]] = []

    @classmethod
    def for_this_loop(cls) -> _Relay:
        loop = anyio.lowlevel.current_token().native_token  # a closed loop's relay goes with it
        relay = cls._by_loop.get(loop)
        if relay is None:
            relay = cls._by_loop[loop] = cls()
        return relay

    def post(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._pending.append(work)
            first = len(self._pending) == 1
        if first:
            self._call(self._run)

    def _run(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for work in pending:
            work()


class IncrementalText:
    """Token ids to text deltas without decoding the whole sequence each time.

    Decoding a token alone loses what depends on its neighbours (a space the tokenizer strips at
    the start, half of a multi-byte character), so each step decodes a window from a few tokens
    back and lets out only what the window adds once it no longer ends in U+FFFD, the mark of a
    character whose bytes are not all there yet."""

    def __init__(self, detokenize: Callable[[list[int]], str]) -> None:
        self.detokenize = detokenize
        self.tokens: list[int] = []
        self.prefix = 0  # where the window starts
        self.read = 0  # tokens before this are already let out

    def add(self, token: int) -> str:
        self.tokens.append(token)
        before = self.detokenize(self.tokens[self.prefix : self.read])
        now = self.detokenize(self.tokens[self.prefix :])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.tokens)
        return now[len(before) :]
