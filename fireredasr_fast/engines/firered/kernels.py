"""CPU kernels for the two memory-bound parts of a decoder step, compiled by numba.

A decoder step multiplies beams x utterances rows (3 for one utterance at beam 3, a few dozen
for a batch) by every Linear weight (1.5 GB for AED-L), and attends over every layer's
cross-attention K/V (0.25 GB per utterance at 60 s). With few rows both are bound by reading
memory, and torch leaves much of it unused: oneDNN's matmul on the plain (shared,
memory-mapped) weights at a few to a few dozen rows, and scaled_dot_product_attention over
the K/V, both read well below the memory's speed; these kernels come closer to it (measured:
docs/engine.md#decoder-kernels-numba).

* `FewRowsLinear`: y = x W^T + b for up to MAX_KERNEL_ROWS rows on the weight as stored, so
  the weights stay one copy shared by every worker. Calls of 1-3 rows (one utterance's beams)
  go to a kernel that reads each weight row once for 3 rows; calls of 4 or more to one that
  takes 4 weight rows x 3 input rows at a time (register blocks). Calls are padded with zero
  rows to 3 or to a multiple of 3, and within each kernel every output is summed the same way
  whatever else came in the call, so a beam's result does not depend on how many beams or
  utterances share the step (between the two kernels it moves by ~1e-6, as between any two
  GEMMs). More rows go to oneDNN, which is level or ahead once the product is bound by
  arithmetic.
* `attention`: the beams of each utterance against that utterance's cross-attention K/V, and
  each beam against its own self-attention history, one read of K and one of V per call; the
  softmax in between is torch's. Small K/V go to torch's attention (MIN_K_BYTES_*).

They sum in another order than torch (fastmath reassociation, so the loops vectorise), which
moves results by ~1e-6; the parity tests check the tokens stay the reference's.

Every output is summed by one thread, in one order, whichever thread that is (no sum is split
between threads), so the thread count and the scheduling change no bit: 64 processes with two
threads each write the same logits at every step (tests/test_decoding_determinism.py).

numba runs them on its own thread pool. Only its OpenMP or TBB layers are used: its fallback
("workqueue") made a decoder step slower than oneDNN alone (measured:
docs/engine.md#decoder-kernels-numba), so without them `available()` says why and the decoder
keeps torch's kernels.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import onednn
from .onednn import SharedLinear, replace_modules

log = logging.getLogger(__name__)

# The linear kernels take rows in blocks of ROW_BLOCK (calls are padded with zero rows up to a
# multiple), and calls of up to MAX_KERNEL_ROWS rows: beyond that the product is bound by
# arithmetic rather than by reading the weights, and oneDNN's GEMM is level or ahead (measured:
# docs/engine.md#steps-of-several-segments-register-blocks-for-4-96-rows-2026-11-25-session-9).
# A decoder step has beams x utterances rows: 3 to 48 in a typical batch.
ROW_BLOCK = 3
MAX_KERNEL_ROWS = 96
# Below these sizes of one layer's K, torch's attention beats the kernel's fixed cost (three
# calls) and takes the call. Measured per step over 16 AED-L layers' K/V (python -m
# benchmarks kernels; figures in docs/engine.md#decoder-kernels-numba): with one
# query per K/V (the self-attention, or greedy search) torch wins on short histories and the
# kernel on longer ones; with the beams of an utterance sharing its K/V (the cross-attention)
# the kernel wins from the shortest segment measured.
MIN_K_BYTES_ONE_QUERY = 1 << 20
MIN_K_BYTES_SHARED = 128 << 10
# Numba's thread pools in order of preference; "workqueue" is left out on purpose (see above).
THREADING_LAYERS = ("omp", "tbb")
# Reassociation lets LLVM vectorise the reductions; "contract" allows FMA. Not the full
# fastmath set: no assumption that inputs are finite.
FASTMATH = {"reassoc", "contract"}


def _numpy_f2py_lazy() -> None:
    """numpy.f2py (numpy's Fortran wrapper generator, with charset_normalizer) registered as
    a lazy module, loaded on its first attribute access (importlib.util.LazyLoader, Python's
    own recipe). `import numba` checks for a BLAS by importing scipy.linalg, whose array-API
    shim asks numpy for every public name (hasattr), and so imports numpy.f2py, which no
    kernel uses: a share of the fork server's imports, before which no worker starts
    (docs/benchmarks.md, the serial start, cut). Done before numba's first import."""
    name = "numpy.f2py"
    if name in sys.modules or "numba" in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    np.f2py = module  # what an import of the submodule sets on its package


@functools.cache
def _compiled() -> tuple[object, object, object, object, object]:
    _numpy_f2py_lazy()
    import numba

    numba.config.THREADING_LAYER_PRIORITY = [*THREADING_LAYERS, "workqueue"]
    jit = numba.njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False, nogil=True)
    linear3, linear_blocked = _linear_kernels(jit, numba.prange)
    scores, weighted_values = _attention_kernels(jit, numba.prange)
    return numba, linear3, linear_blocked, scores, weighted_values


def numba_module() -> object:
    """numba, imported as these kernels import it (ImportError where it is missing), for
    other compiled helpers of the engine (search.py)."""
    return _compiled()[0]


def _linear_kernels(jit, prange) -> tuple[object, object]:
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
    def linear_blocked(x, w, b, out):  # pragma: no cover - compiled
        # x (m, k) with m a multiple of 3, w (n, k), b (n,), out (m, n) = x w^T + b. Register
        # blocks of 4 weight rows x 3 input rows: 12 running sums that LLVM keeps in vector
        # registers, so each weight row is read once per 3 input rows and each input value
        # once per 4 weight rows. A weight row left over (n % 4) gets its own 1 x 3 loop.
        # Every output element is summed by the same instructions whatever m is.
        m, k = x.shape
        n = w.shape[0]
        blocks = n // 4
        for task in prange(blocks + n % 4):
            if task < blocks:
                r = 4 * task
                for i in range(0, m, 3):
                    s00 = np.float32(0.0)
                    s01 = np.float32(0.0)
                    s02 = np.float32(0.0)
                    s10 = np.float32(0.0)
                    s11 = np.float32(0.0)
                    s12 = np.float32(0.0)
                    s20 = np.float32(0.0)
                    s21 = np.float32(0.0)
                    s22 = np.float32(0.0)
                    s30 = np.float32(0.0)
                    s31 = np.float32(0.0)
                    s32 = np.float32(0.0)
                    for j in range(k):
                        x0 = x[i, j]
                        x1 = x[i + 1, j]
                        x2 = x[i + 2, j]
                        w0 = w[r, j]
                        w1 = w[r + 1, j]
                        w2 = w[r + 2, j]
                        w3 = w[r + 3, j]
                        s00 += w0 * x0
                        s01 += w0 * x1
                        s02 += w0 * x2
                        s10 += w1 * x0
                        s11 += w1 * x1
                        s12 += w1 * x2
                        s20 += w2 * x0
                        s21 += w2 * x1
                        s22 += w2 * x2
                        s30 += w3 * x0
                        s31 += w3 * x1
                        s32 += w3 * x2
                    out[i, r] = s00 + b[r]
                    out[i + 1, r] = s01 + b[r]
                    out[i + 2, r] = s02 + b[r]
                    out[i, r + 1] = s10 + b[r + 1]
                    out[i + 1, r + 1] = s11 + b[r + 1]
                    out[i + 2, r + 1] = s12 + b[r + 1]
                    out[i, r + 2] = s20 + b[r + 2]
                    out[i + 1, r + 2] = s21 + b[r + 2]
                    out[i + 2, r + 2] = s22 + b[r + 2]
                    out[i, r + 3] = s30 + b[r + 3]
                    out[i + 1, r + 3] = s31 + b[r + 3]
                    out[i + 2, r + 3] = s32 + b[r + 3]
            else:
                r = 4 * blocks + task - blocks
                for i in range(0, m, 3):
                    s0 = np.float32(0.0)
                    s1 = np.float32(0.0)
                    s2 = np.float32(0.0)
                    for j in range(k):
                        wv = w[r, j]
                        s0 += wv * x[i, j]
                        s1 += wv * x[i + 1, j]
                        s2 += wv * x[i + 2, j]
                    out[i, r] = s0 + b[r]
                    out[i + 1, r] = s1 + b[r]
                    out[i + 2, r] = s2 + b[r]

    return linear3, linear_blocked


@functools.cache
def _compiled_bf16() -> object:
    _numpy_f2py_lazy()
    import numba

    jit = numba.njit(parallel=True, fastmath=FASTMATH, cache=True, boundscheck=False, nogil=True)

    @jit
    def linear_bf16(x, w, b, out):  # pragma: no cover - compiled
        # x (m, k) fp32, w (n, k) uint16 holding bf16 bit patterns, b (n,), out (m, n) = x w^T + b.
        # Each weight row is read once (half the bytes of fp32), widened into an fp32 scratch
        # row in L1 (bf16 is fp32's upper half), then dotted with every input row: every
        # output is summed by the same instructions whatever m is.
        m, k = x.shape
        for r in numba.prange(w.shape[0]):
            bits = np.empty(k, np.uint32)
            for j in range(k):
                bits[j] = np.uint32(w[r, j]) << np.uint32(16)
            row = bits.view(np.float32)
            for i in range(m):
                acc = np.float32(0.0)
                for j in range(k):
                    acc += x[i, j] * row[j]
                out[i, r] = acc + b[r]

    return linear_bf16


class Bf16WeightLinear(nn.Module):
    """A Linear with bf16 weights (a private copy, half the bytes) on fp32 activations, for
    `--precision bf16` on CPU: up to MAX_KERNEL_ROWS rows through the numba kernel above
    (bound by reading the weights, which it reads at half fp32's cost), more through
    oneDNN's bf16 matmul (AMX or AVX512_BF16). Returns fp32."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(self.out_features)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self._bits = self.weight.detach().view(torch.int16).numpy().view(np.uint16)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).float()
        if flat.size(0) > MAX_KERNEL_ROWS or unavailable_reason() is not None:
            out = onednn.linear(flat.to(torch.bfloat16), self.weight, None).float().add_(self.bias)
        else:
            numba, *_ = _compiled()
            _match_torch_threads(numba)
            out = torch.empty(flat.size(0), self.out_features)
            _compiled_bf16()(flat.contiguous().numpy(), self._bits, self.bias.detach().numpy(), out.numpy())
        return out.reshape(*x.shape[:-1], self.out_features)


def use_bf16_linears(module: nn.Module) -> int:
    """Replace every Linear under `module` (PointwiseConv included) by a Bf16WeightLinear;
    returns how many. The rest of `module` stays fp32."""
    return replace_modules(module, lambda child: isinstance(child, nn.Linear), Bf16WeightLinear)


def _attention_kernels(jit, prange) -> tuple[object, object]:
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

    return scores, weighted_values


def prepare_compiler() -> None:
    """numba imported, its compiler's type and target registries filled and the kernels'
    dispatchers made, but nothing compiled or loaded: that links the kernels against
    numba's threading layer, which starts its pool. For the workers' fork server: each worker
    then only loads the kernels from numba's cache (docs/tuning.md#worker-start-up-and-memory)."""
    try:
        _compiled()
    except ImportError:
        return
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


@functools.cache
def unavailable_reason() -> str | None:
    """None when the kernels can run here; otherwise why not (one line)."""
    try:
        numba, linear3, linear_blocked, scores, weighted_values = _compiled()
    except ImportError as exc:
        return f"numba is not installed ({exc})"
    x = np.ones((ROW_BLOCK, 4), np.float32)
    probs = np.ones((2, ROW_BLOCK, 5), np.float32)
    # Starting numba's OpenMP pool sets the calling thread's OpenMP thread count to the pool's
    # size, and torch shares that OpenMP runtime: torch's count is put back afterwards.
    torch_threads = torch.get_num_threads()
    try:
        # Compiles each kernel for the types the decoder passes (or loads it from numba's
        # cache), here rather than in the middle of the first search, and starts the pool.
        weight, bias = np.ones((5, 4), np.float32), np.zeros(5, np.float32)
        linear3(x, weight, bias, np.empty((ROW_BLOCK, 5), np.float32))
        linear_blocked(np.ones((2 * ROW_BLOCK, 4), np.float32), weight, bias, np.empty((2 * ROW_BLOCK, 5), np.float32))
        scores(np.ones((2, ROW_BLOCK, 4), np.float32), np.ones((2, 5, 4), np.float32), np.float32(0.5), probs)
        weighted_values(probs, np.ones((2, 5, 4), np.float32), np.empty((2, ROW_BLOCK, 4), np.float32))
    except Exception as exc:  # numba reports a missing threading layer as a plain error
        return f"numba could not start a thread pool ({type(exc).__name__}: {exc})"
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    layer = numba.threading_layer()
    if layer not in THREADING_LAYERS:
        return f"numba has only its {layer!r} thread pool here (OpenMP or TBB needed)"
    return None


def available() -> bool:
    reason = unavailable_reason()
    if reason is not None:
        log.warning("decoder kernels off, torch's used instead: %s", reason)
    return reason is None


# The torch thread count each thread last matched numba's to (numba's count is per calling
# thread, and only _match_torch_threads sets it): a decoder step calls the kernels dozens of
# times, and asking numba its count costs more than a small kernel's arithmetic.
_matched = threading.local()


def _match_torch_threads(numba: object) -> None:
    # numba's thread count is per calling thread; follow the count plan.set_process_threads
    # (or the caller) gave torch, within the pool numba started with.
    threads = torch.get_num_threads()
    if getattr(_matched, "torch_threads", None) == threads:
        return
    want = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if numba.get_num_threads() != want:  # type: ignore[attr-defined]
        numba.set_num_threads(want)  # type: ignore[attr-defined]
    _matched.torch_threads = threads


class FewRowsLinear(SharedLinear):
    """onednn.SharedLinear that sends calls of at most MAX_KERNEL_ROWS rows to the kernel. Both
    read `weight` as stored (no copy); parameter names stay `weight` and `bias`."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__(linear)  # type: ignore[arg-type]
        self._weight = self.weight.detach().numpy()  # a view of the (memory-mapped) tensor
        bias = torch.zeros(self.out_features) if self.bias is None else self.bias.detach()
        self._bias = bias.numpy()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        rows = flat.size(0)
        if rows > MAX_KERNEL_ROWS or flat.dtype != torch.float32:
            return super().forward(x)
        numba, linear3, linear_blocked, _, _ = _compiled()
        _match_torch_threads(numba)
        padded = -(-rows // ROW_BLOCK) * ROW_BLOCK
        if padded != rows:
            flat = torch.cat([flat, flat.new_zeros(padded - rows, self.in_features)])
        out = torch.empty(padded, self.out_features)
        kernel = linear3 if padded == ROW_BLOCK else linear_blocked
        kernel(flat.contiguous().numpy(), self._weight, self._bias, out.numpy())
        return (out if padded == rows else out[:rows]).view(*x.shape[:-1], self.out_features)


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
    numba, _, _, scores, weighted_values = _compiled()
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
