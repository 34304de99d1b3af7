"""The decoder step as one numba call per layer, on CPU in fp32.

A decoder step at a few dozen rows does little arithmetic per call: with one torch or numba
call per Linear, attention, layer norm and residual, the step's time went mostly to the calls
themselves (docs/engine.md#the-decoder-step-as-one-call-per-layer-issue-32). Here each layer's
whole work is one numba call (`layer_step`) and the output layer norm and projection one more
(`output_step`); the token embedding stays torch's (the same bits as `Decoder.step`).

Same rules as kernels.py:

* The Linears are kernels.py's `linear_blocked` (register blocks of 4 weight rows x 3 input
  rows) for every row count, the rows padded with zeros to a multiple of 3, so a row's result
  is the same bits however many rows share the step; layer norm, softmax and GELU go row by
  row (attention: row by row and head by head), so the same holds for them.
* Every output is summed by one thread in one order (no sum split between threads): the
  thread count changes no bit.
* The weights are read where they are (the module's tensors, memory-mapped and shared by the
  workers): one tuple of numpy views per layer, made once at install time, no copies. The
  self-attention caches are read and written in place, so DecoderCache's reorder, keep and
  ensure_capacity work unchanged.

Layer norm takes each row's mean and variance in float64 (two passes), then normalises in
float32 with the module's eps; GELU is the exact one, 0.5 x (1 + erf(x / sqrt 2)), in
float64. Results move by ~1e-6 against torch's step (other summation orders); the parity
tests check the tokens stay the reference's.

Steps this does not take (Decoder.step then runs its torch path): more than
kernels.MAX_KERNEL_ROWS rows, or a cache that is not fp32 on the CPU.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import kernels

log = logging.getLogger(__name__)

_SQRT_HALF = math.sqrt(0.5)

# numba's parallel loop, set by _compiled() before anything is compiled (numba is imported
# only there); until then the kernels below are plain Python.
prange = range


def _layer_norm(x, gain, shift, eps, out):  # pragma: no cover - compiled
    # Each row's mean and variance in float64, by one thread; normalised in float32.
    m, d = x.shape
    for r in prange(m):
        total = 0.0
        for j in range(d):
            total += np.float64(x[r, j])
        mean = total / d
        spread = 0.0
        for j in range(d):
            dev = np.float64(x[r, j]) - mean
            spread += dev * dev
        rstd = 1.0 / np.sqrt(spread / d + eps)
        for j in range(d):
            out[r, j] = np.float32((np.float64(x[r, j]) - mean) * rstd) * gain[j] + shift[j]


def _gelu(x):  # pragma: no cover - compiled
    # In place, exact (erf), in float64.
    m, d = x.shape
    for r in prange(m):
        for j in range(d):
            value = np.float64(x[r, j])
            x[r, j] = 0.5 * value * (1.0 + math.erf(value * _SQRT_HALF))


def _add(x, y):  # pragma: no cover - compiled
    m, d = x.shape
    for r in prange(m):
        for j in range(d):
            x[r, j] += y[r, j]


# The attention: a (row, head)'s or an (utterance, head)'s K and V are (frames, d_k) blocks of the
# caches, read in place; the queries are first copied into a small contiguous block, and the
# outputs summed in one, which LLVM vectorises where indexing `q` and `out` in place it did not
# (measured: docs/engine.md#the-decoder-step-as-one-call-per-layer-issue-32).


def _scores(q, first, count, c, kb, frames, scale):  # pragma: no cover - compiled
    # (count, frames): scale x q[first + i, c:c + d_k] . kb[f] for each query i.
    dk = kb.shape[1]
    ql = np.empty((count, dk), np.float32)
    for i in range(count):
        for e in range(dk):
            ql[i, e] = q[first + i, c + e]
    s = np.empty((count, frames), np.float32)
    for f in range(frames):
        for i in range(count):
            acc = np.float32(0.0)
            for e in range(dk):
                acc += ql[i, e] * kb[f, e]
            s[i, f] = acc * scale
    return s


def _exp(x):  # pragma: no cover - compiled
    # exp of a float32 x <= 0 (a score minus the row's maximum) within about an ulp, in
    # arithmetic LLVM vectorises (libm's expf is one call per value): Cephes' expf polynomial,
    # evaluated in float64 (math.floor gives an integer), 2^n made from its bits. Below -87.3
    # (-inf included: masked scores) it is 0, as exp(-inf).
    low = np.float32(-87.3)
    xc = max(x, low)
    n = math.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    y = np.float32(1.9875691500e-4)
    y = y * r + np.float32(1.3981999507e-3)
    y = y * r + np.float32(8.3333519073e-3)
    y = y * r + np.float32(4.1665795894e-2)
    y = y * r + np.float32(1.6666665459e-1)
    y = y * r + np.float32(5.0000001201e-1)
    y = y * (r * r) + r + np.float32(1.0)
    scale = _bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))
    return y * scale if x > low else np.float32(0.0)


def _softmax(s):  # pragma: no cover - compiled
    # In place over s (frames,); -inf scores get 0.
    top = -np.inf
    for f in range(s.shape[0]):
        top = max(top, s[f])
    total = np.float32(0.0)
    for f in range(s.shape[0]):
        value = _exp_jit(s[f] - top)
        s[f] = value
        total += value
    scale = np.float32(1.0) / total
    for f in range(s.shape[0]):
        s[f] *= scale


def _weighted_values(p, vb, first, c, out):  # pragma: no cover - compiled
    # out[first + i, c:c + d_k] = sum over f of p[i, f] x vb[f], in order of f.
    dk = vb.shape[1]
    acc = np.zeros((p.shape[0], dk), np.float32)
    for f in range(p.shape[1]):
        for i in range(p.shape[0]):
            weight = p[i, f]
            for e in range(dk):
                acc[i, e] += weight * vb[f, e]
    for i in range(p.shape[0]):
        for e in range(dk):
            out[first + i, c + e] = acc[i, e]


def _self_attend(q, k_new, v_new, k_cache, v_cache, valid, t, rows, out):  # pragma: no cover - compiled
    # Row r, head h: writes its new k/v at position t of the caches (rows, heads, capacity,
    # d_k), then attends over positions 0..t where valid[r] (the additive mask's 0 or -inf);
    # out[r, the head's columns] = the weighted values.
    heads, dk = k_cache.shape[1], k_cache.shape[3]
    scale = np.float32(dk**-0.5)
    for task in prange(rows * heads):
        r, h = task // heads, task % heads
        c = h * dk
        for e in range(dk):
            k_cache[r, h, t, e] = k_new[r, c + e]
            v_cache[r, h, t, e] = v_new[r, c + e]
        s = _scores_jit(q, r, 1, c, k_cache[r, h], t + 1, scale)
        for f in range(t + 1):
            if not valid[r, f]:
                s[0, f] = -np.inf
        _softmax_jit(s[0])
        _weighted_values_jit(s, v_cache[r, h], r, c, out)


def _cross_attend(q, k, v, bias, beam, rows, out):  # pragma: no cover - compiled
    # The beams of utterance u (rows u * beam ..) against its K/V (utterances, heads, frames,
    # d_k), one read of each per utterance and head; bias (utterances, frames) added
    # to the scores, or (utterances, 0) for none.
    heads, frames, dk = k.shape[1], k.shape[2], k.shape[3]
    scale = np.float32(dk**-0.5)
    for task in prange((rows // beam) * heads):
        u, h = task // heads, task % heads
        s = _scores_jit(q, u * beam, beam, h * dk, k[u, h], frames, scale)
        for i in range(beam):
            if bias.shape[1]:
                for f in range(frames):
                    s[i, f] += bias[u, f]
            _softmax_jit(s[i])
        _weighted_values_jit(s, v[u, h], u * beam, h * dk, out)


def _layer_step(x, t, beam, rows, eps, sa, ca, ff, self_k, self_v, valid, cross_k, cross_v, bias):  # pragma: no cover
    # x (m, d): the residual stream, m a multiple of 3 (`rows` real rows, then zero padding),
    # updated in place. sa = self-attention (norm gain, shift, then weight and bias of q, k,
    # v, out), ca = cross-attention (norm gain, shift, q, out), ff = MLP (norm gain, shift,
    # w_1, w_2); eps = the three norms' eps.
    linear = _linear_jit
    y = np.empty_like(x)
    q = np.empty_like(x)
    k = np.empty_like(x)
    v = np.empty_like(x)
    att = np.zeros_like(x)  # padding rows stay 0
    proj = np.empty_like(x)
    _layer_norm_jit(x, sa[0], sa[1], eps[0], y)
    linear(y, sa[2], sa[3], q)
    linear(y, sa[4], sa[5], k)
    linear(y, sa[6], sa[7], v)
    _self_attend_jit(q, k, v, self_k, self_v, valid, t, rows, att)
    linear(att, sa[8], sa[9], proj)
    _add_jit(x, proj)
    _layer_norm_jit(x, ca[0], ca[1], eps[1], y)
    linear(y, ca[2], ca[3], q)
    _cross_attend_jit(q, cross_k, cross_v, bias, beam, rows, att)
    linear(att, ca[4], ca[5], proj)
    _add_jit(x, proj)
    _layer_norm_jit(x, ff[0], ff[1], eps[2], y)
    hidden = np.empty((x.shape[0], ff[2].shape[0]), np.float32)
    linear(y, ff[2], ff[3], hidden)
    _gelu_jit(hidden)
    linear(hidden, ff[4], ff[5], proj)
    _add_jit(x, proj)


def _output_step(x, gain, shift, eps, weight, bias, out):  # pragma: no cover - compiled
    y = np.empty_like(x)
    _layer_norm_jit(x, gain, shift, eps, y)
    _linear_jit(y, weight, bias, out)


# The compiled kernels, set by _compiled(): they call each other through these module
# globals, not as closures (numba keys a closure's cache entry by its cells, which differ in
# every process: each worker would compile again; see fbank.py).
_linear_jit: Any = None
_layer_norm_jit: Any = None
_gelu_jit: Any = None
_add_jit: Any = None
_bits_as_float32: Any = None
_exp_jit: Any = None
_scores_jit: Any = None
_softmax_jit: Any = None
_weighted_values_jit: Any = None
_self_attend_jit: Any = None
_cross_attend_jit: Any = None


def _bitcast_intrinsic(numba: Any) -> Any:
    """An int32's bits as a float32 (LLVM's bitcast), for _exp's 2^n."""
    from llvmlite import ir
    from numba.extending import intrinsic

    @intrinsic
    def bits_as_float32(typingctx, value):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return builder.bitcast(args[0], ir.FloatType())

        return numba.types.float32(numba.types.int32), codegen

    return bits_as_float32


@functools.cache
def _compiled() -> tuple[Any, Any, Any]:
    """numba, and the layer and output kernels (compiled, or loaded from numba's cache, at
    their first call)."""
    global prange, _linear_jit, _layer_norm_jit, _gelu_jit, _add_jit, _bits_as_float32, _exp_jit, _scores_jit
    global _softmax_jit, _weighted_values_jit, _self_attend_jit, _cross_attend_jit
    numba, _, _linear_jit, _, _ = kernels._compiled()  # the blocked linear kernel
    prange = numba.prange
    options = {"fastmath": kernels.FASTMATH, "cache": True, "boundscheck": False, "nogil": True}
    jit = numba.njit(parallel=True, **options)
    serial = numba.njit(**options)  # within one thread's task, or calling the parallel ones
    _layer_norm_jit, _gelu_jit, _add_jit = jit(_layer_norm), jit(_gelu), jit(_add)
    _self_attend_jit, _cross_attend_jit = jit(_self_attend), jit(_cross_attend)
    _bits_as_float32 = _bitcast_intrinsic(numba)
    _exp_jit, _scores_jit, _softmax_jit = serial(_exp), serial(_scores), serial(_softmax)
    _weighted_values_jit = serial(_weighted_values)
    return numba, serial(_layer_step), serial(_output_step)


def _linear_arrays(linear: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """A Linear's weight (a view, no copy) and bias (zeros where it has none)."""
    weight = linear.weight.detach().numpy()
    bias = linear.bias
    return weight, np.zeros(weight.shape[0], np.float32) if bias is None else bias.detach().numpy()


def _norm_arrays(norm: nn.LayerNorm) -> tuple[np.ndarray, np.ndarray]:
    return norm.weight.detach().numpy(), norm.bias.detach().numpy()


def _layer_arrays(layer: nn.Module) -> tuple:
    """(eps, self-attention, cross-attention, MLP) of a DecoderLayer as layer_step takes them."""
    sa, ca, mlp = layer.self_attn, layer.cross_attn, layer.mlp
    eps = (float(layer.self_attn_norm.eps), float(layer.cross_attn_norm.eps), float(layer.mlp_norm.eps))
    self_part = _norm_arrays(layer.self_attn_norm)
    for linear in (sa.w_qs, sa.w_ks, sa.w_vs, sa.fc):
        self_part += _linear_arrays(linear)
    cross_part = _norm_arrays(layer.cross_attn_norm) + _linear_arrays(ca.w_qs) + _linear_arrays(ca.fc)
    mlp_part = _norm_arrays(layer.mlp_norm) + _linear_arrays(mlp.w_1) + _linear_arrays(mlp.w_2)
    return eps, self_part, cross_part, mlp_part


def _eligible(decoder: nn.Module) -> bool:
    """Every parameter fp32, contiguous, on the CPU, and the MLP's activation exact GELU."""
    params = list(decoder.parameters())
    plain = all(p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous() for p in params)
    gelus = all(type(layer.mlp.act) is nn.GELU and layer.mlp.act.approximate == "none" for layer in decoder.layer_stack)
    return plain and gelus


class FusedStep:
    """Decoder.fused_step: `(embedded input, cache) -> logits`, or None for a step it does not
    take (the decoder then runs its torch path)."""

    def __init__(self, decoder: nn.Module) -> None:
        self.layers = [_layer_arrays(layer) for layer in decoder.layer_stack]
        norm = decoder.layer_norm_out
        self.output = (*_norm_arrays(norm), float(norm.eps), *_linear_arrays(decoder.tgt_word_prj))

    def __call__(self, embedded: Tensor, cache: Any) -> Tensor | None:
        """The step at position cache.length from its input `embedded` (rows, d), the cache
        already grown and its mask set (Decoder.step): logits, or None for a step not taken."""
        rows = embedded.size(0)
        cross = cache.cross_k[0] if cache.cross_k else None
        if rows > kernels.MAX_KERNEL_ROWS or cross is None or cross.dtype != torch.float32 or cross.is_cuda:
            return None
        numba, layer_step, output_step = _compiled()
        kernels._match_torch_threads(numba)
        t = cache.length
        x = np.zeros((-(-rows // kernels.ROW_BLOCK) * kernels.ROW_BLOCK, embedded.size(1)), np.float32)
        x[:rows] = embedded.numpy()
        n = rows // cache.beam
        bias = np.zeros((n, 0), np.float32) if cache.cross_bias is None else cache.cross_bias.view(n, -1).numpy()
        valid = cache.self_mask.numpy()
        for i, (eps, sa, ca, ff) in enumerate(self.layers):
            self_k, self_v = cache.self_k[i].numpy(), cache.self_v[i].numpy()
            cross_k, cross_v = cache.cross_k[i].numpy(), cache.cross_v[i].numpy()
            layer_step(x, t, cache.beam, rows, eps, sa, ca, ff, self_k, self_v, valid, cross_k, cross_v, bias)
        cache.length = t + 1
        logits = np.empty((x.shape[0], self.output[-1].shape[0]), np.float32)
        output_step(x, *self.output, logits)
        return torch.from_numpy(logits[:rows])


def install(decoder: nn.Module) -> bool:
    """Give `decoder` (its weights in place, kernels.available()) the fused step where its
    weights allow; returns whether it did. One step on a one-frame utterance compiles the
    kernels (or loads them from numba's cache) here rather than in the first search; if that
    fails the decoder keeps its torch step, with a warning that says why."""
    if not _eligible(decoder):
        return False
    fused = FusedStep(decoder)
    try:
        with torch.inference_mode():
            enc = torch.zeros(1, 1, decoder.d_model)
            cache = decoder.init_cache(enc, torch.ones(1, 1, dtype=torch.bool), beam=1, capacity=1)
            fused(decoder.embed(torch.tensor([decoder.sos_id]), 0), cache)
    except Exception as exc:  # a numba that cannot compile them: the torch step still works
        log.warning("fused decoder step off, the per-call one used: %s: %s", type(exc).__name__, exc)
        return False
    decoder.fused_step = fused
    return True
