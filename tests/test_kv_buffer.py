"""`KVBuffer`: rows join right-aligned, leave by moving rows from the end, padding leaves the
window, and what the views show is always the rows' own keys and values with zero padding."""

from __future__ import annotations

import torch

from rolepool.pools.kv_buffer import KVBuffer


def _layer(lengths: list[int], seed: int) -> tuple[KVBuffer, list[torch.Tensor]]:
    """A prefilled layer of left-padded rows with these real lengths; each row's real keys."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    keys = torch.randn(len(lengths), 2, width, 4, generator=gen)
    values = keys + 100
    for i, n in enumerate(lengths):
        keys[i, :, : width - n] = values[i, :, : width - n] = 0
    layer = KVBuffer()
    layer.update(keys, values)
    return layer, [keys[i, :, width - n :] for i, n in enumerate(lengths)]


def _check(layer: KVBuffer, rows: list[torch.Tensor]) -> None:
    """The layer holds exactly `rows`, right-aligned, with zeros to their left."""
    assert layer.keys.shape[0] == layer.rows == len(rows)
    assert layer.keys.shape[2] == layer.width >= max(r.shape[1] for r in rows)
    for i, real in enumerate(rows):
        n = real.shape[1]
        torch.testing.assert_close(layer.keys[i, :, layer.width - n :], real)
        torch.testing.assert_close(layer.values[i, :, layer.width - n :], real + 100)
        assert not layer.keys[i, :, : layer.width - n].any()
        assert not layer.values[i, :, : layer.width - n].any()


def test_rows_added_to_a_narrower_batch_widen_it_and_keep_everyone_right_aligned():
    batch = KVBuffer()
    expected: list[torch.Tensor] = []
    for seed, lengths in enumerate([[3, 5], [2], [9, 4], [70, 1]]):
        part, real = _layer(lengths, seed)
        batch.add_rows(part)
        expected += real
        _check(batch, expected)
        assert batch.width == max(r.shape[1] for r in expected)


def test_a_step_appends_a_position_to_every_row_and_survives_running_out_of_room():
    batch, expected = _layer([4, 6, 1], 0)
    start = KVBuffer()
    start.add_rows(batch)
    for step in range(150):  # more than the spare room: the buffer is reallocated on the way
        k = torch.full((3, 2, 1, 4), float(step + 1))
        start.update(k, k + 100)
        expected = [torch.cat([r, k[0]], dim=1) for r in expected]
    _check(start, expected)


def test_rows_that_leave_are_replaced_by_rows_from_the_end():
    batch = KVBuffer()
    part, real = _layer([5, 3, 7, 2, 6], 1)
    batch.add_rows(part)
    # Rows 0 and 2 leave: rows 3 and 4 move into their places, in that order.
    batch.move_rows(torch.tensor([0, 2]), torch.tensor([3, 4]), 3)
    _check(batch, [real[3], real[1], real[4]])
    # Leaving from the end moves nothing.
    batch.move_rows(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 2)
    _check(batch, [real[3], real[1]])


def test_trimming_drops_padding_no_row_needs():
    batch = KVBuffer()
    part, real = _layer([5, 3], 2)
    batch.add_rows(part)
    batch.move_rows(torch.tensor([0]), torch.tensor([1]), 1)
    assert batch.width == 5
    batch.trim(2)
    _check(batch, [real[1]])
    assert batch.width == 3


def test_a_prefill_with_the_wrong_number_of_rows_is_refused():
    batch, _ = _layer([3, 3], 0)
    try:
        batch.update(torch.zeros(3, 2, 1, 4), torch.zeros(3, 2, 1, 4))
    except ValueError as exc:
        assert "3 rows" in str(exc)
    else:
        raise AssertionError("accepted keys for the wrong number of rows")
