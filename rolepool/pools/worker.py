"""The `Worker` protocol: anything that turns a `Request` into a `Completion`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rolepool.core import Completion, Request, WorkerInfo


@runtime_checkable
class Worker(Protocol):
    """A model the run loop can ask for completions.

    In-process transformers models, OpenAI-compatible HTTP servers, pools and test workers all
    satisfy it, so the run loop never needs to know which it talks to.
    """

    @property
    def info(self) -> WorkerInfo: ...

    async def complete(self, request: Request) -> Completion: ...

    async def health(self) -> bool: ...
