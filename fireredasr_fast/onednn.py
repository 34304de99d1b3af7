"""The `onednn` backend: Linear weights pre-packed once for oneDNN's fp32 matmul.

Eager torch hands every Linear to MKL's general GEMM, which re-packs the weight on each
call. That hardly matters for the encoder's long matrices, but a decoder step multiplies
3-24 rows by 1.5 GB of AED-L weights, and the re-packing doubles the memory traffic of a
step that is bound by it. oneDNN can pack a weight once into the blocked layout its
kernels read (`torch.ops.mkldnn._reorder_linear_weight`, what torch's own CPU compiler
uses); a packed step then reads each weight once.

Costs, which is why this is opt-in (`encoder_backend="onednn"`, `decoder_backend="onednn"`):
the packed weights are a private copy in each process (not the memory-mapped checkpoint
that workers share), and oneDNN sums in a different order than MKL, so outputs move by
~1e-6 and a near-tie could pick another token. Measured in docs/engine.md.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Row counts the packed layouts are tuned for (any count works): a padded encoder batch, and
# beam x a few utterances per decoder step.
ENCODER_ROWS_HINT = 1024
DECODER_ROWS_HINT = 8


def available() -> bool:
    """True when this torch build has oneDNN with the packed-Linear operators."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


class PackedLinear(nn.Module):
    """A Linear whose weight lives in oneDNN's packed layout (CPU, fp32, inference only)."""

    def __init__(self, linear: nn.Linear, rows_hint: int) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # rows_hint: the row count the layout is tuned for; any row count works.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_linears(module: nn.Module, rows_hint: int) -> int:
    """Replace every Linear under `module` (PointwiseConv included) by a PackedLinear;
    returns how many were replaced."""
    if not available():
        raise ValueError("the onednn backend needs a torch build with oneDNN (torch.backends.mkldnn)")
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                if child.weight.device.type != "cpu" or child.weight.dtype != torch.float32:
                    raise ValueError("the onednn backend is for fp32 weights on CPU")
                setattr(parent, name, PackedLinear(child, rows_hint))
                count += 1
    return count
