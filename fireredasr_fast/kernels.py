"""CPU kernels for the two memory-bound parts of a decoder step, compiled by numba.

With one utterance in flight, a beam-3 decoder step multiplies 3 rows by every Linear weight
(1.5 GB for AED-L) and attends over every layer's cross-attention K/V (0.25 GB at 60 s). Both
are bound by reading memory, and both leave bandwidth unused in torch: oneDNN's matmul reads
the plain (shared, memory-mapped) weights at 16-23 GB/s where a plain read runs at ~30, and
scaled_dot_product_attention reads the K/V at ~15-17 GB/s (docs/engine.md). The kernels here
stream each weight row or K/V row once, at 25-30 GB/s on the development VM:

* `FewRowsLinear`: y = x W^T + b for at most 3 rows on the weight as stored, so the weights
  stay one copy shared by every worker. Fewer rows are padded to 3 so a row's result never
  depends on how many rows came with it. More rows go to oneDNN, which wins from 4 rows up.
* `attention`: the beams of each utterance against that utterance's cross-attention K/V, and
  each beam against its own self-attention history, one read of K and one of V per call; the
  softmax in between is torch's. Small K/V go to torch's attention (MIN_K_BYTES_*).

They sum in another order than torch (fastmath reassociation, so the loops vectorise), which
moves results by ~1e-6; the parity tests check the tokens stay the reference's.

numba runs them on its own thread pool. Only its OpenMP or TBB layers are used: its fallback
("workqueue") made a 2-core decoder step 1.4x slower than oneDNN, so without them `available()`
says why and the decoder keeps torch's kernels.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .onednn import SharedLinear, replace_modules

log = logging.getLogger(__name__)

# The row count the linear kernel is built for. 4+ rows are faster through oneDNN (measured in
# docs/engine.md), so the kernel never sees them.
KERNEL_ROWS = 3
# Below these sizes of one layer's K, torch's attention beats the kernel's fixed cost (three
# calls) and takes the call. Measured per step over 16 AED-L layers' K/V (python -m
# fireredasr_fast.bench kernels, docs/engine.md): with one query per K/V (the self-attention, or
# greedy search) torch wins up to 32 tokens (0.5 MB) and the kernel from 64 (1 MB); with the
# beams of an utterance sharing its K/V (the cross-attention) the kernel wins from the shortest
# segment measured (1 s, 0.13 MB).
MIN_K_BYTES_ONE_QUERY = 1 << 20
MIN_K_BYTES_SHARED = 128 << 10
# Numba's thread pools in order of preference; "workqueue" is left out on purpose (see above).
THREADING_LAYERS = ("omp", "tbb")
# Reassociation lets LLVM vectorise the reductions; "contract" allows FMA. Not the full
# fastmath set: no assumption that inputs are finite.
FASTMATH = {"reassoc", "contract"}


@functools.cache
def _compiled() -> tuple[object, object, object, object]:
    import numba

    numba.config.THREADING_LAYER_PRIORITY = [*THREADING_LAYERS, "workqueue"]
    jit = numba.njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False, nogil=True)
    prange = numba.prange

    @jit
    def linear3(x, w, b, out):  # pragma: no cover - compiled
        # x (3, k), w (n, k), b (n,), out (3, n): each weight row is read once for all 3 rows.
        k = x.shape[1]
        for r in prange(w.shape[0]):
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            for j in range(k):
                wv = w[r, j]
                a0 += x[0, j] * wv
                a1 += x[1, j] * wv
                a2 += x[2, j] * wv
            out[0, r] = a0 + b[r]
            out[1, r] = a1 + b[r]
            out[2, r] = a2 + b[r]

    @jit
    def scores(q, k, scale, out):  # pragma: no cover - compiled
        # q (g, b, d), k (g, >= f, d) -> out (g, b, f) = scale * q k[:, :f]^T, g = rows x heads.
        for g in prange(q.shape[0]):
            for f in range(out.shape[2]):
                for i in range(q.shape[1]):
                    acc = np.float32(0.0)
                    for d in range(q.shape[2]):
                        acc += q[g, i, d] * k[g, f, d]
                    out[g, i, f] = acc * scale

    @jit
    def weighted_values(p, v, out):  # pragma: no cover - compiled
        # p (g, b, f), v (g, >= f, d) -> out (g, b, d) = p v[:, :f], one pass over v.
        for g in prange(p.shape[0]):
            for i in range(p.shape[1]):
                for d in range(v.shape[2]):
                    out[g, i, d] = 0.0
            for f in range(p.shape[2]):
                for i in range(p.shape[1]):
                    weight = p[g, i, f]
                    for d in range(v.shape[2]):
                        out[g, i, d] += weight * v[g, f, d]

    return numba, linear3, scores, weighted_values


@functools.cache
def unavailable_reason() -> str | None:
    """None when the kernels can run here; otherwise why not (one line)."""
    try:
        numba, linear3, scores, weighted_values = _compiled()
    except ImportError as exc:
        return f"numba is not installed ({exc})"
    x = np.ones((KERNEL_ROWS, 4), np.float32)
    probs = np.ones((2, KERNEL_ROWS, 5), np.float32)
    try:
        # Compiles each kernel for the types the decoder passes (or loads it from numba's
        # cache), here rather than in the middle of the first search, and starts the pool.
        linear3(x, np.ones((2, 4), np.float32), np.zeros(2, np.float32), np.empty((KERNEL_ROWS, 2), np.float32))
        scores(np.ones((2, KERNEL_ROWS, 4), np.float32), np.ones((2, 5, 4), np.float32), np.float32(0.5), probs)
        weighted_values(probs, np.ones((2, 5, 4), np.float32), np.empty((2, KERNEL_ROWS, 4), np.float32))
    except Exception as exc:  # numba reports a missing threading layer as a plain error
        return f"numba could not start a thread pool ({type(exc).__name__}: {exc})"
    layer = numba.threading_layer()
    if layer not in THREADING_LAYERS:
        return f"numba has only its {layer!r} thread pool here (OpenMP or TBB needed)"
    return None


def available() -> bool:
    reason = unavailable_reason()
    if reason is not None:
        log.warning("decoder kernels off, torch's used instead: %s", reason)
    return reason is None


def _match_torch_threads(numba: object) -> None:
    # numba's thread count is per calling thread; follow the count plan.set_process_threads
    # (or the caller) gave torch, within the pool numba started with.
    want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if numba.get_num_threads() != want:  # type: ignore[attr-defined]
        numba.set_num_threads(want)  # type: ignore[attr-defined]


class FewRowsLinear(SharedLinear):
    """onednn.SharedLinear that sends calls of at most KERNEL_ROWS rows to the kernel. Both read
    `weight` as stored (no copy); parameter names stay `weight` and `bias`."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__(linear)  # type: ignore[arg-type]
        self._weight = self.weight.detach().numpy()  # a view of the (memory-mapped) tensor
        bias = torch.zeros(self.out_features) if self.bias is None else self.bias.detach()
        self._bias = bias.numpy()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        rows = flat.size(0)
        if rows > KERNEL_ROWS or flat.dtype != torch.float32:
            return super().forward(x)
        numba, linear3, _, _ = _compiled()
        _match_torch_threads(numba)
        if rows < KERNEL_ROWS:
            flat = torch.cat([flat, flat.new_zeros(KERNEL_ROWS - rows, self.in_features)])
        out = torch.empty(KERNEL_ROWS, self.out_features)
        linear3(flat.contiguous().numpy(), self._weight, self._bias, out.numpy())
        return out[:rows].reshape(*x.shape[:-1], self.out_features)


def use_few_rows_linear(module: nn.Module) -> int:
    """Turn every onednn.SharedLinear under `module` whose weight is contiguous fp32 on the CPU
    into a FewRowsLinear; returns how many."""

    def eligible(child: nn.Module) -> bool:
        weight = getattr(child, "weight", None)
        return (
            type(child) is SharedLinear
            and weight is not None
            and weight.dtype == torch.float32
            and weight.device.type == "cpu"
            and weight.is_contiguous()
        )

    return replace_modules(module, eligible, FewRowsLinear)


def install(decoder: nn.Module, few_rows_linear: bool = True) -> None:
    """Run `decoder`'s attention through the kernel and, with few_rows_linear, its
    onednn.SharedLinear layers through FewRowsLinear. Call once its weights are in place."""
    if few_rows_linear:
        use_few_rows_linear(decoder)
    decoder.attention = attention


def _heads_as_rows(x: Tensor) -> np.ndarray:
    """x (n, h, f, d) as a numpy (n * h, span, d) array over the same memory, where span >= f:
    a prefix view of a contiguous (n, h, span, d) buffer (the decoder's self-attention cache,
    read up to the current length) is used in place instead of copied."""
    n, h, f, d = x.shape
    span = x.stride(1) // d if d else 0
    if x.stride(3) == 1 and x.stride(2) == d and span >= f and x.stride(0) == h * span * d:
        return x.as_strided((n * h, span, d), (span * d, d, 1)).numpy()
    return x.contiguous().view(n * h, f, d).numpy()


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for q (n, h, b, d) against k, v (n, h, f, d), bias
    broadcastable to (n, h, b, f) and additive, or None; returns (n, h, b, d)."""
    smallest = MIN_K_BYTES_SHARED if q.size(2) > 1 else MIN_K_BYTES_ONE_QUERY
    if k.numel() * k.element_size() < smallest or k.dtype != torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    numba, _, scores, weighted_values = _compiled()
    _match_torch_threads(numba)
    n, h, rows, dk = q.shape
    frames = k.size(2)
    logits = torch.empty(n, h, rows, frames)
    q_rows = q.contiguous().view(n * h, rows, dk).numpy()
    scores(q_rows, _heads_as_rows(k), np.float32(dk**-0.5), logits.view(n * h, rows, frames).numpy())
    if bias is not None:
        logits.add_(bias)
    probs = torch.softmax(logits, dim=-1)
    out = torch.empty(n, h, rows, dk)
    weighted_values(probs.view(n * h, rows, frames).numpy(), _heads_as_rows(v), out.view(n * h, rows, dk).numpy())
    return out
