"""The `generate` path: for models the decode engine cannot drive (`rolepool.pools.decode.supports`,
e.g. sliding-window or hybrid attention), one left-padded `model.generate` per sampling group.

Rows keep their own limits through `RowStop` (their own max_tokens and stop strings) and are cut
afterwards with `cut_row`; expert telemetry picks each row's positions out of the recorded
routing (`ExpertRecorder.stop`), padding and tokens after the row stopped excluded.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteriaList

from rolepool.core import Sampling
from rolepool.pools.batching import Pending, RowStop, cut_row, seeded
from rolepool.pools.expert_load import ExpertRecorder, RowSpan

__all__ = ["generate_kwargs", "generate_rows"]


def generate_rows(
    model: Any,
    rows: list[Pending],
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
    for i, pending in enumerate(rows):
        n = len(pending.prompt_ids)
        input_ids[i, width - n :] = torch.tensor(pending.prompt_ids)
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
