"""Context-window-aware routing: a worker whose context cannot hold the prompt is skipped before
the request is sent, not after a refusal.

A worker states its context length as `context_length` (an int attribute or property; a pool may
also be told it, per worker). It may count a request's prompt tokens exactly
(`count_prompt_tokens(request)`); otherwise the prompt is estimated from its characters, at
`CHARS_PER_TOKEN` characters a token (BPE tokenizers average about four on English and code). An
estimate only skips a worker when it says the prompt cannot fit; a worker the estimate lets
through may still refuse, and the pool then fails over as before.

A context length given in configuration (pool.toml's `context_length`) is declared to the pool;
an in-process worker takes it as a limit of its own (`narrowed_context`), which may narrow the
model's window but never widen it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rolepool.core import ConfigError, Request
from rolepool.pools.worker import Worker

CHARS_PER_TOKEN = 4


def narrowed_context(limit: int | None, model: int | None) -> int | None:
    """`limit` checked against the model's own window (`model`, None when unknown): narrower is
    a limit a worker can keep; wider is refused, as the model cannot see past its window."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"must be a positive integer, not {limit!r}", where="context_length")
    if model is not None and limit > model:
        raise ConfigError(
            f"{limit} is more than the model's context window of {model} tokens "
            "(max_position_embeddings); it can only be narrowed",
            where="context_length",
        )
    return limit


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
