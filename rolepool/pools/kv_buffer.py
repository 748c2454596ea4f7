"""One layer's KV cache for the decode engine: rows and positions with spare room, changed in place.

transformers' `DynamicLayer` grows by `torch.cat`, which copies the whole cache at every decode
step; on a 32-row batch of the reference models that copy was about a third of a step's time.
Rebuilding the cache whenever a row leaves or joins the batch costs the same again: measured on
the shipped dense-s1 (64 requests at concurrency 32), those rebuilds were about 15% of the wall.

`KVBuffer` is a `DynamicLayer` (so attention, masks and `get_seq_length` treat it as one) whose
`keys`/`values` are views of larger buffers: the batch's rows occupy the first `rows` slots and a
window of positions `[start, end)`, left-padded (each row's real positions are the window's last
ones). Every change the engine makes touches only what changes:

* a step writes one position at the window's end (`update`);
* rows that leave are replaced by rows from the end of the batch (`move_rows`), so only the moved
  rows are copied;
* padding no row needs leaves the window by moving `start` (`trim`);
* admitted rows are copied in right-aligned (`add_rows`), widening the window to the left when a
  newcomer is longer than the batch; the buffer keeps spare positions on both sides for that.

Only when the spare room runs out is the buffer reallocated (with room to spare again), so a step
costs O(1) copies of the cache amortised. Padding is kept at zero: it is masked out, but a NaN
there would still poison its row (0 * NaN).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["KVBuffer"]

_SPARE = 64  # positions of room on each side of the window when a buffer is (re)allocated


class KVBuffer(DynamicLayer):
    """A layer's keys and values for `rows` rows over the window `[start, end)` of a larger
    buffer; `keys`/`values` are views of that window, shaped like transformers' caches."""

    def __init__(self) -> None:
        super().__init__()
        self._k = self._v = torch.zeros(0)
        self.rows = 0
        self.start = self.end = 0

    @property
    def width(self) -> int:
        return self.end - self.start

    # -- what transformers calls ----------------------------------------------------------------

    def update(self, key_states, value_states, *args, **kwargs):
        """Append positions for every row (a prefill, or one decode step)."""
        rows, n = key_states.shape[0], key_states.shape[-2]
        if not self.is_initialized:
            self._realloc(key_states, rows, 0, left=0, right=n)
            self.rows = rows
        elif rows != self.rows:
            raise ValueError(f"{rows} rows of keys for a cache of {self.rows} rows")
        if self.end + n > self._k.shape[-2]:
            self._realloc(key_states, self.rows, self.width, left=_SPARE, right=n + _SPARE)
        self._k[:rows, :, self.end : self.end + n] = key_states
        self._v[:rows, :, self.end : self.end + n] = value_states
        self.end += n
        self._view()
        return self.keys, self.values

    # -- what the decode engine calls -----------------------------------------------------------

    def add_rows(self, other: KVBuffer) -> None:
        """Append `other`'s rows, right-aligned to this window's end; the window widens to the
        left if `other` is wider."""
        rows = self.rows + other.rows
        width = max(self.width, other.width)
        like = other._k
        if not self.is_initialized or rows > self._k.shape[0] or width - self.width > self.start:
            room = rows if rows <= self._k.shape[0] else max(rows, 2 * self._k.shape[0])
            self._realloc(like, room, width, left=_SPARE, right=_SPARE)
        elif width > self.width:
            start = self.end - width
            self._k[: self.rows, :, start : self.start] = 0
            self._v[: self.rows, :, start : self.start] = 0
            self.start = start
        new = slice(self.rows, rows)
        pad = self.end - other.width
        self._k[new, :, pad : self.end] = other.keys
        self._v[new, :, pad : self.end] = other.values
        self._k[new, :, self.start : pad] = 0
        self._v[new, :, self.start : pad] = 0
        self.rows = rows
        self._view()

    def move_rows(self, dst: torch.Tensor, src: torch.Tensor, rows: int) -> None:
        """Row `src[i]` becomes row `dst[i]`, then the batch keeps its first `rows` rows."""
        if len(dst):
            window = slice(self.start, self.end)
            dst, src = dst.to(self._k.device), src.to(self._k.device)
            self._k[dst, :, window] = self._k[src, :, window]
            self._v[dst, :, window] = self._v[src, :, window]
        self.rows = rows
        self._view()

    def trim(self, lead: int) -> None:
        """Drop the window's first `lead` positions (padding no row needs)."""
        self.start += lead
        self._view()

    # -- storage --------------------------------------------------------------------------------

    def _realloc(self, like: torch.Tensor, rows: int, width: int, *, left: int, right: int) -> None:
        """New buffers for `rows` rows and a window of `width` positions with room on each side;
        the rows held so far keep their keys and values, right-aligned, left-padded with zeros."""
        shape = (rows, like.shape[1], left + width + right, like.shape[3])
        k, v = like.new_empty(shape), like.new_empty(shape)
        start, end = left, left + width
        if self.is_initialized and self.rows:
            old = slice(0, self.rows)
            k[old, :, end - self.width : end] = self.keys
            v[old, :, end - self.width : end] = self.values
            k[old, :, start : end - self.width] = 0
            v[old, :, start : end - self.width] = 0
        self._k, self._v = k, v
        self.start, self.end = start, end
        self.device, self.is_initialized = like.device, True
        self._view()

    def _view(self) -> None:
        self.keys = self._k[: self.rows, :, self.start : self.end]
        self.values = self._v[: self.rows, :, self.start : self.end]
