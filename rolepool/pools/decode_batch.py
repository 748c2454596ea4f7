"""The decode engine's running batch: the rows decoding together and everything kept per row.

Each piece of per-row state has one owner. A `Row` owns its request and the tokens it has made; a
`Batch` owns, for its rows in order, the layers' KV caches, the padding before each row's tokens
(`pad_lengths`), the token each row feeds next (`last_tokens`) and the experts its tokens were
routed to (`expert_counts`). Index i means the same row in all of them, so they change only
through the batch's own operations, which keep them in step: `append` (a prefilled chunk joins),
`keep` (rows that left are dropped, the last rows moving into their places), `choose_next` (each
row's next token) and `count_experts` (a forward's routing). The decoder (`rolepool.pools.decode`)
decides when those happen; it never edits the lists and tensors itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from rolepool.core import Sampling
from rolepool.pools.batching import Job
from rolepool.pools.constrained import BatchMask, RowGrammar, block_openings, closing
from rolepool.pools.kv_buffer import KVBuffer

__all__ = ["Batch", "Finish", "Row"]

Finish = Literal["stop", "length", "abandoned"]
"""Why a row left: EOS or a stop string, its max_tokens, or its caller gave up (nobody waits)."""


@dataclass(eq=False)
class Row:
    """One request decoding: its job, the tokens made so far, if seeded its own stream, and if
    constrained its grammar state (`rolepool.pools.constrained`)."""

    job: Job
    eos: frozenset[int]
    tokens: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    grammar: RowGrammar | None = None

    @property
    def sampling(self) -> Sampling:
        return self.job.request.sampling

    def finish(self, detokenize: Callable[[list[int]], str]) -> Finish | None:
        """Why the row stops after its latest token, or None to go on."""
        if self.tokens[-1] in self.eos:
            return "stop"
        if self.grammar is not None and self.grammar.error is not None:
            return "stop"  # the grammar refused a token: nothing valid can follow
        stops = self.sampling.stop
        if stops:
            # A character can take up to 4 byte-level tokens, so look back 4 tokens per character.
            window = 4 * max(len(s) for s in stops) + 4
            tail = detokenize(self.tokens[-window:])
            if any(s in tail for s in stops):
                return "stop"
        if len(self.tokens) >= self.job.max_tokens:
            return "length"
        if self.job.state == "abandoned":
            return "abandoned"
        return None

    @property
    def closing(self) -> bool:
        """Whether the row is constrained and near its max_tokens: it should close its call."""
        left = self.job.max_tokens - len(self.tokens)
        return self.grammar is not None and closing(left, self.job.max_tokens)

    def release(self) -> None:
        """The row leaves the engine: give back its matcher, if it holds one."""
        if self.grammar is not None:
            self.grammar.release()


@dataclass(eq=False)
class Batch:
    """Rows decoding together over a left-padded cache of `width` positions: row i's real
    tokens are at positions [pad_lengths[i], width)."""

    rows: tuple[Row, ...]
    layers: list[KVBuffer]
    pad_lengths: torch.Tensor
    last_tokens: torch.Tensor
    """The token each row feeds to the next step (the latest it made)."""
    expert_counts: torch.Tensor | None
    """(rows, MoE layers, experts): how often each row's tokens were routed to each expert."""

    @classmethod
    def empty(cls, num_layers: int) -> Batch:
        none = torch.zeros(0, dtype=torch.long)
        return cls((), [KVBuffer() for _ in range(num_layers)], none, none, None)

    @property
    def width(self) -> int:
        return self.layers[0].width

    def __len__(self) -> int:
        return len(self.rows)

    def greedy_rows(self) -> set[int]:
        """Rows that take the argmax and are not closing a call (see `BatchMask.fill`)."""
        return {
            i
            for i, row in enumerate(self.rows)
            if row.sampling.temperature == 0 and not row.closing
        }

    @property
    def grammars(self) -> list[RowGrammar | None]:
        """Each row's grammar state (None for a free row), in row order."""
        return [row.grammar for row in self.rows]

    def append(self, part: Batch) -> None:
        """Add `part`'s rows after this batch's, copying only theirs; the narrower side's rows
        get more padding."""
        before = self.width
        for layer, added in zip(self.layers, part.layers, strict=True):
            layer.add_rows(added)
        width = self.width
        self.rows = self.rows + part.rows
        self.pad_lengths = torch.cat(
            [self.pad_lengths + (width - before), part.pad_lengths + (width - part.width)]
        )
        self.last_tokens = torch.cat([self.last_tokens, part.last_tokens])
        if part.expert_counts is not None:
            counts = self.expert_counts
            self.expert_counts = (
                part.expert_counts if counts is None else torch.cat([counts, part.expert_counts])
            )

    def keep(self, kept: list[int]) -> None:
        """Keep the rows at `kept` (ascending, not empty): rows from the end of the batch fill
        the places of rows that left before them, so only the moved rows' caches are copied;
        then padding no remaining row needs leaves the window."""
        rows = len(kept)
        staying = set(kept)
        holes = [i for i in range(rows) if i not in staying]
        movers = [i for i in kept if i >= rows]
        order = list(range(rows))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        dst, src = torch.tensor(holes, dtype=torch.long), torch.tensor(movers, dtype=torch.long)
        for layer in self.layers:
            layer.move_rows(dst, src, rows)
        index = torch.tensor(order)
        self.rows = tuple(self.rows[i] for i in order)
        self.pad_lengths = self.pad_lengths.index_select(0, index)
        self.last_tokens = self.last_tokens.index_select(0, index)
        if self.expert_counts is not None:
            self.expert_counts = self.expert_counts.index_select(0, index)
        lead = int(self.pad_lengths.min())  # positions no remaining row needs
        if lead:
            for layer in self.layers:
                layer.trim(lead)
            self.pad_lengths -= lead

    def choose_next(self, logits: torch.Tensor, mask: BatchMask | None = None) -> None:
        """Each row's next token from its `logits` row: the argmax, or a draw with the row's
        temperature and top_p (from its own generator if seeded); a constrained row chooses
        among the tokens its `mask` allows, and its grammar takes the token."""
        ending = [(i, row.grammar) for i, row in enumerate(self.rows) if row.closing]
        if mask is not None:
            mask.apply(logits, [i for i, _ in ending])
        block_openings(logits, ending)  # type: ignore[arg-type]
        tokens = logits.argmax(-1)
        sampled = [i for i, row in enumerate(self.rows) if row.sampling.temperature > 0]
        if sampled:
            index = torch.tensor(sampled, device=logits.device)
            rows = [self.rows[i] for i in sampled]
            probs = _probs(logits.index_select(0, index), rows)
            shared = [j for j, row in enumerate(rows) if row.generator is None]
            if shared:
                picks = torch.multinomial(probs[shared], 1).squeeze(1)
                tokens[index[shared]] = picks
            for j, row in enumerate(rows):
                if row.generator is not None:
                    tokens[sampled[j]] = torch.multinomial(probs[j], 1, generator=row.generator)[0]
        self.last_tokens = tokens.cpu()
        for row, token in zip(self.rows, self.last_tokens.tolist(), strict=True):
            row.tokens.append(token)
            if row.grammar is not None:
                row.grammar.advance(token)
            if row.job.on_token is not None:
                row.job.on_token(token)

    def count_experts(
        self, routed: list[torch.Tensor], top_k: int, mask: torch.Tensor | None
    ) -> None:
        """Add a forward's routing (per MoE layer, the experts chosen for each position) to
        each row's counts; `mask` marks real prompt tokens (None: a decode step, one real token
        per row)."""
        counts = self.expert_counts
        if counts is None:
            return
        rows = counts.shape[0]
        weight = None
        if mask is not None:
            weight = mask[:, :, None].expand(-1, -1, top_k).reshape(rows, -1)
        for layer, index in enumerate(routed):
            index = index.view(rows, -1)
            w = weight if weight is not None else torch.ones_like(index)
            counts[:, layer].scatter_add_(1, index, w)


def _probs(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
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
