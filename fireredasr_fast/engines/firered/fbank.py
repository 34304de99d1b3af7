"""kaldi-native-fbank's 80-dim fbank, the same float32 bits, computed by a numba kernel.

The reference front end (PyPI `fireredasr`) computes its features with kaldi-native-fbank
(knf), and ours must equal them bit for bit (tests/test_features.py, the parity tests). knf
costs several times more per frame than the arithmetic needs: its real FFT allocates a
kissfft plan (twiddles from sin/cos) for every frame, and its binding returns one frame per
call (docs/engine.md#the-fbank-bit-identical-to-kaldi-native-fbank-issue-32). This kernel does the
same float operations in the same order for every frame, with the plan made once, 16 frames
side by side (each frame's operations stay its own, so the loops over frames vectorise):

* the frame (snip_edges: 400 samples every 160), its mean (a float sum in order) subtracted,
  preemphasis 0.97 from the last sample down, the povey window (knf's own floats), zeros to 512;
* kissfft's real FFT as knf's wheel builds it: kiss_fftr over a 256-point complex kiss_fft
  (four radix-4 stages). kissfft is compiled with -ffast-math there, so GCC reassociated some
  sums of its butterflies (kf_bfly4) and of kiss_fftr's split; the order below is the one of
  the machine code in knf's wheel (read from its disassembly), not the one of kissfft's C;
* the power spectrum, the mel bins (knf's own weights, each bin a float sum in order over its
  nonzero range), then logf(max(energy, FLT_EPSILON)) through the process's libm `logf`
  (knf calls glibc's; numpy's own float32 log rounds differently).

No fastmath: LLVM neither contracts (FMA) nor reorders these float operations, as GCC did not
in knf (its wheel has no FMA instruction). Whether all this holds for the knf installed is
checked, not assumed: at the first use in a process, the kernel and knf compute a fixed probe
signal (speech-like noise, silence, loud, clipped and quiet passages) and the kernel is used
only if every float is the same; otherwise (a knf whose FFT or options differ, no numba) knf
computes the features, after one warning that says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FRAME = 400  # samples per frame (25 ms at 16 kHz)
HOP = 160  # 10 ms
FFT_SIZE = 512  # the frame zero-padded to a power of two
HALF = FFT_SIZE // 2  # kiss_fftr's complex FFT size
PREEMPH = 0.97
FLT_EPSILON = float(np.finfo(np.float32).eps)  # knf's log floor (FbankOptions.eps)
# Frames computed side by side by the kernel (AVX-512's 16 floats).
LANES = 16
# kissfft factors 256 as 4 * 4 * 4 * 4 (kf_factor): each stage's (m, twiddle stride), from the
# innermost (m = 1) out, as kf_work's recursion applies them.
STAGES = ((1, 64), (4, 16), (16, 4), (64, 1))


class _LibmLogf:
    """libm's `logf` as a first-class function for numba (its Wrapper Address Protocol): the
    kernel calls it through its address. knf's wheel binds glibc's logf@GLIBC_2.2.5, the
    compatibility wrapper of the same function (it differs for arguments <= 0 only, which the
    log floor rules out)."""

    def __init__(self) -> None:
        try:
            logf = ctypes.CDLL(None).logf  # the process's own libm, already loaded by Python
        except (OSError, AttributeError):
            logf = ctypes.CDLL(ctypes.util.find_library("m")).logf
        self._address = ctypes.cast(logf, ctypes.c_void_p).value

    def __wrapper_address__(self) -> int:
        return self._address  # type: ignore[return-value]

    def signature(self) -> Any:
        from numba import types

        return types.float32(types.float32)


def _wap_type() -> type:
    """_LibmLogf registered as a numba WrapperAddressProtocol (numba imported here only)."""
    import numba.experimental.function_type  # noqa: F401  (registers typeof for the protocol)
    from numba.core.types import WrapperAddressProtocol

    WrapperAddressProtocol.register(_LibmLogf)
    return _LibmLogf


def _twiddles() -> tuple[np.ndarray, ...]:
    """kiss_fft_alloc's twiddles for 256 points and kiss_fftr_alloc's super twiddles for 512,
    as kissfft computes them: double phases, float casts of libm's cos and sin. (knf's wheel
    computes the phases as i * (1/n * -2 pi): the same doubles, n being a power of two.)"""
    tw = [-2 * math.pi * i / HALF for i in range(HALF)]
    sup = [-math.pi * ((i + 1) / HALF + 0.5) for i in range(HALF // 2)]
    as32 = [np.array([f(p) for p in phases], np.float32) for phases in (tw, sup) for f in (math.cos, math.sin)]
    return tuple(as32)


def _input_order() -> np.ndarray:
    """Where kf_work's recursion puts each input point before the first butterflies: out[j] =
    in[order[j]] (base-4 digit reversal, from the recursion itself)."""
    order = np.empty(HALF, np.int64)

    def work(out: int, first: int, stride: int, stages: tuple[tuple[int, int], ...]) -> None:
        m = stages[-1][0]
        for k in range(4):
            if m == 1:
                order[out + k] = first + k * stride
            else:
                work(out + k * m, first + k * stride, stride * 4, stages[:-1])

    work(0, 0, 1, STAGES)
    return order


def _mel_bins(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """knf's mel weights as its MelBanks keeps them: per bin, the first nonzero FFT bin and
    the weights from there to the last nonzero one."""
    nonzero = matrix != 0
    first = nonzero.argmax(axis=1)
    last = matrix.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
    lengths = last + 1 - first
    weights = np.zeros((matrix.shape[0], int(lengths.max())), np.float32)
    for i, (start, size) in enumerate(zip(first, lengths, strict=True)):
        weights[i, :size] = matrix[i, start : start + size]
    return weights, first.astype(np.int64), lengths.astype(np.int64)


def _prepare(samples, f0, count, window, buf):  # pragma: no cover - compiled
    # buf[i, lane]: sample i of frame f0 + lane (lanes past the last frame repeat it).
    for lane in range(LANES):
        start = min(f0 + lane, count - 1) * HOP
        for i in range(FRAME):
            buf[i, lane] = samples[start + i]
    mean = np.zeros(LANES, np.float32)
    for i in range(FRAME):
        for lane in range(LANES):
            mean[lane] += buf[i, lane]
    for lane in range(LANES):
        mean[lane] = mean[lane] / np.float32(FRAME)
    for i in range(FRAME):
        for lane in range(LANES):
            buf[i, lane] -= mean[lane]
    coeff = np.float32(PREEMPH)
    for i in range(FRAME - 1, 0, -1):
        for lane in range(LANES):
            buf[i, lane] -= coeff * buf[i - 1, lane]
    for lane in range(LANES):
        buf[0, lane] -= coeff * buf[0, lane]
    for i in range(FRAME):
        weight = window[i]
        for lane in range(LANES):
            buf[i, lane] *= weight


def _butterflies(re, im, twr, twi):  # pragma: no cover - compiled
    # kf_bfly4 (forward) on every group of every stage, in the order of knf's machine code.
    for m, stride in STAGES:
        for base in range(0, HALF, 4 * m):
            for k in range(m):
                i0, i1, i2, i3 = base + k, base + k + m, base + k + 2 * m, base + k + 3 * m
                t1, t2, t3 = k * stride, 2 * k * stride, 3 * k * stride
                w1r, w1i, w2r, w2i, w3r, w3i = twr[t1], twi[t1], twr[t2], twi[t2], twr[t3], twi[t3]
                for j in range(LANES):
                    s0r = re[i1, j] * w1r - im[i1, j] * w1i
                    s0i = re[i1, j] * w1i + im[i1, j] * w1r
                    a2, b2 = re[i2, j] * w2r, im[i2, j] * w2i
                    s1i = re[i2, j] * w2i + im[i2, j] * w2r
                    c3, d3 = re[i3, j] * w3r, im[i3, j] * w3i
                    s2i = re[i3, j] * w3i + im[i3, j] * w3r
                    f0r, s5r = (re[i0, j] + a2) - b2, (re[i0, j] + b2) - a2
                    f0i, s5i = im[i0, j] + s1i, im[i0, j] - s1i
                    s3r, s4r, s3i = (s0r - d3) + c3, (s0r - c3) + d3, s0i + s2i
                    re[i2, j], im[i2, j] = f0r - s3r, f0i - s3i
                    re[i0, j], im[i0, j] = f0r + s3r, f0i + s3i
                    re[i1, j], im[i1, j] = (s5r + s0i) - s2i, s5i - s4r
                    re[i3, j], im[i3, j] = (s5r + s2i) - s0i, s5i + s4r


def _power_spectrum(buf, order, twr, twi, sr, si, re, im, power):  # pragma: no cover - compiled
    for j in range(HALF):  # the 512 reals as 256 complex points, in kf_work's order
        for lane in range(LANES):
            re[j, lane] = buf[2 * order[j], lane]
            im[j, lane] = buf[2 * order[j] + 1, lane]
    _butterflies_jit(re, im, twr, twi)
    for lane in range(LANES):
        dc, nyquist = re[0, lane] + im[0, lane], re[0, lane] - im[0, lane]
        power[0, lane], power[HALF, lane] = dc * dc, nyquist * nyquist
    half = np.float32(0.5)
    for k in range(1, HALF // 2 + 1):  # kiss_fftr's split, as in knf's machine code
        n, c, s = HALF - k, sr[k - 1], si[k - 1]
        for j in range(LANES):
            f1r, f2r = re[k, j] + re[n, j], re[k, j] - re[n, j]
            f1i, f2i = im[k, j] - im[n, j], im[k, j] + im[n, j]
            ar, bi, twi_k = f2r * c, f2i * s, f2r * s + f2i * c
            kr, ki = ((f1r + ar) - bi) * half, (f1i + twi_k) * half
            nr, ni = ((f1r + bi) - ar) * half, (twi_k - f1i) * half
            power[k, j] = kr * kr + ki * ki
            power[n, j] = nr * nr + ni * ni


def _frames(samples, window, order, twr, twi, sr, si, weights, first, lengths, logf, out):  # pragma: no cover
    # LANES frames at a time, each lane one frame's own arithmetic (so loops over lanes
    # vectorise without changing any frame's order of operations).
    buf = np.zeros((FFT_SIZE, LANES), np.float32)
    re, im = np.empty((HALF, LANES), np.float32), np.empty((HALF, LANES), np.float32)
    power = np.empty((HALF + 1, LANES), np.float32)
    energy = np.empty(LANES, np.float32)
    floor = np.float32(FLT_EPSILON)
    count = out.shape[0]
    for f0 in range(0, count, LANES):
        _prepare_jit(samples, f0, count, window, buf)
        _power_spectrum_jit(buf, order, twr, twi, sr, si, re, im, power)
        for b in range(out.shape[1]):
            energy[:] = 0
            for k in range(lengths[b]):
                weight, row = weights[b, k], first[b] + k
                for lane in range(LANES):
                    energy[lane] += weight * power[row, lane]
            for lane in range(min(LANES, count - f0)):
                out[f0 + lane, b] = logf(max(energy[lane], floor))


# The compiled kernels, set by _kernel(): they call each other through these module globals,
# not as closures (numba keys a closure's cache entry by its cells, which differ in every
# process: each worker would compile again).
_prepare_jit: Any = None
_butterflies_jit: Any = None
_power_spectrum_jit: Any = None


@functools.cache
def _kernel() -> Callable[..., None]:
    global _prepare_jit, _butterflies_jit, _power_spectrum_jit
    import numba

    jit = numba.njit(cache=True, nogil=True, boundscheck=False)  # no fastmath: see above
    _prepare_jit, _butterflies_jit = jit(_prepare), jit(_butterflies)
    _power_spectrum_jit = jit(_power_spectrum)
    return jit(_frames)


class FastFbank:
    """The kernel with knf's window and mel weights for `opts` (a knf.FbankOptions)."""

    def __init__(self, opts: Any) -> None:
        import kaldi_native_fbank as knf

        self._kernel = _kernel()
        window = np.asarray(knf.FeatureWindowFunction(opts.frame_opts).window, np.float32)
        mel = knf.MelBanks(opts.mel_opts, opts.frame_opts, 1.0).get_matrix()
        self._tables = (window, _input_order(), *_twiddles(), *_mel_bins(np.asarray(mel, np.float32)))
        self._logf = _wap_type()()
        self.num_bins = mel.shape[0]

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """(frames, bins) float32 of float32 samples at int16 scale, as knf's OnlineFbank."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        count = 0 if samples.size < FRAME else 1 + (samples.size - FRAME) // HOP
        out = np.empty((count, self.num_bins), np.float32)
        if count:
            self._kernel(samples, *self._tables, self._logf, out)
        return out


def probe_signal() -> np.ndarray:
    """A few seconds at int16 scale that reach every path of the arithmetic: speech-like
    (amplitude-modulated, low-passed) noise, silence (the log floor), a loud sweep, clipped
    noise at both int16 extremes and very quiet noise; with an odd tail of samples."""
    rng = np.random.default_rng(20261207)
    t = np.arange(16000) / 16000
    noise = rng.standard_normal(16000)
    speech = np.convolve(noise, np.ones(8) / 8, mode="same") * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * 3000
    sweep = 30000 * np.sin(2 * np.pi * (100 + 3900 * t[:8000]) * t[:8000])
    clipped = np.clip(rng.standard_normal(8000) * 40000, -32768, 32767)
    quiet = rng.standard_normal(8000) * 0.01
    parts = (speech, np.zeros(8000), sweep, clipped, quiet, rng.standard_normal(237) * 100)
    return np.concatenate(parts).astype(np.float32)


_checked: dict[str, FastFbank | None] = {}
_lock = threading.Lock()


def checked(opts: Any, reference: Callable[[np.ndarray], np.ndarray]) -> FastFbank | None:
    """The kernel for `opts` if it gives `reference`'s (knf's) bits on the probe signal, else
    None after one warning; decided once per process and options."""
    key = str(opts)
    with _lock:
        if key not in _checked:
            _checked[key] = _check(opts, reference)
        return _checked[key]


def _check(opts: Any, reference: Callable[[np.ndarray], np.ndarray]) -> FastFbank | None:
    try:
        fast = FastFbank(opts)
        probe = probe_signal()
        ours, theirs = fast(probe), reference(probe)
    except Exception as exc:  # numba missing or failing: knf still computes the same features
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("fbank through kaldi-native-fbank, slower: the fast kernel failed (%s)", reason)
        return None
    if ours.shape != theirs.shape or not np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)):
        differ = int((ours != theirs).sum()) if ours.shape == theirs.shape else f"shape {ours.shape} vs {theirs.shape}"
        log.warning(
            "fbank through kaldi-native-fbank, slower: the fast kernel's features differ from "
            "kaldi-native-fbank %s's on the probe signal (%s values)",
            _knf_version(),
            differ,
        )
        return None
    return fast


def _knf_version() -> str:
    import kaldi_native_fbank as knf

    return getattr(knf, "__version__", "?")
