"""Schema-constrained decoding, the row side: each constrained row's matcher, and the token masks
of a batch where constrained and free rows decode together.

A `RowGrammar` is owned by its row (`rolepool.pools.decode_batch.Row`): it holds the row's
matcher while the row is constrained, advances it by each token the row makes, and lets it go
when the row leaves (`release`). In a lazy (`auto`) grammar the row is free until it writes the
grammar's trigger token; then a matcher is copied from the compiled grammar, and dropped again
once the call is closed.

`BatchMask` is one step's masks: a bitmask (32 tokens per int32 word) with a row for each
constrained row, filled by the engine, then applied to those rows' logits only (`-inf` where a
token is not allowed). Free rows' logits are never touched, so their greedy tokens stay exactly
what they were without constrained decoding. Filling may run on a helper thread while the
forward runs (`MaskFiller`), when the decoder asks for it (`Decoder.overlap_masks`): on the
2-core machine this project is measured on it did not pay (the helper competes with the
forward for the cores), so by default masks are filled after the forward.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import llguidance
import numpy
import torch

from rolepool.pools.grammar import Grammar

__all__ = ["BatchMask", "MaskFiller", "RowGrammar", "block_openings", "closing", "live_matchers"]

CLOSING_BONUS = 1e4
"""Added to the logits of allowed closing tokens of a row near its max_tokens: enough to win
over any other allowed token, while forbidden ones stay at -inf."""
CLOSING_TOKENS = 24
"""A constrained row this many tokens (or a quarter of its max_tokens, if fewer) from its limit
starts closing its call."""


_live = 0
_live_lock = threading.Lock()


def live_matchers() -> int:
    """Matchers held by rows now: rows that finish, fail or are cancelled give theirs back."""
    return _live


class RowGrammar:
    """One row's grammar state. See the module docstring."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self.matcher: llguidance.LLMatcher | None = None
        self.error: str | None = None
        """Why the matcher refused a token (should not happen: masks allow only tokens it
        accepts), or None."""
        if grammar.trigger is None:
            self._hold()

    @property
    def constrained(self) -> bool:
        """Whether the row's next token is masked."""
        return self.matcher is not None

    def advance(self, token: int) -> None:
        """Account for the token the row just made."""
        if self.matcher is None:
            if token == self.grammar.trigger and self.error is None:
                self._hold()
            return
        if not self.matcher.consume_token(token):
            self.error = self.matcher.get_error() or f"token {token} refused"
            self.release()
        elif self.grammar.trigger is not None and self.matcher.is_stopped():
            self.release()  # the call is closed: free text again until the next trigger

    def release(self) -> None:
        """Give the matcher back (the row left, or its constrained part ended)."""
        global _live
        if self.matcher is not None:
            self.matcher = None
            with _live_lock:
                _live -= 1

    def _hold(self) -> None:
        global _live
        self.matcher = self.grammar.matcher()
        with _live_lock:
            _live += 1


@dataclass
class BatchMask:
    """The masks of one step: `rows[j]` is the batch index whose allowed tokens are
    `allowed[j]` (unpacked from the engine's bitmask where it is filled, so that on the helper
    thread)."""

    rows: list[int]
    allowed: torch.Tensor
    closers: torch.Tensor

    @classmethod
    def fill(
        cls,
        grammars: Sequence[RowGrammar | None],
        logits: torch.Tensor | None = None,
        greedy: Collection[int] = (),
    ) -> BatchMask | None:
        """The masks for the rows of a batch (in order), or None when no row needs one. Given
        the step's `logits`, a row in `greedy` (argmax, not closing) whose argmax its matcher
        accepts gets no mask: masking would leave that argmax where it is, so the tokens are
        the same and the mask's cost (most of a constrained step's) is saved."""
        taken = _constrained(grammars)
        if taken is None:
            return None
        rows, matchers, vocab, closers = taken
        if logits is not None and greedy:
            best = logits.argmax(-1).tolist()
            needed = [
                (i, m)
                for i, m in zip(rows, matchers, strict=True)
                if i not in greedy or m.validate_tokens([best[i]]) != 1
            ]
            if not needed:
                return None
            rows, matchers = [i for i, _ in needed], [m for _, m in needed]
        return cls.compute(rows, matchers, vocab, closers)

    @classmethod
    def compute(
        cls,
        rows: list[int],
        matchers: list[llguidance.LLMatcher],
        vocab: int,
        closers: torch.Tensor,
    ) -> BatchMask:
        """The masks of `matchers`, the matchers of the batch's rows `rows`."""
        words = (vocab + 31) // 32
        bitmask = numpy.zeros((len(rows), words), dtype=numpy.int32)
        for j, matcher in enumerate(matchers):
            matcher.unsafe_compute_mask_ptr(bitmask[j].ctypes.data, words * 4)
        # numpy, not torch, unpacks it: a helper thread never starts an OpenMP team of its own
        bits = numpy.unpackbits(bitmask.view(numpy.uint8), axis=1, bitorder="little")
        return cls(rows, torch.from_numpy(bits.view(numpy.bool_)), closers)

    def apply(self, logits: torch.Tensor, closing: Sequence[int] = ()) -> None:
        """Set the logits of tokens a constrained row may not take to -inf, in place. Rows in
        `closing` (about to reach their max_tokens) prefer the allowed tokens that close what
        is open (`Grammar.closers`), so the call ends valid rather than cut off."""
        vocab = logits.shape[-1]
        allowed = self.allowed
        if allowed.shape[1] < vocab:  # logits padded past the tokenizer: never allowed
            extra = torch.zeros((len(self.rows), vocab - allowed.shape[1]), dtype=torch.bool)
            allowed = torch.cat([allowed, extra], dim=1)
        every = len(self.rows) == logits.shape[0]  # all rows constrained: no gather
        index = torch.tensor(self.rows, device=logits.device)
        chosen = logits if every else logits.index_select(0, index)
        chosen.masked_fill_(~allowed[:, :vocab].to(logits.device), float("-inf"))
        for j, i in enumerate(self.rows):
            if i in closing:
                chosen[j] += self._closing_bonus(allowed[j, :vocab], vocab).to(logits.device)
        if not every:
            logits.index_copy_(0, index, chosen)

    def _closing_bonus(self, allowed: torch.Tensor, vocab: int) -> torch.Tensor:
        """What a closing row adds to its logits: inside a string (most tokens allowed) a quote
        first, elsewhere a closing bracket, the closing tag or end of sequence first."""
        quotes, brackets = self.closers[:, :vocab].float()
        if quotes.shape[0] < vocab:
            quotes = torch.cat([quotes, torch.zeros(vocab - quotes.shape[0])])
            brackets = torch.cat([brackets, torch.zeros(vocab - brackets.shape[0])])
        in_string = int(allowed.sum()) > vocab // 4
        first, second = (quotes, brackets) if in_string else (brackets, quotes)
        return (2 * first + second) * CLOSING_BONUS


class MaskFiller:
    """Fills a step's masks on a helper thread, so it overlaps the forward pass. Owned by the
    decoder; `close` ends the thread."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def start(self, grammars: Sequence[RowGrammar | None]) -> Future[BatchMask | None] | None:
        """Begin filling the masks of `grammars`' rows; None when no row is constrained (then
        nothing runs)."""
        taken = _constrained(grammars)  # taken here: the rows may change once the step is over
        if taken is None:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="rolepool-masks")
        return self._pool.submit(BatchMask.compute, *taken)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _constrained(
    grammars: Sequence[RowGrammar | None],
) -> tuple[list[int], list[llguidance.LLMatcher], int, torch.Tensor] | None:
    """The constrained rows' indices, their matchers and the vocabulary size; None if none."""
    rows, matchers = [], []
    for i, grammar in enumerate(grammars):
        if grammar is not None and grammar.matcher is not None:
            rows.append(i)
            matchers.append(grammar.matcher)
    if not rows:
        return None
    grammar = grammars[rows[0]].grammar  # type: ignore[union-attr]
    return rows, matchers, grammar.vocab, grammar.closers


def closing(remaining: int, max_tokens: int) -> bool:
    """Whether a constrained row with `remaining` tokens left of `max_tokens` should close."""
    return remaining <= min(CLOSING_TOKENS, max_tokens // 4)


def block_openings(logits: torch.Tensor, rows: Sequence[tuple[int, RowGrammar]]) -> None:
    """Closing rows of a lazy grammar that are free (between calls) may not open another call:
    it could not be finished before max_tokens. Their trigger token gets -inf, in place."""
    for i, grammar in rows:
        if grammar.matcher is None and grammar.grammar.trigger is not None:
            logits[i, grammar.grammar.trigger] = float("-inf")
