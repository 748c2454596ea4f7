"""The request queue behind an in-process worker: gather concurrent requests into batches.

On a CPU a batch of 32 decodes several times the tokens/s of batch 1, so concurrent callers share
forward passes. A caller's request becomes a `Job`, queued here (taken by priority class, then
by fair share between tenants: `rolepool.pools.admission`); the batching loop (`Batcher.serve`)
hands the queue to `run_batch`. With a continuous-batching engine (`rolepool.pools.decode`, see
`Batcher`), requests join the running batch between two decode steps; when the engine is idle,
the loop first gathers up to `max_batch_size` requests, or whatever arrived within `max_wait` of
the oldest one, so a burst is prefilled together.

Who runs the loop: `async with batcher` (a worker's, a pool's) runs it in a task group that block
owns, so it ends when the block ends; entering a batcher that serves already does not take it
over. A batcher nobody entered (SDK code that only calls a worker's `complete`) starts the loop
on first use (`ensure_serving`) in a detached task of the running event loop, which ends with
`stop()` (the worker's `aclose()`) or with the event loop. anyio can only start a task inside a
task group, and no task group of the caller's outlives its request, so that one path uses
asyncio's own task API; rolepool runs on anyio's asyncio backend. Either way the loop's task
starts in a fresh `contextvars.Context`, so it never emits events into the run that happened to
start or enter it (see `rolepool.core.emit`).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel

from rolepool.core import Completion, Request, WorkerError
from rolepool.pools.admission import FairQueue

if TYPE_CHECKING:
    from rolepool.pools.grammar import Grammar

__all__ = ["Batcher", "Job", "JobState"]

JobState = Literal["queued", "running", "abandoned", "finished"]
"""queued: waiting for a batch; running: taken by a batch (prefill and decode); abandoned: its
caller gave up (a queued job leaves the queue, a running row leaves at the engine's next step);
finished: its outcome is set."""


@dataclass(eq=False)
class Job:
    """One request on its way through an in-process worker: what the engine needs of it, where
    it is, and how it ended."""

    request: Request
    prompt_ids: list[int]
    max_tokens: int
    """The request's max_tokens, capped by the worker and the model's context."""
    grammar: Grammar | None = None
    """The compiled grammar the row decodes under (constrained decoding), or None: free."""
    arrived_at: float = field(default_factory=time.perf_counter)
    """When the caller asked: latency runs from here."""
    queued_at: float = 0.0
    """When it entered the queue (after any model load): the batching wait runs from here."""
    state: JobState = "queued"
    outcome: Completion | BaseException | None = None
    cached_prompt_tokens: int = 0
    """Prompt tokens the engine read from its prefix cache instead of prefilling."""
    on_token: Callable[[int], None] | None = None
    """Called on the compute thread with each token the row makes (token streaming, see
    `rolepool.pools.streaming`); None when nobody streams."""
    _finished: anyio.Event = field(default_factory=anyio.Event, init=False, repr=False)

    def finish(self, outcome: Completion | BaseException) -> None:
        """Set the outcome and wake the caller; the first outcome wins."""
        if self.state == "finished":
            return
        self.state, self.outcome = "finished", outcome
        self._finished.set()

    async def wait(self) -> Completion:
        """The completion, once finished (or the error that ended the job, raised)."""
        await self._finished.wait()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


def _fail_unfinished(jobs: list[Job], error: WorkerError) -> None:
    for job in jobs:
        if job.state != "finished":
            job.finish(error)


RunBatch = Callable[[list[Job]], Awaitable[None]]


@dataclass(eq=False)
class _Serving:
    """One run of the batching loop: the event loop it runs on, the scope that stops it, and an
    event set once it has ended."""

    token: anyio.lowlevel.EventLoopToken
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    ended: anyio.Event = field(default_factory=anyio.Event)


@dataclass(eq=False)
class _Owner:
    """The `async with` block whose task group runs the loop: its task, its event loop, and how
    deep that task has entered."""

    task: int
    token: anyio.lowlevel.EventLoopToken
    group: anyio.abc.TaskGroup
    depth: int = 1


class Batcher:
    """The queue and its batching loop; `run_batch` must finish every job it is handed.

    With `in_flight` (how many admitted requests a continuous-batching engine still decodes),
    the loop hands `run_batch` whatever is queued, up to the free room and without waiting,
    whenever it returns while requests are in flight: the engine admits them between two steps
    and returns when a row leaves or `admission_waiting()` says requests wait for room. The
    gather window (`max_wait_s`) only applies when the engine is idle. `on_stop` runs when the
    loop ends (the owner fails the rows its engine still holds); `on_new_loop` when a loop is
    started on an event loop other than the last one's, which died with everything it ran.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait_s: float,
        in_flight: Callable[[], int] | None = None,
        on_stop: Callable[[], None] | None = None,
        on_new_loop: Callable[[], None] | None = None,
        tenant_weights: Mapping[str, float] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_batch = run_batch
        self._in_flight = in_flight or (lambda: 0)
        self._on_stop = on_stop
        self._on_new_loop = on_new_loop
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(max_wait_s, 0.0)
        self._queue: FairQueue[Job] = FairQueue(lambda job: job.request, tenant_weights)
        """Jobs waiting for the engine, taken by priority class, then fair share between
        tenants (`rolepool.pools.admission`), in proportion to `tenant_weights` (default 1)."""
        self._wakeup: anyio.Event | None = None
        self._serving: _Serving | None = None
        self._owner: _Owner | None = None
        self._detached: asyncio.Task[None] | None = None  # held so it is not garbage-collected
        self.stopping = False
        """`stop()` is under way: an engine returns at its next step (read from any thread)."""
        self._last_token: anyio.lowlevel.EventLoopToken | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def tenant_weights(self) -> dict[str, float]:
        return dict(self._queue.weights)

    def set_tenant_weights(self, weights: Mapping[str, float] | None) -> None:
        """New tenant weights for the jobs queued now and later (`FairQueue.set_weights`)."""
        self._queue.set_weights(weights)

    @property
    def serving(self) -> bool:
        """Whether the batching loop runs (or is starting) on the current event loop."""
        serving = self._serving
        return serving is not None and serving.token == anyio.lowlevel.current_token()

    def admission_waiting(self) -> bool:
        """Requests are queued and the engine has room for them (safe to call from a thread)."""
        return bool(self._queue) and self._in_flight() < self.max_batch_size

    def submit(self, job: Job) -> None:
        """Queue `job`; call `ensure_serving` first."""
        job.queued_at = time.perf_counter()
        self._queue.push(job)
        if self._wakeup is not None:
            self._wakeup.set()

    def abandon(self, job: Job) -> None:
        """Its caller gave up: a queued job leaves the queue, a running one is marked so the
        engine drops its row at the next step."""
        if job.state == "finished":
            return
        if job.state == "queued":
            self._queue.remove(job)
        job.state = "abandoned"

    # -- the loop's lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> Batcher:
        """Run the loop in a task group this block owns, until the block ends. Entering while
        it serves already (an enclosing block entered it, or a request outside any block
        started it) does not take it over: that entry's exit does nothing."""
        task, token = anyio.get_current_task().id, anyio.lowlevel.current_token()
        owner = self._owner
        if owner is not None and owner.token == token:
            if owner.task == task:  # nested in the owner's own block
                owner.depth += 1
            self.ensure_serving()
            return self
        if self.serving:
            return self
        group = anyio.create_task_group()
        await group.__aenter__()
        self._owner = _Owner(task, token, group)
        self._start_in(group)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        owner = self._owner
        here = (anyio.get_current_task().id, anyio.lowlevel.current_token())
        if owner is None or (owner.task, owner.token) != here:
            return None  # an entry that did not take the loop over
        owner.depth -= 1
        if owner.depth:
            return None
        self._owner = None
        try:
            await self.stop()
        except BaseException as exc:  # the task group is exited however stopping went
            await owner.group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return await owner.group.__aexit__(*exc_info)

    def ensure_serving(self) -> None:
        """Start the loop unless it serves on this event loop: in the task group of the open
        `async with` block if there is one, else detached (see the module docstring)."""
        if self.serving:
            return
        owner = self._owner
        if owner is not None and owner.token == anyio.lowlevel.current_token():
            self._start_in(owner.group)
        else:
            serving = self._claim()
            loop = asyncio.get_running_loop()
            self._detached = loop.create_task(self._serve(serving), context=contextvars.Context())

    def _start_in(self, group: anyio.abc.TaskGroup) -> None:
        serving = self._claim()
        # start_soon gives the task a copy of the current context: make that an empty one.
        contextvars.Context().run(group.start_soon, self._serve, serving)

    async def stop(self) -> None:
        """End the loop (from any task on its event loop) and wait until it has ended: anything
        still queued fails with a WorkerError. Does nothing when the loop is not running. A
        later `ensure_serving` starts it again."""
        serving = self._serving
        if serving is not None and serving.token != anyio.lowlevel.current_token():
            return  # it runs on another event loop (or ran on one that is gone)
        if serving is not None:
            self.stopping = True
            try:
                serving.scope.cancel()
                with anyio.CancelScope(shield=True):
                    await serving.ended.wait()
            finally:
                self.stopping = False
        self._fail_queued()

    def _claim(self) -> _Serving:
        if self.serving:
            raise RuntimeError("the batching loop is already serving on this event loop")
        token = anyio.lowlevel.current_token()
        if self._last_token is not None and self._last_token != token:
            # The last loop ran on an event loop that is gone, with everything it ran: jobs
            # queued or decoding there can never be finished, so they do not carry over.
            self._queue.clear()
            if self._on_new_loop is not None:
                self._on_new_loop()
        self._last_token = token
        self._serving = _Serving(token)
        self._wakeup = anyio.Event()
        return self._serving

    async def _serve(self, serving: _Serving) -> None:
        try:
            with serving.scope:
                while True:
                    await self._run(await self._next_batch())
        finally:
            if self._serving is serving:
                self._serving = None
            self._fail_queued()
            if self._on_stop is not None:
                self._on_stop()
            serving.ended.set()

    def _fail_queued(self) -> None:
        queued = self._queue.clear()
        _fail_unfinished(queued, WorkerError("worker closed before the request ran"))

    # -- batches ----------------------------------------------------------------------------------

    async def _run(self, batch: list[Job]) -> None:
        try:
            await self._run_batch(batch)
        except Exception as exc:  # a bug in run_batch must not strand its callers
            _fail_unfinished(batch, WorkerError(f"batch failed: {exc!r}"))
        except BaseException:
            _fail_unfinished(batch, WorkerError("worker closed while the request ran"))
            raise

    async def _next_batch(self) -> list[Job]:
        in_flight = self._in_flight()
        if in_flight:
            # Let callers resolved a moment ago submit their next request, then admit it.
            await anyio.lowlevel.checkpoint()
            return self._take(self.max_batch_size - in_flight)
        while not self._queue:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        deadline = min(job.queued_at for job in self._queue) + self.max_wait_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup = anyio.Event()
            with anyio.move_on_after(remaining):
                await self._wakeup.wait()
        return self._take(self.max_batch_size)

    def _take(self, room: int) -> list[Job]:
        batch = self._queue.take(room)
        for job in batch:
            job.state = "running"
        return batch
