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
* retires a row as soon as it stops (EOS, its own max_tokens, a stop string, its caller gave up):
  the last rows of the batch move into the places of rows that left, and padding no remaining
  row needs leaves the window;
* admits requests that arrive while others decode, between two steps (see `Batcher`).

Rows choose their tokens on their own: greedy rows take the argmax (as `generate` does, so greedy
outputs equal `generate`'s token for token, up to float rounding of other batch shapes), sampled
rows apply their own temperature and top_p, and a seeded row draws from its own `torch.Generator`,
so rows with different sampling settings share a batch and a seeded stream depends on its seed
alone.

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

from rolepool.pools.batching import Pending
from rolepool.pools.expert_load import ExpertRecorder
from rolepool.pools.kv_buffer import KVBuffer
from rolepool.pools.lean_step import LeanStep

__all__ = ["Decoder", "Done", "supports"]

PREFILL_TOKENS = 1024
"""Padded tokens per prefill chunk: small chunks of similar length waste little on padding
(measured: 32 prompts of 35-164 tokens prefill in half the time of one padded batch)."""


def supports(model: Any) -> bool:
    """Whether the engine can serve `model`: every cache layer a plain full-attention one."""
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


@dataclass(eq=False)
class _Row:
    pending: Pending
    eos: frozenset[int]
    tokens: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None

    @property
    def sampling(self):
        return self.pending.request.sampling


@dataclass
class Done:
    """A row that left the engine: its tokens and finish reason, or the error that ended it."""

    pending: Pending
    tokens: list[int] = field(default_factory=list)
    finish: str = "length"
    expert_load: list[list[int]] | None = None
    error: BaseException | None = None


@dataclass
class _Batch:
    """Rows decoding together: a left-padded cache of `width` positions, row i's real tokens in
    positions [pad[i], width)."""

    rows: list[_Row]
    layers: list[KVBuffer]
    pad: torch.Tensor
    last: torch.Tensor
    counts: torch.Tensor | None

    @property
    def width(self) -> int:
        return self.layers[0].width


class Decoder:
    """The rows in flight on one model; `run` is called from one thread at a time."""

    def __init__(
        self,
        model: Any,
        *,
        eos: list[int],
        pad: int,
        decode: Callable[[list[int]], str],
        recorder: ExpertRecorder | None,
        device: str,
    ) -> None:
        self.model, self.eos, self.pad_id, self.decode = model, frozenset(eos), pad, decode
        self.recorder, self.device = recorder, device
        # Decode steps take the lean forward when the model is one it serves (checked here).
        self.lean = LeanStep.build(model)
        self.num_layers = len(DynamicCache(config=model.config).layers)
        self.batch: _Batch | None = None
        self.steps = 0
        self.row_steps = 0

    @property
    def active(self) -> int:
        return len(self.batch.rows) if self.batch else 0

    def pendings(self) -> list[Pending]:
        return [row.pending for row in self.batch.rows] if self.batch else []

    def reset(self) -> None:
        self.batch = None

    def run(
        self,
        new: list[Pending],
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
                    rows, self.batch = self.batch.rows, None
                    done = [Done(row.pending, error=exc) for row in rows]

    # -- admission ----------------------------------------------------------------------------

    def _admit(self, new: list[Pending]) -> list[Done]:
        done: list[Done] = []
        for chunk in _chunks(sorted(new, key=lambda p: len(p.prompt_ids))):
            try:
                self._join(self._prefill(chunk))
            except Exception:
                # One bad prompt must not fail its chunk: retry the rows alone.
                for pending in chunk:
                    try:
                        self._join(self._prefill([pending]))
                    except Exception as exc:
                        done.append(Done(pending, error=exc))
        if self.batch is not None:
            done += self._retire(self._finished())
        return done

    def _join(self, part: _Batch) -> None:
        """Add a prefilled chunk's rows to the running batch (copying only theirs)."""
        batch = self.batch
        if batch is None:
            layers = [KVBuffer() for _ in range(self.num_layers)]
            empty = torch.zeros(0, dtype=torch.long)
            batch = self.batch = _Batch([], layers, empty, empty, None)
        before = batch.width
        for layer, added in zip(batch.layers, part.layers, strict=True):
            layer.add_rows(added)
        width = batch.width
        batch.rows = batch.rows + part.rows
        batch.pad = torch.cat([batch.pad + (width - before), part.pad + (width - part.width)])
        batch.last = torch.cat([batch.last, part.last])
        if part.counts is not None:
            batch.counts = (
                part.counts if batch.counts is None else torch.cat([batch.counts, part.counts])
            )

    def _prefill(self, chunk: list[Pending]) -> _Batch:
        width = max(len(p.prompt_ids) for p in chunk)
        ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        pad = torch.tensor([width - len(p.prompt_ids) for p in chunk])
        for i, pending in enumerate(chunk):
            ids[i, int(pad[i]) :] = torch.tensor(pending.prompt_ids)
        mask = (torch.arange(width)[None, :] >= pad[:, None]).long()
        layers = [KVBuffer() for _ in range(self.num_layers)]
        rows = [self._row(p) for p in chunk]
        counts = self._counts_start(len(chunk))
        if self.lean is not None:
            lean, device = self.lean, self.device
            logits = self._run(lambda: lean.prefill(ids.to(device), pad, layers))
        else:
            logits = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), layers)
        self._count(counts, mask)
        batch = _Batch(rows, layers, pad, torch.zeros(len(chunk), dtype=torch.long), counts)
        self._choose(batch, logits)
        return batch

    def _row(self, pending: Pending) -> _Row:
        sampling = pending.request.sampling
        generator = None
        if sampling.temperature > 0 and sampling.seed is not None:
            generator = torch.Generator(self.device).manual_seed(sampling.seed)
        return _Row(pending, self.eos, generator=generator)

    # -- one step -----------------------------------------------------------------------------

    def _step(self) -> list[Done]:
        batch = self.batch
        assert batch is not None
        width = batch.width
        positions = (width - batch.pad)[:, None]
        if self.lean is not None:
            lean, device = self.lean, self.device
            logits = self._run(
                lambda: lean(batch.last.to(device), positions.to(device), batch.pad, batch.layers)
            )
        else:
            mask = (torch.arange(width + 1)[None, :] >= batch.pad[:, None]).long()
            logits = self._forward(batch.last[:, None], mask, positions, batch.layers)
        self._count(batch.counts, None)
        self.steps += 1
        self.row_steps += len(batch.rows)
        self._choose(batch, logits)
        return self._retire(self._finished())

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

    def _choose(self, batch: _Batch, logits: torch.Tensor) -> None:
        """Each row's next token: argmax, or a draw with the row's temperature and top_p."""
        tokens = logits.argmax(-1)
        sampled = [i for i, row in enumerate(batch.rows) if row.sampling.temperature > 0]
        if sampled:
            index = torch.tensor(sampled, device=logits.device)
            rows = [batch.rows[i] for i in sampled]
            probs = _probs(logits.index_select(0, index), rows)
            shared = [j for j, row in enumerate(rows) if row.generator is None]
            if shared:
                picks = torch.multinomial(probs[shared], 1).squeeze(1)
                tokens[index[shared]] = picks
            for j, row in enumerate(rows):
                if row.generator is not None:
                    tokens[sampled[j]] = torch.multinomial(probs[j], 1, generator=row.generator)[0]
        batch.last = tokens.cpu()
        for row, token in zip(batch.rows, batch.last.tolist(), strict=True):
            row.tokens.append(token)

    # -- leaving ------------------------------------------------------------------------------

    def _finished(self) -> dict[int, str]:
        """Rows that stop after their latest token: index -> finish reason (or "" = gave up)."""
        assert self.batch is not None
        out: dict[int, str] = {}
        for i, row in enumerate(self.batch.rows):
            reason = _stop_reason(row, self.decode)
            if reason is not None:
                out[i] = reason
            elif row.pending.cancelled:
                out[i] = ""
        return out

    def _retire(self, finished: dict[int, str]) -> list[Done]:
        batch = self.batch
        if not finished or batch is None:
            return []
        start = time.perf_counter()
        counts = batch.counts.tolist() if batch.counts is not None else None
        done = [
            Done(
                batch.rows[i].pending,
                batch.rows[i].tokens,
                finish,
                counts[i] if counts is not None else None,
            )
            for i, finish in finished.items()
        ]
        if self.recorder is not None:
            self.recorder.seconds += time.perf_counter() - start
        keep = [i for i in range(len(batch.rows)) if i not in finished]
        if not keep:
            self.batch = None
            return done
        # Rows from the end of the batch fill the places of rows that left before it.
        rows = len(keep)
        holes = [i for i in sorted(finished) if i < rows]
        movers = [i for i in keep if i >= rows]
        order = list(range(rows))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        dst, src = torch.tensor(holes, dtype=torch.long), torch.tensor(movers, dtype=torch.long)
        for layer in batch.layers:
            layer.move_rows(dst, src, rows)
        index = torch.tensor(order)
        batch.rows = [batch.rows[i] for i in order]
        batch.pad = batch.pad.index_select(0, index)
        batch.last = batch.last.index_select(0, index)
        if batch.counts is not None:
            batch.counts = batch.counts.index_select(0, index)
        lead = int(batch.pad.min())  # positions no remaining row needs
        if lead:
            for layer in batch.layers:
                layer.trim(lead)
            batch.pad -= lead
        return done

    # -- telemetry ----------------------------------------------------------------------------

    def _counts_start(self, rows: int) -> torch.Tensor | None:
        if self.recorder is None:
            return None
        shape = (rows, len(self.recorder.modules), self.recorder.num_experts)
        return torch.zeros(shape, dtype=torch.long)

    def _count(self, counts: torch.Tensor | None, mask: torch.Tensor | None) -> None:
        """Add the last forward's routing to each row's counts; `mask` marks real prompt tokens
        (None: a decode step, one real token per row)."""
        recorder = self.recorder
        if recorder is None or counts is None:
            return
        routed = recorder.take()
        start = time.perf_counter()
        rows, k = counts.shape[0], recorder.top_k
        weight = None
        if mask is not None:
            weight = mask[:, :, None].expand(-1, -1, k).reshape(rows, -1)
        for layer, index in enumerate(routed):
            index = index.view(rows, -1)
            w = weight if weight is not None else torch.ones_like(index)
            counts[:, layer].scatter_add_(1, index, w)
        recorder.seconds += time.perf_counter() - start


def _chunks(pendings: list[Pending]) -> list[list[Pending]]:
    """Length-sorted prompts cut into chunks of at most PREFILL_TOKENS padded tokens."""
    chunks: list[list[Pending]] = []
    for pending in pendings:
        if chunks and (len(chunks[-1]) + 1) * len(pending.prompt_ids) <= PREFILL_TOKENS:
            chunks[-1].append(pending)
        else:
            chunks.append([pending])
    return chunks


def _probs(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
    """Softmax with each row's temperature, keeping the smallest set of tokens whose probability
    reaches the row's top_p (the most likely token always stays)."""
    temps = torch.tensor([row.sampling.temperature for row in rows], device=logits.device)
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    top_p = torch.tensor([row.sampling.top_p for row in rows], device=logits.device)
    if bool((top_p < 1).any()):
        ordered, order = probs.sort(dim=-1, descending=True)
        before = ordered.cumsum(-1) - ordered  # probability mass ahead of each token
        drop = before >= top_p[:, None]
        drop[:, 0] = False
        probs = probs.scatter(1, order, ordered.masked_fill(drop, 0.0))
    return probs


def _stop_reason(row: _Row, decode: Callable[[list[int]], str]) -> str | None:
    """Why the row stops after its latest token, or None: EOS, a stop string, its max_tokens."""
    if row.tokens[-1] in row.eos:
        return "stop"
    stops = row.sampling.stop
    if stops:
        # A character can take up to 4 byte-level tokens, so look back 4 tokens per character.
        window = 4 * max(len(s) for s in stops) + 4
        tail = decode(row.tokens[-window:])
        if any(s in tail for s in stops):
            return "stop"
    if len(row.tokens) >= row.pending.max_tokens:
        return "length"
    return None
