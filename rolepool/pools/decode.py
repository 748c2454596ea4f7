"""A step-level decoding engine for the in-process worker: continuous batching on the KV cache.

`model.generate` over a padded batch pays for three things that do not produce tokens: padding in
the prefill (a batch of prompts of 35-164 tokens is prefilled as 32 x 164), a `torch.cat` of the
whole KV cache at every step, and rows that already stopped riding along until the longest row
ends. Measured on the shipped dense-s1 (2-core CPU), prefill was half of a 32-row generate. This
engine instead

* prefills newly admitted prompts in length-sorted chunks (little padding), then copies their
  rows into the running batch, left-padded, so one forward per step serves every row;
* keeps each layer's keys and values in a buffer with spare room, changed in place (`KVBuffer`):
  a step writes one position, and rows joining or leaving copy only those rows;
* retires a row as soon as it stops (EOS, its own max_tokens, a stop string, its caller gave up:
  `Finish`): the last rows of the batch move into the places of rows that left, and padding no
  remaining row needs leaves the window;
* admits requests that arrive while others decode, between two steps (see `Batcher`);
* with a `PrefixCache`, prefills only what follows the longest cached prefix of each prompt (the
  cached keys and values are laid in as the prefill's past, `rolepool.pools.prefix_cache`), and
  keeps each prompt's full blocks for the prompts after it.

Rows choose their tokens on their own: greedy rows take the argmax (as `generate` does, so greedy
outputs equal `generate`'s token for token, up to float rounding of other batch shapes), sampled
rows apply their own temperature and top_p, and a seeded row draws from its own `torch.Generator`,
so rows with different sampling settings share a batch and a seeded stream depends on its seed
alone. A constrained row (a request with a grammar, `rolepool.pools.constrained`) chooses among
the tokens its grammar allows; its mask for a step is filled on a helper thread while the forward
runs if `overlap_masks` says so, and free rows' logits are left as they are.

The running batch and its per-row state are a `Batch` (`rolepool.pools.decode_batch`), changed
only through its own operations; the `Decoder` decides when rows join, step and leave.

Expert telemetry follows `rolepool.pools.expert_load`'s counting rule: each forward's routing is
added to the rows that were in it, padding masked out. A row's last token is never fed back
because the row is retired before the next step, so each layer sums to
`(prompt + completion - 1) * top_k` by construction.

Only models whose cache is plain full attention (`DynamicLayer` for every layer: Llama, Mistral
without a sliding window, Mixtral, Qwen and friends) are served here; `supports` says which, and
the worker falls back to `generate` for the others.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from rolepool.pools.batching import Job
from rolepool.pools.constrained import BatchMask, MaskFiller, RowGrammar
from rolepool.pools.decode_batch import Batch, Finish, Row
from rolepool.pools.expert_load import ExpertRecorder
from rolepool.pools.families import engine_refused
from rolepool.pools.kv_buffer import KVBuffer
from rolepool.pools.lean_step import LeanStep
from rolepool.pools.prefix_cache import Prefix, PrefixCache, compact, pilots, seat

__all__ = ["Decoder", "Done", "Finish", "supports"]

_Prefilled = tuple[list[KVBuffer], torch.Tensor, torch.Tensor, torch.Tensor]
"""A prefill's caches, each row's padding, the mask of the tokens it computed, its logits."""

PREFILL_TOKENS = 1024
"""Padded tokens per prefill chunk: small chunks of similar length waste little on padding
(measured: 32 prompts of 35-164 tokens prefill in half the time of one padded batch)."""


def supports(model: Any) -> bool:
    """Whether the engine can serve `model`: every cache layer a plain full-attention one, and
    not a family the registry keeps off the engine (`rolepool.pools.families.engine_refused`)."""
    if engine_refused(model.config):
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:
        return False
    forward = inspect.signature(model.forward).parameters
    return (
        bool(layers)
        and all(type(layer) is DynamicLayer for layer in layers)
        and "logits_to_keep" in forward
        and "position_ids" in forward
    )


@dataclass
class Done:
    """A row that left the engine: its tokens and why it left, or the error that ended it."""

    job: Job
    tokens: list[int] = field(default_factory=list)
    finish: Finish = "length"
    expert_load: list[list[int]] | None = None
    error: BaseException | None = None


class Decoder:
    """The rows in flight on one model; `run` is called from one thread at a time."""

    def __init__(
        self,
        model: Any,
        *,
        eos: list[int],
        pad: int,
        detokenize: Callable[[list[int]], str],
        recorder: ExpertRecorder | None,
        device: str,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.model, self.eos, self.pad_id = model, frozenset(eos), pad
        self.detokenize = detokenize
        self.recorder, self.device = recorder, device
        self.prefix_cache = prefix_cache
        """Prompt KV kept for later prompts with the same prefix (`rolepool.pools.prefix_cache`),
        or None: every prompt is prefilled whole."""
        # Decode steps take the lean forward when the model is one it serves (checked here).
        self.lean = LeanStep.build(model)
        self.num_layers = len(DynamicCache(config=model.config).layers)
        self.batch: Batch | None = None
        self.masks = MaskFiller()
        self.overlap_masks = False
        """Fill constrained rows' masks on a helper thread during the forward (True), or after
        it on this thread (False). `bench/constrained.py` measures both; on a 2-core machine the
        helper competed with the forward for the cores and did not pay."""
        self.steps = 0
        self.row_steps = 0

    @property
    def active(self) -> int:
        return len(self.batch) if self.batch else 0

    def jobs(self) -> list[Job]:
        """The jobs of the rows in flight."""
        return [row.job for row in self.batch.rows] if self.batch else []

    def reset(self) -> None:
        self._drop_rows()

    def close(self) -> None:
        """Drop the rows and end the mask thread (a later `run` starts it again)."""
        self._drop_rows()
        self.masks.close()

    def _drop_rows(self) -> list[Row]:
        """Empty the batch, each row giving back its matcher; the rows that were in it."""
        rows = list(self.batch.rows) if self.batch else []
        for row in rows:
            row.release()
        self.batch = None
        return rows

    def run(
        self,
        new: list[Job],
        yield_now: Callable[[], bool],
        deliver: Callable[[list[Done]], None] | None = None,
    ) -> list[Done]:
        """Admit `new`, then step until `yield_now()` (requests wait to be admitted) or no row
        is left. Without `deliver`, decoding stops at the first step a row leaves and the rows
        that left are returned; with it, they are handed to `deliver` as they leave and decoding
        goes on, so whoever takes them works while the next steps run. A failed step fails
        every row in the batch."""
        # Inference mode throughout: the cache is changed in place between forwards.
        with torch.inference_mode():
            done = self._admit(new) if new else []
            while True:
                if done:
                    if deliver is None:
                        return done
                    deliver(done)
                    done = []
                if self.batch is None or yield_now():
                    return done
                try:
                    done = self._step()
                except Exception as exc:
                    done = [Done(row.job, error=exc) for row in self._drop_rows()]

    # -- admission ----------------------------------------------------------------------------

    def _admit(self, new: list[Job]) -> list[Done]:
        done: list[Done] = []
        for chunk in self._plan(new):
            try:
                self._join(self._prefill(chunk))
            except Exception:
                # One bad prompt must not fail its chunk: retry the rows alone.
                for job in chunk:
                    try:
                        self._join(self._prefill([job]))
                    except Exception as exc:
                        done.append(Done(job, error=exc))
        return done + self._retire()

    def _plan(self, new: list[Job]) -> list[list[Job]]:
        """The admission's prefill chunks: length-sorted; with a prefix cache, prompts whose
        uncached prefix others share go first (`prefix_cache.pilots`), so the others reuse it."""
        order = sorted(new, key=lambda job: len(job.prompt_ids))
        if self.prefix_cache is None or len(order) < 2:
            return _chunks(order)
        first = [order[i] for i in pilots(self.prefix_cache, [job.prompt_ids for job in order])]
        return _chunks(first) + _chunks([job for job in order if job not in first])

    def _join(self, part: Batch) -> None:
        """Add a prefilled chunk's rows to the running batch."""
        if self.batch is None:
            self.batch = Batch.empty(self.num_layers)
        self.batch.append(part)

    def _prefill(self, chunk: list[Job]) -> Batch:
        hits = self._prefixes(chunk)
        if any(hit is not None for hit in hits):
            layers, pad_lengths, mask, logits = self._prefill_cached(chunk, hits)
        else:
            layers, pad_lengths, mask, logits = self._prefill_whole(chunk)
        part = Batch(
            tuple(self._row(job) for job in chunk),
            layers,
            pad_lengths,
            torch.zeros(len(chunk), dtype=torch.long),
            self._expert_counts_start(len(chunk)),
        )
        self._count_experts(part, mask)
        part.choose_next(logits, BatchMask.fill(part.grammars, logits, part.greedy_rows()))
        if self.prefix_cache is not None:
            for i, job in enumerate(chunk):
                start = int(part.pad_lengths[i])
                self.prefix_cache.insert(job.prompt_ids, part.layers, i, start)
        return part

    def _prefixes(self, chunk: list[Job]) -> list[Prefix | None]:
        """Each prompt's longest cached prefix (None: no cache, or nothing cached)."""
        cache = self.prefix_cache
        hits = [cache.match(job.prompt_ids) if cache else None for job in chunk]
        for job, hit in zip(chunk, hits, strict=True):
            job.cached_prompt_tokens = hit.length if hit is not None else 0
        return hits

    def _prefill_cached(self, chunk: list[Job], hits: list[Prefix | None]) -> _Prefilled:
        """Prefill only what follows each row's cached prefix, attending to the prefix."""
        seated = seat([job.prompt_ids for job in chunk], hits, self.pad_id)
        if self.lean is not None:
            lean, device = self.lean, self.device
            ids, pad, past = seated.ids.to(device), seated.pad, seated.past
            logits = self._run(lambda: lean.prefill(ids, pad, seated.layers, past=past))
        else:
            logits = self._forward(seated.ids, seated.key_mask, seated.positions, seated.layers)
        layers, pad_lengths = compact(seated)
        new = (torch.arange(seated.ids.shape[1])[None, :] >= seated.pad[:, None]).long()
        return layers, pad_lengths, new, logits

    def _prefill_whole(self, chunk: list[Job]) -> _Prefilled:
        width = max(len(job.prompt_ids) for job in chunk)
        ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        pad_lengths = torch.tensor([width - len(job.prompt_ids) for job in chunk])
        for i, job in enumerate(chunk):
            ids[i, int(pad_lengths[i]) :] = torch.tensor(job.prompt_ids)
        mask = (torch.arange(width)[None, :] >= pad_lengths[:, None]).long()
        layers = [KVBuffer() for _ in range(self.num_layers)]
        if self.lean is not None:
            lean, device = self.lean, self.device
            logits = self._run(lambda: lean.prefill(ids.to(device), pad_lengths, layers))
        else:
            logits = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), layers)
        return layers, pad_lengths, mask, logits

    def _row(self, job: Job) -> Row:
        sampling = job.request.sampling
        generator = None
        if sampling.temperature > 0 and sampling.seed is not None:
            generator = torch.Generator(self.device).manual_seed(sampling.seed)
        grammar = RowGrammar(job.grammar) if job.grammar is not None else None
        return Row(job, self.eos, generator=generator, grammar=grammar)

    # -- one step -----------------------------------------------------------------------------

    def _step(self) -> list[Done]:
        batch = self.batch
        assert batch is not None
        width = batch.width
        positions = (width - batch.pad_lengths)[:, None]
        masks = self.masks.start(batch.grammars) if self.overlap_masks else None
        if self.lean is not None:
            lean, device = self.lean, self.device
            logits = self._run(
                lambda: lean(
                    batch.last_tokens.to(device),
                    positions.to(device),
                    batch.pad_lengths,
                    batch.layers,
                )
            )
        else:
            mask = (torch.arange(width + 1)[None, :] >= batch.pad_lengths[:, None]).long()
            logits = self._forward(batch.last_tokens[:, None], mask, positions, batch.layers)
        self._count_experts(batch, None)
        self.steps += 1
        self.row_steps += len(batch)
        if masks is not None:
            mask = masks.result()
        else:
            mask = BatchMask.fill(batch.grammars, logits, batch.greedy_rows())
        batch.choose_next(logits, mask)
        return self._retire()

    def _forward(self, ids, mask, positions, layers: list[KVBuffer]) -> torch.Tensor:
        device = self.device

        def full() -> torch.Tensor:
            with torch.inference_mode():
                out = self.model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    cache=Cache(layers=layers),
                    use_cache=True,
                    logits_to_keep=1,
                )
            return out.logits[:, -1].float()

        return self._run(full)

    def _run(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`forward()` with the expert recorder around it."""
        if self.recorder is not None:
            self.recorder.start()
        try:
            return forward()
        except BaseException:
            if self.recorder is not None:
                self.recorder.cancel()
            raise

    # -- leaving ------------------------------------------------------------------------------

    def _retire(self) -> list[Done]:
        """Rows that stop after their latest token leave the batch."""
        batch = self.batch
        if batch is None:
            return []
        finished: dict[int, Finish] = {}
        for i, row in enumerate(batch.rows):
            finish = row.finish(self.detokenize)
            if finish is not None:
                finished[i] = finish
        if not finished:
            return []
        start = time.perf_counter()
        counts = batch.expert_counts.tolist() if batch.expert_counts is not None else None
        done = [
            Done(
                batch.rows[i].job,
                batch.rows[i].tokens,
                finish,
                counts[i] if counts is not None else None,
            )
            for i, finish in finished.items()
        ]
        if self.recorder is not None:
            self.recorder.seconds += time.perf_counter() - start
        for i in finished:
            batch.rows[i].release()
        kept = [i for i in range(len(batch)) if i not in finished]
        if kept:
            batch.keep(kept)
        else:
            self.batch = None
        return done

    # -- telemetry ----------------------------------------------------------------------------

    def _expert_counts_start(self, rows: int) -> torch.Tensor | None:
        if self.recorder is None:
            return None
        shape = (rows, len(self.recorder.modules), self.recorder.num_experts)
        return torch.zeros(shape, dtype=torch.long)

    def _count_experts(self, batch: Batch, mask: torch.Tensor | None) -> None:
        """Add the last forward's recorded routing to the rows of `batch` that were in it;
        `mask` marks real prompt tokens (None: a decode step)."""
        recorder = self.recorder
        if recorder is None or batch.expert_counts is None:
            return
        routed = recorder.take()
        start = time.perf_counter()
        batch.count_experts(routed, recorder.top_k, mask)
        recorder.seconds += time.perf_counter() - start


def _chunks(jobs: list[Job]) -> list[list[Job]]:
    """Length-sorted prompts cut into chunks of at most PREFILL_TOKENS padded tokens."""
    chunks: list[list[Job]] = []
    for job in jobs:
        if chunks and (len(chunks[-1]) + 1) * len(job.prompt_ids) <= PREFILL_TOKENS:
            chunks[-1].append(job)
        else:
            chunks.append([job])
    return chunks
