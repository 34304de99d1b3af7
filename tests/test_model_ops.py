"""Building blocks of model.py checked against their straightforward formulations."""

from __future__ import annotations

import pytest
import torch

from fireredasr_fast.model import DecoderCache, _rel_position_bias


def _strided_reference(q_v: torch.Tensor, p: torch.Tensor, scale: float) -> torch.Tensor:
    """The relative shift as one `as_strided` view of the full product (the formulation
    model.py used before it had to export to ONNX)."""
    n, h, t, _ = q_v.shape
    full = torch.matmul(q_v, p.transpose(-2, -1)).contiguous()
    width = 2 * t - 1
    view = full.as_strided((n, h, t, t), (h * t * width, t * width, width - 1, 1), full.storage_offset() + t - 1)
    return view * scale


def _upstream_rel_shift(q_v: torch.Tensor, p: torch.Tensor, scale: float) -> torch.Tensor:
    """Upstream's pad/reshape rel_shift, then the first t columns."""
    n, h, t, _ = q_v.shape
    x = torch.matmul(q_v, p.transpose(-2, -1))
    padded = torch.cat([x.new_zeros(n, h, t, 1), x], dim=-1).view(n, h, 2 * t, t)
    return padded[:, :, 1:].reshape(n, h, t, 2 * t - 1)[..., :t] * scale


@pytest.mark.parametrize("scale", [0.125, 0.3])  # a power of two is folded into q_v
@pytest.mark.parametrize("t", [1, 2, 3, 7, 64, 251])
@pytest.mark.parametrize("n", [1, 3])
def test_rel_position_bias_is_bit_identical(n: int, t: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(t * 10 + n)
    q_v = torch.randn(n, 4, t, 16, generator=gen)
    p = torch.randn(1, 4, 2 * t - 1, 16, generator=gen)
    got = _rel_position_bias(q_v, p, scale)
    assert got.shape == (n, 4, t, t)
    assert torch.equal(got, _strided_reference(q_v, p, scale))
    assert torch.equal(got, _upstream_rel_shift(q_v, p, scale))


@pytest.mark.parametrize("parents", [[0, 1, 2, 3, 4, 5], [0, 0, 2, 5, 3, 4], [1, 0, 2, 4, 4, 4], [2, 2, 2, 3, 3, 3]])
def test_cache_reorder_equals_a_full_copy(parents: list[int]) -> None:
    """reorder copies only the rows that take another row's history; the result must equal
    rebuilding every row from its parent (swaps, duplicates and the identity included), and
    the slots beyond the current length stay untouched."""
    gen = torch.Generator().manual_seed(0)
    rows, heads, capacity, d_k, length = 6, 2, 8, 4, 5

    def buffers() -> list[torch.Tensor]:
        return [torch.randn(rows, heads, capacity, d_k, generator=gen) for _ in range(2)]

    self_k, self_v = buffers(), buffers()
    mask = torch.rand(rows, capacity, generator=gen) > 0.3
    cache = DecoderCache(
        self_k=[b.clone() for b in self_k],
        self_v=[b.clone() for b in self_v],
        cross_k=[],
        cross_v=[],
        cross_mask=torch.ones(2, 1, 1, 3, dtype=torch.bool),
        self_mask=mask.clone(),
        beam=3,
        length=length,
    )
    index = torch.tensor(parents)
    cache.reorder(index)
    for ours, original in zip([*cache.self_k, *cache.self_v], [*self_k, *self_v], strict=True):
        expected = original.clone()
        expected[:, :, :length] = original[:, :, :length].index_select(0, index)
        assert torch.equal(ours, expected)
    expected_mask = mask.clone()
    expected_mask[:, :length] = mask[:, :length].index_select(0, index)
    assert torch.equal(cache.self_mask, expected_mask)
