"""The `generate` path: for models the decode engine cannot drive (`rolepool.pools.decode.supports`,
e.g. sliding-window or hybrid attention), one left-padded `model.generate` per sampling group.

Requests that can share one `generate` are grouped by `group_key`; rows keep their own limits
through `RowStop` (their own max_tokens and stop strings) and are cut afterwards with `cut_row`; a
seeded request draws from its own random stream (`seeded`); expert telemetry picks each row's
positions out of the recorded routing (`ExpertRecorder.stop`), padding and tokens after the row
stopped excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from rolepool.core import Sampling
from rolepool.pools.batching import Job
from rolepool.pools.expert_load import ExpertRecorder, RowSpan

__all__ = ["RowStop", "cut_row", "generate_kwargs", "generate_rows", "group_key", "seeded"]


def generate_rows(
    model: Any,
    rows: list[Job],
    *,
    pad: int,
    eos: list[int],
    device: str,
    tokenizer: Any,
    recorder: ExpertRecorder | None,
) -> list[tuple[list[int], str, list[list[int]] | None]]:
    """(tokens kept, finish reason, expert load) per row of one sampling group."""
    width = max(len(p.prompt_ids) for p in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, job in enumerate(rows):
        n = len(job.prompt_ids)
        input_ids[i, width - n :] = torch.tensor(job.prompt_ids)
        attention_mask[i, width - n :] = 1
    sampling = rows[0].request.sampling
    if recorder is not None:
        recorder.start()
    try:
        with seeded(sampling, device), torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                stopping_criteria=StoppingCriteriaList([RowStop(width, rows, tokenizer)]),
                **generate_kwargs(sampling, max(p.max_tokens for p in rows), pad, eos),
            )
    except BaseException:
        if recorder is not None:
            recorder.cancel()
        raise

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens, skip_special_tokens=True)

    kept = [cut_row(output[i, width:].tolist(), p, eos, decode) for i, p in enumerate(rows)]
    loads: list[Any] = [None] * len(rows)
    if recorder is not None:
        # The last kept token was produced but never fed back through the model.
        spans = [
            RowSpan(width - len(p.prompt_ids), width + len(tokens) - 1)
            for p, (tokens, _) in zip(rows, kept, strict=True)
        ]
        loads = recorder.stop(len(rows), spans)
    return [(tokens, finish, load) for (tokens, finish), load in zip(kept, loads, strict=True)]


def generate_kwargs(
    sampling: Sampling, max_new_tokens: int, pad: int, eos: list[int]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad,
        "eos_token_id": eos,
        "use_cache": True,
    }
    if sampling.temperature == 0:
        return {**kwargs, "do_sample": False}
    # top_k=0 turns off the library's default top-k: the request's top_p is the only filter.
    return {
        **kwargs,
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": 0,
    }


def group_key(sampling: Sampling, job: Job) -> Hashable:
    """Requests with equal keys can share one `generate` call.

    Greedy requests all decode alike; sampled ones need the same temperature and top_p (the
    logits processors are per call). A seeded sampled request gets its own call, so its random
    stream depends on its seed alone, not on whoever shared the batch. max_tokens and stop
    strings are per row, so they never split a batch.
    """
    if sampling.temperature == 0:
        return ("greedy",)
    if sampling.seed is not None:
        return ("seeded", id(job))
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

    def __init__(self, prompt_len: int, rows: list[Job], tokenizer: Any) -> None:
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
    generated: list[int], job: Job, eos: list[int], decode: Callable[[list[int]], str]
) -> tuple[list[int], str]:
    """Cut a row at its EOS, its max_tokens or its first stop string: (tokens kept, reason).

    Stop strings are checked even after an EOS cut: when pad == EOS, a row stopped by a stop
    string is followed by "EOS" padding that must not count as its output."""
    tokens, finish = generated[: job.max_tokens], "length"
    for i, token in enumerate(tokens):
        if token in eos:
            tokens, finish = tokens[: i + 1], "stop"
            break
    stops = job.request.sampling.stop
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
