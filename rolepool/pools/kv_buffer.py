"""One layer's KV cache for the decode engine: a buffer with spare room, written in place.

transformers' `DynamicLayer` grows by `torch.cat`, which copies the whole cache at every decode
step; on a 32-row batch of the reference models that copy was about a third of a step's time.
`KVBuffer` is a `DynamicLayer` (so attention, masks and `get_seq_length` treat it as one) whose
`keys`/`values` are views of larger buffers; `joined` builds the layer of a new batch from rows
of others (rows leaving, rows admitted), right-aligned, i.e. left-padded.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["KVBuffer"]

_SPARE = 64  # room for this many more positions before a buffer is reallocated


class KVBuffer(DynamicLayer):
    """A layer's keys and values in a buffer with spare room: a step writes one position in
    place instead of `torch.cat` copying the whole cache."""

    def __init__(self) -> None:
        super().__init__()
        self._k = self._v = torch.zeros(0)
        self._n = 0

    def update(self, key_states, value_states, *args, **kwargs):
        n = self._n + key_states.shape[-2]
        if not self.is_initialized or n > self._k.shape[-2]:
            old = (self.keys, self.values) if self.is_initialized else None
            self._alloc(key_states, key_states.shape[0], n)
            if old is not None:
                self._k[:, :, : self._n], self._v[:, :, : self._n] = old
        self._k[:, :, self._n : n] = key_states
        self._v[:, :, self._n : n] = value_states
        self._view(n)
        return self.keys, self.values

    def _alloc(self, like: torch.Tensor, rows: int, room: int) -> None:
        # Unfilled: every position is written before it is read, left padding included (`joined`).
        shape = (rows, like.shape[1], room + _SPARE, like.shape[3])
        self._k, self._v = like.new_empty(shape), like.new_empty(shape)
        self.device, self.is_initialized = like.device, True

    def _view(self, n: int) -> None:
        self._n = n
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

    @classmethod
    def joined(cls, parts: list[tuple[KVBuffer, torch.Tensor | None, int]], width: int) -> KVBuffer:
        """Rows of several layers (rows `index` of each, None = all), right-aligned to `width`
        positions after dropping each part's first `lead` positions."""
        pieces = []
        for layer, index, lead in parts:
            k, v = layer.keys[:, :, lead:], layer.values[:, :, lead:]
            if index is not None:
                index = index.to(k.device)
                k, v = k.index_select(0, index), v.index_select(0, index)
            pieces.append((k, v))
        out = cls()
        out._alloc(pieces[0][0], sum(k.shape[0] for k, _ in pieces), width)
        row = 0
        for k, v in pieces:
            rows, n = k.shape[0], k.shape[-2]
            out._k[row : row + rows, :, width - n : width] = k
            out._v[row : row + rows, :, width - n : width] = v
            # Padding is masked out, but must be finite: 0 * NaN would still poison a row.
            out._k[row : row + rows, :, : width - n] = 0
            out._v[row : row + rows, :, : width - n] = 0
            row += rows
        out._view(width)
        return out
