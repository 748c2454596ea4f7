"""The request queue behind an in-process worker: gather concurrent requests into batches.

On a CPU a batch of 32 decodes several times the tokens/s of batch 1, so concurrent callers share
forward passes. Callers enqueue a `Pending` and wait on it; one background task per event loop
hands the queue to `run_batch`. With a continuous-batching engine (`rolepool.pools.decode`, see
`Batcher`), requests join the running batch between two decode steps; when the engine is idle,
the task first gathers up to `max_batch_size` requests, or whatever arrived within `max_wait` of
the oldest one, so a burst is prefilled together.

The background task serves many runs, so it must not emit events (see `rolepool.core.emit`): it is
started in a fresh `contextvars.Context`, never in the context of the request that happened to
start it. That needs the event loop's own task API; rolepool runs on anyio's asyncio backend.

For the `generate` fallback (models the engine cannot serve), requests are split into groups that
can share one `generate` (`group_key`); `RowStop` ends each row at its own max_tokens or stop
string, and `seeded` gives a seeded request its own random stream.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import torch
from transformers import StoppingCriteria

from rolepool.core import Completion, Request, Sampling, WorkerError

__all__ = ["Batcher", "Pending", "RowStop", "cut_row", "group_key", "seeded"]


@dataclass(eq=False)
class Pending:
    """One queued request and, once served, its result or error."""

    request: Request
    prompt_ids: list[int]
    max_tokens: int
    arrived: float = field(default_factory=time.perf_counter)
    """When the caller asked: latency runs from here."""
    queued: float = 0.0
    """When it entered the queue (after any model load): the batching wait runs from here."""
    done: anyio.Event = field(default_factory=anyio.Event)
    started: bool = False
    cancelled: bool = False
    """Its caller gave up after it started: the engine drops the row at its next step."""
    result: Completion | None = None
    error: BaseException | None = None

    def resolve(self, result: Completion | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


def group_key(sampling: Sampling, pending: Pending) -> Hashable:
    """Requests with equal keys can share one `generate` call.

    Greedy requests all decode alike; sampled ones need the same temperature and top_p (the
    logits processors are per call). A seeded sampled request gets its own call, so its random
    stream depends on its seed alone, not on whoever shared the batch. max_tokens and stop
    strings are per row, so they never split a batch.
    """
    if sampling.temperature == 0:
        return ("greedy",)
    if sampling.seed is not None:
        return ("seeded", id(pending))
    return ("sample", sampling.temperature, sampling.top_p)


@contextmanager
def seeded(sampling: Sampling, device: str) -> Iterator[None]:
    """A seeded sampled request draws from a forked RNG: its stream depends on its seed alone,
    and the process-wide stream is left as it was."""
    if sampling.temperature == 0 or sampling.seed is None:
        yield
        return
    devices = [torch.device(device)] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(sampling.seed)
        yield


class RowStop(StoppingCriteria):
    """Per-row stop: the row's own max_tokens, or one of its stop strings in the decoded tail."""

    def __init__(self, prompt_len: int, rows: list[Pending], tokenizer: Any) -> None:
        self.prompt_len = prompt_len
        self.max_tokens = torch.tensor([p.max_tokens for p in rows])
        self.stops = [p.request.sampling.stop for p in rows]
        # A character can take up to 4 byte-level tokens, so look back 4 tokens per character.
        self.window = [4 * max((len(s) for s in stops), default=0) + 4 for stops in self.stops]
        self.tokenizer = tokenizer

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_len
        done = self.max_tokens.to(input_ids.device) <= generated
        for row, stops in enumerate(self.stops):
            if stops and not done[row]:
                start = max(self.prompt_len, input_ids.shape[1] - self.window[row])
                tail = self.tokenizer.decode(input_ids[row, start:], skip_special_tokens=True)
                done[row] = any(s in tail for s in stops)
        return done


def cut_row(
    generated: list[int], pending: Pending, eos: list[int], decode: Callable[[list[int]], str]
) -> tuple[list[int], str]:
    """Cut a row at its EOS, its max_tokens or its first stop string: (tokens kept, reason).

    Stop strings are checked even after an EOS cut: when pad == EOS, a row stopped by a stop
    string is followed by "EOS" padding that must not count as its output."""
    tokens, finish = generated[: pending.max_tokens], "length"
    for i, token in enumerate(tokens):
        if token in eos:
            tokens, finish = tokens[: i + 1], "stop"
            break
    stops = pending.request.sampling.stop
    if stops and any(s in decode(tokens) for s in stops):
        lo, hi = 1, len(tokens)  # the fewest tokens whose text holds a stop string
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in decode(tokens[:mid]) for s in stops):
                hi = mid
            else:
                lo = mid + 1
        return tokens[:lo], "stop"
    return tokens, finish


def _fail_unresolved(batch: list[Pending], error: WorkerError) -> None:
    for pending in batch:
        if not pending.done.is_set():
            pending.resolve(error=error)


RunBatch = Callable[[list[Pending]], Awaitable[None]]


class Batcher:
    """Queue plus one batching task per event loop; `run_batch` must resolve every Pending.

    With `in_flight` (how many admitted requests a continuous-batching engine still decodes),
    the task hands `run_batch` whatever is queued, up to the free room and without waiting,
    whenever it returns while requests are in flight: the engine admits them between two steps
    and returns when a row leaves or `admission_waiting()` says requests wait for room. The
    gather window (`max_wait_s`) only applies when the engine is idle.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait_s: float,
        in_flight: Callable[[], int] | None = None,
        on_new_loop: Callable[[], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_batch = run_batch
        self._in_flight = in_flight or (lambda: 0)
        self._on_new_loop = on_new_loop
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(max_wait_s, 0.0)
        self._queue: list[Pending] = []
        self._wakeup = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def admission_waiting(self) -> bool:
        """Requests are queued and the engine has room for them (safe to call from a thread)."""
        return bool(self._queue) and self._in_flight() < self.max_batch_size

    def submit(self, pending: Pending) -> None:
        self._ensure_running()
        pending.queued = time.perf_counter()
        self._queue.append(pending)
        self._wakeup.set()

    def discard(self, pending: Pending) -> bool:
        """Drop a request its caller gave up on, if no batch has taken it yet."""
        if pending.started or pending not in self._queue:
            return False
        self._queue.remove(pending)
        return True

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and self._loop is loop and not self._task.done():
            return
        # A new event loop (a new anyio.run, a new test) means the old task died with its loop:
        # requests queued there can never be served, so they do not carry over.
        self._queue = [p for p in self._queue if self._loop is loop]
        if self._on_new_loop is not None:
            self._on_new_loop()  # rows in flight on the old loop cannot be resolved either
        self._loop = loop
        self._wakeup = anyio.Event()
        self._task = loop.create_task(self._serve(), context=contextvars.Context())

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._run_batch(batch)
            except Exception as exc:  # a bug in run_batch must not strand its callers
                _fail_unresolved(batch, WorkerError(f"batch failed: {exc!r}"))
            except BaseException:
                _fail_unresolved(batch, WorkerError("worker closed while the request ran"))
                raise

    async def _next_batch(self) -> list[Pending]:
        in_flight = self._in_flight()
        if in_flight:
            # Let callers resolved a moment ago submit their next request, then admit it.
            await anyio.lowlevel.checkpoint()
            return self._take(self.max_batch_size - in_flight)
        while not self._queue:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        deadline = self._queue[0].queued + self.max_wait_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup = anyio.Event()
            with anyio.move_on_after(remaining):
                await self._wakeup.wait()
        return self._take(self.max_batch_size)

    def _take(self, room: int) -> list[Pending]:
        batch = self._queue[: max(room, 0)]
        del self._queue[: len(batch)]
        for pending in batch:
            pending.started = True
        return batch

    async def aclose(self) -> None:
        """Stop the batching task; anything still queued fails with a WorkerError."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        queued, self._queue = self._queue, []
        for pending in queued:
            pending.resolve(error=WorkerError("worker closed before the request ran"))
