"""Linear layers run by oneDNN's fp32 matmul: the default CPU path, and the `onednn` backend.

Eager torch hands every Linear to MKL's general GEMM, which re-packs the weight on each
call. For the encoder's long matrices that costs a little, but a decoder step multiplies 3-24
rows by 1.5 GB of AED-L weights and is bound by reading them, so the re-packing costs it
far more. oneDNN's matmul does better in two ways, both measured in
docs/engine.md#backends-torchcompile-onnx-runtime-onednn:

* `SharedLinear` (the default on CPU in fp32, `encoder_backend="torch"`): oneDNN reads the
  checkpoint's own weight tensor as it is, so the memory-mapped weights stay one copy shared
  by every worker process.
* `PackedLinear` (opt-in, `encoder_backend="onednn"`, `decoder_backend="onednn"`): the weight
  is reordered once into the blocked layout oneDNN's kernels read
  (`torch.ops.mkldnn._reorder_linear_weight`, what torch's own CPU compiler does). Faster than
  SharedLinear once a decoder step has several rows, but the default's numba kernels
  (kernels.py) are ahead of it at the row counts of typical batches and level beyond (measured:
  docs/engine.md#steps-of-several-segments-register-blocks-for-4-96-rows-2026-11-25-session-9),
  and the packed weights are a private copy in each process.

oneDNN sums in a different order than MKL, so outputs move by ~1e-6; the parity tests check
that the tokens stay the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def pack_weight(weight: Tensor, rows_hint: int) -> Tensor:
    """A Linear's fp32 weight (out, in) reordered into oneDNN's packed layout, tuned for
    calls of about `rows_hint` rows (any row count works), for `linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (rows, in) times the weight (out, in; as stored or from pack_weight) transposed,
    plus bias, by oneDNN's matmul."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class SharedLinear(nn.Module):
    """A Linear run by oneDNN's matmul on the very same weight and bias tensors (no copy);
    the parameter names stay `weight` and `bias`, so state dicts are unchanged."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x: Tensor) -> Tensor:
        out = linear(x.reshape(-1, self.in_features), self.weight, self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)


class PackedLinear(nn.Module):
    """A Linear whose weight lives in oneDNN's packed layout (CPU, fp32 or bf16, inference only)."""

    def __init__(self, linear: nn.Linear, rows_hint: int) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = pack_weight(weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        out = linear(x.reshape(-1, self.in_features), self.packed, self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)


def share_linears(module: nn.Module) -> int:
    """Run every Linear under `module` (PointwiseConv included) through oneDNN on its own
    weights; returns how many were replaced."""
    return _replace_linears(module, SharedLinear)


def pack_linears(module: nn.Module, rows_hint: int) -> int:
    """Replace every Linear under `module` (PointwiseConv included) by a PackedLinear;
    returns how many were replaced."""
    return _replace_linears(module, lambda linear: PackedLinear(linear, rows_hint))


def _replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> int:
    if not available():
        raise ValueError("oneDNN matmul needs a torch build with oneDNN (torch.backends.mkldnn)")

    def cpu_linear(child: nn.Module) -> bool:
        if not isinstance(child, nn.Linear):
            return False
        if child.weight.device.type != "cpu" or child.weight.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError("oneDNN matmul here is for fp32 or bf16 weights on CPU")
        return True

    return replace_modules(module, cpu_linear, make)


def replace_modules(module: nn.Module, select: Callable[[nn.Module], bool], make: Callable[[Any], nn.Module]) -> int:
    """Replace every submodule under `module` that `select` picks by `make(it)`; returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if select(child):
                setattr(parent, name, make(child))
                count += 1
    return count
