"""Building blocks of model.py checked against their straightforward formulations."""

from __future__ import annotations

import pytest
import torch

from fireredasr_fast.model import _rel_position_bias


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
