"""Context-window-aware routing: a worker whose context cannot hold the prompt is skipped before
the request is sent, not after a refusal.

A worker states its context length as `context_length` (an int attribute or property; a pool may
also be told it, per worker). It may count a request's prompt tokens exactly
(`count_prompt_tokens(request)`); otherwise the prompt is estimated from its characters, at
`CHARS_PER_TOKEN` characters a token (BPE tokenizers average about four on English and code). An
estimate only skips a worker when it says the prompt cannot fit; a worker the estimate lets
through may still refuse, and the pool then fails over as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rolepool.core import Request
from rolepool.pools.worker import Worker

CHARS_PER_TOKEN = 4


def estimate_prompt_tokens(request: Request) -> int:
    """A rough token count of what the model reads: messages, tool calls and tool schemas."""
    chars = 0
    for message in request.messages:
        chars += len(message.content or "")
        for call in message.tool_calls or []:
            chars += len(call.name) + len(json.dumps(call.arguments, default=str))
    for spec in request.tools:
        chars += len(spec.name) + len(spec.description) + len(json.dumps(spec.parameters))
    return chars // CHARS_PER_TOKEN


def context_length(worker: Worker, declared: Mapping[str, int], name: str) -> int | None:
    if name in declared:
        return declared[name]
    value = getattr(worker, "context_length", None)
    return value if isinstance(value, int) and value > 0 else None


def prompt_tokens(worker: Worker, request: Request) -> int:
    count = getattr(worker, "count_prompt_tokens", None)
    if callable(count):
        try:
            return int(count(request))
        except Exception:  # a worker that cannot count is estimated like the others
            pass
    return estimate_prompt_tokens(request)


def too_long(
    worker: Worker, name: str, request: Request, declared: Mapping[str, int]
) -> str | None:
    """Why `worker` cannot hold `request`'s prompt, or None when it can (or nobody knows)."""
    limit = context_length(worker, declared, name)
    if limit is None:
        return None
    tokens = prompt_tokens(worker, request)
    if tokens < limit:
        return None
    return f"prompt of about {tokens} tokens does not fit {name!r}'s context of {limit}; not sent"
