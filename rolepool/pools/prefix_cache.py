"""Prefix caching for the decode engine: the KV of a prompt's leading blocks, kept for the next
prompt that starts with the same tokens.

Every agent of a role sends the same system prompt and tool schemas, and each turn of a
conversation resends the turns before it, so most of a prompt's prefill recomputes keys and values
some earlier request already computed. `PrefixCache` keeps them in blocks of `block` tokens
(vLLM's hashed blocks): a block is found by its parent block and its own tokens (the dict key
holds the tokens themselves, so a reuse is exact, never a hash collision), so a block stands for
the whole prefix up to its end. A request reuses the longest chain of cached blocks that leaves at
least one prompt token to prefill (the logits of the last one choose the first new token).

Memory is bounded by `max_tokens` (blocks x block size, over all layers' keys and values); when a
new block would pass it, the least recently used block goes first. A block is touched after its
descendants whenever a chain is used, so leaves leave before the prefixes others still share; a
block whose parent left can no longer be reached (ids are never reused) and ages out in turn.

`seat` lays out a chunk of prompts, some with cached prefixes, for one prefill: each row's cached
keys and values right-aligned in a cached region the forward reads as its past, its remaining
tokens left-padded after it; `compact` then moves each row's prefix and new positions together,
into the left-padded layout the running batch uses (`rolepool.pools.decode_batch`). A row with no
cached prefix simply has none of the cached region. Greedy outputs are the same as without the
cache, up to the float rounding of a different batch shape (the engine's own caveat).
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rolepool.pools.kv_buffer import KVBuffer

__all__ = ["BLOCK_TOKENS", "Prefix", "PrefixCache", "Seated", "compact", "pilots", "seat"]

BLOCK_TOKENS = 16
"""Tokens per cached block: small enough that little of a shared prefix is left over, large
enough that a long prompt is a short chain."""


@dataclass
class Prefix:
    """A cached prefix: its length and its keys and values, (layers, 2, kv heads, length, dim)."""

    length: int
    kv: torch.Tensor


@dataclass(eq=False)
class _Block:
    id: int
    kv: torch.Tensor  # (layers, 2, kv heads, block, dim)


class PrefixCache:
    """Blocks of prompt KV for one model, looked up by exact token prefix, bounded by
    `max_tokens`, least recently used out first. Used from the decode thread only."""

    def __init__(self, max_tokens: int = 32768, block: int = BLOCK_TOKENS) -> None:
        if block < 1 or max_tokens < block:
            raise ValueError("need block >= 1 and max_tokens >= block")
        self.block, self.max_tokens = block, max_tokens
        self._blocks: OrderedDict[tuple[int, tuple[int, ...]], _Block] = OrderedDict()
        self._ids = itertools.count(1)  # 0 is the empty prefix
        self.hit_tokens = 0
        """Prompt tokens served from the cache so far (not prefilled)."""
        self.evicted = 0

    @property
    def tokens(self) -> int:
        """Tokens held (blocks x block size)."""
        return len(self._blocks) * self.block

    def _chain(self, ids: Sequence[int], blocks: int) -> list[tuple[int, tuple[int, ...]]]:
        """The keys of the cached blocks that begin `ids`, at most `blocks` of them."""
        keys, parent, size = [], 0, self.block
        for b in range(blocks):
            key = (parent, tuple(ids[b * size : (b + 1) * size]))
            found = self._blocks.get(key)
            if found is None:
                break
            keys.append(key)
            parent = found.id
        return keys

    def _touch(self, keys: list[tuple[int, tuple[int, ...]]]) -> None:
        for key in reversed(keys):  # the root of the chain ends up the most recent
            self._blocks.move_to_end(key)

    def match(self, ids: Sequence[int]) -> Prefix | None:
        """The longest cached prefix of `ids` that leaves at least one token to prefill."""
        keys = self._chain(ids, (len(ids) - 1) // self.block)
        if not keys:
            return None
        self._touch(keys)
        kv = torch.cat([self._blocks[key].kv for key in keys], dim=3)
        length = len(keys) * self.block
        self.hit_tokens += length
        return Prefix(length, kv)

    def insert(self, ids: Sequence[int], layers: list[KVBuffer], row: int, start: int) -> None:
        """Keep the full blocks of prompt `ids`, whose keys and values are row `row` of
        `layers` from position `start` on; blocks already held are only touched."""
        blocks = len(ids) // self.block
        keys = self._chain(ids, blocks)
        if len(keys) < blocks:
            size, end = self.block, start + blocks * self.block
            kv = torch.stack(
                [
                    torch.stack([la.keys[row, :, start:end], la.values[row, :, start:end]])
                    for la in layers
                ]
            )
            parent = self._blocks[keys[-1]].id if keys else 0
            for b in range(len(keys), blocks):
                key = (parent, tuple(ids[b * size : (b + 1) * size]))
                block = _Block(next(self._ids), kv[:, :, :, b * size : (b + 1) * size].clone())
                self._blocks[key] = block
                keys.append(key)
                parent = block.id
        self._touch(keys)
        while self.tokens > self.max_tokens:
            self._blocks.popitem(last=False)
            self.evicted += 1

    def clear(self) -> None:
        self._blocks.clear()

    def cached(self, ids: Sequence[int]) -> int:
        """How many leading tokens of `ids` a `match` would serve (nothing is touched)."""
        return len(self._chain(ids, (len(ids) - 1) // self.block)) * self.block


def pilots(cache: PrefixCache, prompts: list[Sequence[int]]) -> list[int]:
    """Which of an admission's prompts to prefill first, so the rest reuse their blocks: for
    each leading block that no cached prefix covers and that begins more than one of `prompts`,
    the first prompt that begins with it. A burst of requests of one role thus computes the
    role's prefix once, not once per request."""
    size = cache.block
    heads = Counter(tuple(p[:size]) for p in prompts if len(p) > size)
    chosen: dict[tuple[int, ...], int] = {}
    for i, prompt in enumerate(prompts):
        head = tuple(prompt[:size])
        if heads[head] > 1 and head not in chosen and not cache.cached(prompt):
            chosen[head] = i
    return sorted(chosen.values())


@dataclass
class Seated:
    """A chunk laid out for a prefill over cached prefixes (see the module docstring)."""

    ids: torch.Tensor
    """(rows, S): each row's tokens after its cached prefix, left-padded."""
    pad: torch.Tensor
    """(rows,): padding before each row's new tokens."""
    past: torch.Tensor
    """(rows,): each row's cached tokens, right-aligned in the first `layers[0].width` places."""
    layers: list[KVBuffer]
    """Per layer, the cached region (rows, kv heads, P, dim); the prefill appends to it."""
    cached: int
    """P: the width of the cached region."""

    @property
    def key_mask(self) -> torch.Tensor:
        """(rows, P + S), 1 where a key is a real token: the cached prefix, then the new ones."""
        seen = torch.arange(self.cached)[None, :] >= (self.cached - self.past)[:, None]
        width = self.ids.shape[1]
        real = torch.arange(width)[None, :] >= self.pad[:, None]
        return torch.cat([seen, real], dim=1).long()

    @property
    def positions(self) -> torch.Tensor:
        """(rows, S): each new token's position in its prompt."""
        real = torch.arange(self.ids.shape[1])[None, :] >= self.pad[:, None]
        return (real.long().cumsum(-1) - 1).clamp(min=0) + self.past[:, None]


def seat(prompts: list[list[int]], hits: list[Prefix | None], pad_id: int) -> Seated:
    """Lay out `prompts` with their cached prefixes `hits` for one prefill (at least one hit)."""
    past = torch.tensor([hit.length if hit else 0 for hit in hits])
    cached = int(past.max())
    kv = next(hit.kv for hit in hits if hit is not None)
    layers_n, _, heads, _, dim = kv.shape
    region = kv.new_zeros((layers_n, 2, len(prompts), heads, cached, dim))
    for i, hit in enumerate(hits):
        if hit is not None:
            region[:, :, i, :, cached - hit.length :] = hit.kv
    rest = [ids[int(n) :] for ids, n in zip(prompts, past.tolist(), strict=True)]
    width = max(len(r) for r in rest)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rest):
        ids[i, width - len(r) :] = torch.tensor(r)
    layers = []
    for layer in range(layers_n):
        buffer = KVBuffer()
        buffer.update(region[layer, 0], region[layer, 1])
        layers.append(buffer)
    pad = torch.tensor([width - len(r) for r in rest])
    return Seated(ids, pad, past, layers, cached)


def compact(seated: Seated) -> tuple[list[KVBuffer], torch.Tensor]:
    """After the prefill: each row's cached and new positions moved together, right-aligned
    and left-padded with zeros; the new layers and each row's padding."""
    cached, width = seated.cached, seated.ids.shape[1]
    new = width - seated.pad
    lengths = seated.past + new
    full = int(lengths.max())
    at = torch.arange(full)[None, :] - (full - lengths)[:, None]  # index into the row's prompt
    from_cache = at < seated.past[:, None]
    source = torch.where(
        from_cache,
        cached - seated.past[:, None] + at,
        cached + seated.pad[:, None] + at - seated.past[:, None],
    )
    real = at >= 0
    source = source.where(real, 0)
    out = []
    for layer in seated.layers:
        keys, values = layer.keys, layer.values
        index = source.to(keys.device)[:, None, :, None].expand(
            -1, keys.shape[1], -1, keys.shape[3]
        )
        keep = real.to(keys.device)[:, None, :, None]
        buffer = KVBuffer()
        buffer.update(
            keys.gather(2, index).masked_fill_(~keep, 0),
            values.gather(2, index).masked_fill_(~keep, 0),
        )
        out.append(buffer)
    return out, full - lengths
